"""The gradient-manipulation baselines that torchjd implements, under LibMTL's names and flags.

Each class names its ``torchjd.aggregation`` aggregator and maps its options; the plumbing is
:class:`~LibMTL_rgb.weighting.torchjd_adapter.TorchJDAggregation`. Papers, flags and
differences from LibMTL: ``docs/methods.md``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torchjd.aggregation import IMTLG, Aggregator, AlignedMTL, NashMTL
from torchjd.aggregation import CAGrad as CAGradAggregator
from torchjd.aggregation import DualProj as DualProjAggregator
from torchjd.aggregation import FairGrad as FairGradAggregator
from torchjd.aggregation import GradDrop as GradDropAggregator
from torchjd.aggregation import GradVac as GradVacAggregator
from torchjd.aggregation import MGDA as MGDAAggregator
from torchjd.aggregation import PCGrad as PCGradAggregator
from torchjd.aggregation import UPGrad as UPGradAggregator
from torchjd.linalg import QuadprogProjector

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.torchjd_adapter import TorchJDAggregation

#: MGDA's gradient normalisations (Sener & Koltun's code; LibMTL's ``--mgda_gn``).
MGDA_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@WEIGHTINGS.register
class MGDA(TorchJDAggregation):
    """MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task
    gradients (torchjd's Frank-Wolfe solver). With ``rep_grad=True`` this is MGDA-UB. The
    rows are first divided by ``--mgda_gn``'s normalisers (‖g_i‖, L_i, or L_i‖g_i‖); the
    returned weights apply to the unnormalised gradients."""

    hyperparameters = (
        Hyperparameter("mgda_gn", "none", "MGDA: gradient normalisation before the min-norm solver", choices=MGDA_NORMALIZATIONS),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        if options["mgda_gn"] not in MGDA_NORMALIZATIONS:
            raise ValueError(f"mgda_gn must be one of {MGDA_NORMALIZATIONS}, got {options['mgda_gn']!r}")
        return MGDAAggregator()

    def row_scales(self, losses: Tensor, grads: Tensor, options: dict[str, Any]) -> Optional[Tensor]:
        kind = options["mgda_gn"]
        if kind == "none":
            return None
        norms = grads.norm(dim=1)
        losses = losses.to(device=grads.device, dtype=grads.dtype)
        scales = {"l2": norms, "loss": losses, "loss+": losses * norms}[kind]
        if bool((scales <= 0).any()):
            raise ValueError(f"MGDA with mgda_gn={kind!r} needs positive normalisers, got {scales.tolist()}")
        return scales


@WEIGHTINGS.register
class PCGrad(TorchJDAggregation):
    """PCGrad (Yu et al., NeurIPS 2020): project each gradient off the others it conflicts
    with (random order), then sum."""

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return PCGradAggregator()


@WEIGHTINGS.register
class GradDrop(TorchJDAggregation):
    """GradDrop (Chen et al., NeurIPS 2020): gradient sign dropout on the shared-parameter
    gradients (torchjd), with leak ``--leak`` for every task. torchjd returns a direction, not
    weights, so ``rep_grad=True`` is refused (LibMTL applies GradDrop to representation
    gradients only)."""

    supports_rep_grad = False
    hyperparameters = (Hyperparameter("leak", 0.0, "GradDrop: leak ℓ of every task's gradient through the sign mask", minimum=0.0, maximum=1.0),)

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        leak = float(options["leak"])
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"GradDrop's --leak must be in [0, 1], got {leak}")
        return GradDropAggregator(leak=torch.full((self.task_num,), leak, device=self.device))


@WEIGHTINGS.register
class GradVac(TorchJDAggregation):
    """Gradient Vaccine (Wang et al., ICLR 2021), on the whole shared model: EMA targets
    φ̂_ij of the pairwise cosine similarities (kept in the buffer ``gradvac_targets``)."""

    hyperparameters = (Hyperparameter("GradVac_beta", 0.5, "GradVac: EMA rate β of the target cosine similarities", minimum=0.0, maximum=1.0),)

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("gradvac_targets", torch.zeros(self.task_num, self.task_num, dtype=torch.float64, device=self.device))

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return GradVacAggregator(beta=options["GradVac_beta"])

    def load_aggregator_state(self, aggregator: Aggregator, grads: Tensor) -> None:
        weighting = aggregator.gramian_weighting
        weighting._phi_t = self.gradvac_targets.to(device="cpu", dtype=grads.dtype).clone()
        weighting._state_key = (self.task_num, grads.dtype)

    def store_aggregator_state(self, aggregator: Aggregator) -> None:
        self.gradvac_targets.copy_(aggregator.gramian_weighting._phi_t)


@WEIGHTINGS.register
class CAGrad(TorchJDAggregation):
    """CAGrad (Liu et al., NeurIPS 2021): the direction maximising the worst task improvement
    within a ball of radius ``c‖g_0‖`` around the mean gradient ``g_0``; then divided by
    ``1 + c²`` (``--rescale 1``), ``1 + c`` (``2``) or left (``0``), as in CAGrad's code."""

    hyperparameters = (
        Hyperparameter("calpha", 0.5, "CAGrad: radius c of the ball around the mean gradient", minimum=0.0),
        Hyperparameter("rescale", 1, "CAGrad: divide the direction by 1 (0), 1+c² (1) or 1+c (2)", choices=(0, 1, 2)),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        if options["rescale"] not in (0, 1, 2):
            raise ValueError(f"CAGrad's --rescale must be 0, 1 or 2, got {options['rescale']!r}")
        return CAGradAggregator(c=options["calpha"])

    def adjust_weights(self, weights: Tensor, options: dict[str, Any]) -> Tensor:
        c = options["calpha"]
        return weights / {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[options["rescale"]]


@WEIGHTINGS.register
class IMTL(TorchJDAggregation):
    """IMTL-G (Liu et al., ICLR 2021), torchjd's generalisation to linearly dependent
    gradients: the weights (summing to 1) whose combination has equal projections on every
    unit task gradient. The loss-scale part IMTL-L is not included."""

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return IMTLG()


@WEIGHTINGS.register
class Nash_MTL(TorchJDAggregation):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution ``Gᵀ G α = 1/α``
    (cvxpy, ``--optim_niter`` iterations, every ``--update_weights_every`` steps), direction
    norm clipped to ``--max_norm``. The warm start and step counter live in the buffers
    ``nash_prev_alpha`` and ``nash_step``."""

    hyperparameters = (
        Hyperparameter("update_weights_every", 1, "Nash_MTL: recompute the weights every this many steps", minimum=1),
        Hyperparameter("optim_niter", 20, "Nash_MTL: iterations of the bargaining solver", minimum=1),
        Hyperparameter("max_norm", 1.0, "Nash_MTL: clip the norm of the update to this (0 disables)", minimum=0.0),
    )

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("nash_prev_alpha", torch.ones(self.task_num, dtype=torch.float64))
        self.register_buffer("nash_step", torch.zeros((), dtype=torch.long))

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return NashMTL(
            n_tasks=self.task_num, max_norm=options["max_norm"],
            update_weights_every=options["update_weights_every"], optim_niter=options["optim_niter"],
        )

    def load_aggregator_state(self, aggregator: Aggregator, grads: Tensor) -> None:
        weighting = aggregator.weighting
        weighting.prvs_alpha = self.nash_prev_alpha.cpu().numpy().copy()
        weighting.step = float(self.nash_step)
        if weighting.step > 0 and not hasattr(weighting, "prob"):
            weighting._init_optim_problem()

    def store_aggregator_state(self, aggregator: Aggregator) -> None:
        weighting = aggregator.weighting
        self.nash_prev_alpha.copy_(torch.from_numpy(np.asarray(weighting.prvs_alpha, dtype=np.float64)))
        self.nash_step.fill_(int(weighting.step))


@WEIGHTINGS.register
class FairGrad(TorchJDAggregation):
    """FairGrad (Ban & Ji, ICML 2024): α-fair allocation, ``Gᵀ G w = w^{−1/α}``."""

    hyperparameters = (Hyperparameter("FairGrad_alpha", 1.0, "FairGrad: fairness exponent α (1 = proportional fairness)", minimum=0.0, exclusive_minimum=True),)

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return FairGradAggregator(alpha=options["FairGrad_alpha"])


@WEIGHTINGS.register
class Aligned_MTL(TorchJDAggregation):
    """Aligned-MTL (Senushkin et al., CVPR 2023): align the principal components of the
    gradient system (condition number 1), scaled by the smallest singular value (or
    ``--Aligned_MTL_scale_mode``)."""

    hyperparameters = (
        Hyperparameter("Aligned_MTL_scale_mode", "min", "Aligned_MTL: eigenvalue that sets the scale", choices=("min", "median", "rmse")),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return AlignedMTL(scale_mode=options["Aligned_MTL_scale_mode"])


def _quadprog_projector(options: dict[str, Any], prefix: str) -> QuadprogProjector:
    return QuadprogProjector(norm_eps=options[f"{prefix}_norm_eps"], reg_eps=options[f"{prefix}_reg_eps"])


def _projector_hyperparameters(prefix: str) -> tuple[Hyperparameter, ...]:
    return (
        Hyperparameter(f"{prefix}_norm_eps", 1e-4, f"{prefix}: ε added when normalising the Gramian", minimum=0.0),
        Hyperparameter(f"{prefix}_reg_eps", 1e-4, f"{prefix}: ε added to the Gramian's diagonal (positive definiteness)", minimum=0.0),
    )


@WEIGHTINGS.register
class UPGrad(TorchJDAggregation):
    """UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024):
    the mean of each gradient's projection onto the dual cone of all gradients."""

    hyperparameters = _projector_hyperparameters("UPGrad")

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return UPGradAggregator(projector=_quadprog_projector(options, "UPGrad"))


@WEIGHTINGS.register
class DualProj(TorchJDAggregation):
    """DualProj (Quinton & Rey, 2024): the projection of the mean gradient onto the dual cone
    of all gradients."""

    hyperparameters = _projector_hyperparameters("DualProj")

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return DualProjAggregator(projector=_quadprog_projector(options, "DualProj"))
