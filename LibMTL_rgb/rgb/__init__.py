"""Pure tensor math of Rotation-Based Gradient Balancing (RGB): no nn.Module, no trainer."""

from .adaptive import adaptive_num_steps, relative_loss_change_std
from .diagnostics import (
    condition_number,
    conflict,
    gram_of_unit_vectors,
    mer_balance,
    miss_correction_errors,
    proximity,
)
from .objective import (
    DEFAULT_INNER_LR,
    RotationGeometry,
    RotationGradMatrix,
    projected_gradient_norm,
    rotation_geometry,
    rotation_grad_matrix,
    rotation_inner_products,
    rotation_objective,
    rotation_objective_grad,
    solve_rotation_angles,
    solve_rotation_angles_exact,
    solve_rotation_angles_exact_with_info,
)
from .rotation import RGBStepResult, ema_dtype, normalized_gram, rgb_step, rgb_step_from_gramian

__all__ = [
    "DEFAULT_INNER_LR",
    "RGBStepResult",
    "RotationGeometry",
    "RotationGradMatrix",
    "adaptive_num_steps",
    "condition_number",
    "conflict",
    "ema_dtype",
    "gram_of_unit_vectors",
    "mer_balance",
    "miss_correction_errors",
    "normalized_gram",
    "projected_gradient_norm",
    "proximity",
    "relative_loss_change_std",
    "rgb_step",
    "rgb_step_from_gramian",
    "rotation_geometry",
    "rotation_grad_matrix",
    "rotation_inner_products",
    "rotation_objective",
    "rotation_objective_grad",
    "solve_rotation_angles",
    "solve_rotation_angles_exact",
    "solve_rotation_angles_exact_with_info",
]
