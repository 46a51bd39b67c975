"""The gradient-manipulation baselines that torchjd implements, under LibMTL's names and flags.

Each class names its ``torchjd.aggregation`` aggregator and maps its options; the plumbing is
:class:`~LibMTL_rgb.weighting.torchjd_adapter.TorchJDAggregation`. Papers, flags and
differences from LibMTL: ``docs/methods.md``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from LibMTL_rgb.lazy_import import lazy_callable

if TYPE_CHECKING:
    from torchjd.aggregation import Aggregator

# torchjd (and cvxpy/quadprog through it) loads on the first aggregator built, not on import.
IMTLG = lazy_callable("torchjd.aggregation", "IMTLG")
AlignedMTL = lazy_callable("torchjd.aggregation", "AlignedMTL")
DualProjAggregator = lazy_callable("torchjd.aggregation", "DualProj")
FairGradAggregator = lazy_callable("torchjd.aggregation", "FairGrad")
GradVacAggregator = lazy_callable("torchjd.aggregation", "GradVac")
GramianWeightedAggregator = lazy_callable("torchjd.aggregation", "GramianWeightedAggregator")
PCGradAggregator = lazy_callable("torchjd.aggregation", "PCGrad")
UPGradAggregator = lazy_callable("torchjd.aggregation", "UPGrad")
QuadprogProjector = lazy_callable("torchjd.linalg", "QuadprogProjector")

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.cagrad_solver import cagrad_weights
from LibMTL_rgb.weighting.gradvac_groups import GRADVAC_GROUP_TYPES, GradVacGrouping
from LibMTL_rgb.weighting.imtl_loss import IMTL_MODES, IMTLLossScaling
from LibMTL_rgb.weighting.min_norm import min_norm_weights
from LibMTL_rgb.weighting.torchjd_adapter import TorchJDAggregation

#: MGDA's gradient normalisations (Sener & Koltun's code; LibMTL's ``--mgda_gn``).
MGDA_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@functools.lru_cache(maxsize=None)
def _min_norm_weighting_class() -> type:
    """``MinNormWeighting``: a torchjd ``Weighting`` of the Gramian, the exact min-norm simplex
    weights (defined on first use, so importing this module does not import torchjd)."""
    from torchjd.aggregation import Weighting

    class MinNormWeighting(Weighting):
        """torchjd ``Weighting`` of the Gramian: the exact min-norm simplex weights."""

        def forward(self, gramian: Tensor, /) -> Tensor:
            return min_norm_weights(gramian)

    return MinNormWeighting


@functools.lru_cache(maxsize=None)
def _cagrad_weighting_class() -> type:
    """``CAGradGramWeighting``: a torchjd ``Weighting`` of the Gramian giving CAGrad's weights
    (:func:`~LibMTL_rgb.weighting.cagrad_solver.cagrad_weights`; scale-free, no ε)."""
    from torchjd.aggregation import Weighting

    class CAGradGramWeighting(Weighting):
        """torchjd ``Weighting`` of the Gramian: CAGrad's direction as task weights."""

        def __init__(self, c: float) -> None:
            super().__init__()
            self.c = c

        def forward(self, gramian: Tensor, /) -> Tensor:
            return cagrad_weights(gramian, self.c)

    return CAGradGramWeighting


def __getattr__(name: str) -> Any:
    if name == "MinNormWeighting":
        return _min_norm_weighting_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@WEIGHTINGS.register
class MGDA(TorchJDAggregation):
    """MGDA (Sener & Koltun, NeurIPS 2018, Eq. 3): the min-norm point of the convex hull of the
    task gradients, solved exactly (:func:`~LibMTL_rgb.weighting.min_norm.min_norm_weights`,
    duality gap ≤ 1e-12·max‖g_i‖²). With ``rep_grad=True`` this is MGDA-UB. With
    ``--mgda_gn`` the rows are divided by the normalisers (‖g_i‖, L_i, or L_i‖g_i‖) before
    solving and the weights are applied to the raw gradients, as in the authors' code (their
    ``train_multi_task.py`` scales the raw losses; LibMTL's ``rep_grad=False`` path applies
    them to the normalised gradients instead)."""

    hyperparameters = (
        Hyperparameter("mgda_gn", "none", "MGDA: gradient normalisation before the min-norm solver", choices=MGDA_NORMALIZATIONS),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        if options["mgda_gn"] not in MGDA_NORMALIZATIONS:
            raise ValueError(f"mgda_gn must be one of {MGDA_NORMALIZATIONS}, got {options['mgda_gn']!r}")
        return GramianWeightedAggregator(_min_norm_weighting_class()())

    def row_scales(self, losses: Tensor, norms: Tensor, options: dict[str, Any]) -> Optional[Tensor]:
        kind = options["mgda_gn"]
        if kind == "none":
            return None
        losses = losses.to(device=norms.device, dtype=norms.dtype)
        scales = {"l2": norms, "loss": losses, "loss+": losses * norms}[kind]
        if bool((scales <= 0).any()):
            raise ValueError(f"MGDA with mgda_gn={kind!r} needs positive normalisers, got {scales.tolist()}")
        return scales


@WEIGHTINGS.register
class PCGrad(TorchJDAggregation):
    """PCGrad (Yu et al., NeurIPS 2020): project each gradient off the others it conflicts
    with (random order), then sum."""

    heads_take_returned_weights = False  # heads: their own task's gradient (docs/methods.md, the head rule)

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return PCGradAggregator()


@WEIGHTINGS.register
class GradVac(GradVacGrouping, TorchJDAggregation):
    """Gradient Vaccine (Wang et al., ICLR 2021): EMA targets φ̂_ij of the pairwise cosine
    similarities, on the whole shared model (kept in the buffer ``gradvac_targets``) or per
    layer / per parameter tensor (``--GradVac_group_type``, ``gradvac_groups.py``)."""

    heads_take_returned_weights = False  # heads: their own task's gradient (docs/methods.md, the head rule)

    hyperparameters = (
        Hyperparameter("GradVac_beta", 0.5, "GradVac: EMA rate β of the target cosine similarities", minimum=0.0, maximum=1.0),
        Hyperparameter("GradVac_group_type", 0, "GradVac: parameter groups (0: whole model; 1: per layer; 2: per parameter tensor)",
                       choices=GRADVAC_GROUP_TYPES),
    )

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
    within a ball of radius ``c‖g_0‖`` around the mean gradient ``g_0``
    (:func:`~LibMTL_rgb.weighting.cagrad_solver.cagrad_weights`, positively homogeneous: no
    update is zeroed for small losses); then divided by ``1 + c²`` (``--rescale 1``),
    ``1 + c`` (``2``) or left (``0``), as in CAGrad's code."""

    heads_take_returned_weights = False  # heads: their own task's gradient (docs/methods.md, the head rule)

    hyperparameters = (
        Hyperparameter("calpha", 0.5, "CAGrad: radius c of the ball around the mean gradient", minimum=0.0),
        Hyperparameter("rescale", 1, "CAGrad: divide the direction by 1 (0), 1+c² (1) or 1+c (2)", choices=(0, 1, 2)),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        if options["rescale"] not in (0, 1, 2):
            raise ValueError(f"CAGrad's --rescale must be 0, 1 or 2, got {options['rescale']!r}")
        return GramianWeightedAggregator(_cagrad_weighting_class()(options["calpha"]))

    def adjust_weights(self, weights: Tensor, options: dict[str, Any]) -> Tensor:
        c = options["calpha"]
        return weights / {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[options["rescale"]]


@WEIGHTINGS.register
class IMTL(IMTLLossScaling, TorchJDAggregation):
    """IMTL (Liu et al., ICLR 2021). IMTL-G, torchjd's generalisation to linearly dependent
    gradients: the weights (summing to 1) whose combination has equal projections on every
    unit task gradient. IMTL-L (``imtl_loss.py``): the losses become ``e^s L − s`` with
    learnable ``s``. ``--IMTL_mode``: hybrid (both, the paper's IMTL and LibMTL's), gradient
    (IMTL-G only), loss (IMTL-L only). The weights returned apply to the scaled losses'
    gradients."""

    hyperparameters = (
        Hyperparameter("IMTL_mode", "hybrid", "IMTL: hybrid (IMTL-L + IMTL-G, the paper's and LibMTL's IMTL), gradient or loss",
                       choices=IMTL_MODES),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return IMTLG()


@WEIGHTINGS.register
class FairGrad(TorchJDAggregation):
    """FairGrad (Ban & Ji, ICML 2024): α-fair allocation, ``Gᵀ G w = w^{−1/α}``."""

    hyperparameters = (Hyperparameter("FairGrad_alpha", 1.0, "FairGrad: fairness exponent α (1 = proportional fairness)", minimum=0.0, exclusive_minimum=True),)

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return FairGradAggregator(alpha=options["FairGrad_alpha"])


@WEIGHTINGS.register
class Aligned_MTL(TorchJDAggregation):
    """Aligned-MTL (Senushkin et al., CVPR 2023, Algorithm 1): align the principal components
    of the gradient system (condition number 1), scaled by the smallest singular value (or
    ``--Aligned_MTL_scale_mode``). The aligned gradients are summed (preference vector of
    ones), as in the authors' code and LibMTL: ``α = B·1`` with ``B = σ_min V Σ⁻¹ Vᵀ``
    (torchjd's default preference vector 1/T would average them, a T times smaller step)."""

    heads_take_returned_weights = False  # heads: their own task's gradient (docs/methods.md, the head rule)

    hyperparameters = (
        Hyperparameter("Aligned_MTL_scale_mode", "min", "Aligned_MTL: eigenvalue that sets the scale", choices=("min", "median", "rmse")),
    )

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return AlignedMTL(scale_mode=options["Aligned_MTL_scale_mode"])

    def adjust_weights(self, weights: Tensor, options: dict[str, Any]) -> Tensor:
        """torchjd's weights are ``B·1/T`` (linear in the preference vector); ``B·1`` is T times them."""
        return weights * self.task_num


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

    heads_take_returned_weights = False  # heads: their own task's gradient (docs/methods.md, the head rule)

    hyperparameters = _projector_hyperparameters("UPGrad")

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return UPGradAggregator(projector=_quadprog_projector(options, "UPGrad"))


@WEIGHTINGS.register
class DualProj(TorchJDAggregation):
    """DualProj (Quinton & Rey, 2024): the projection of the mean gradient onto the dual cone
    of all gradients."""

    heads_take_returned_weights = False  # heads: their own task's gradient (docs/methods.md, the head rule)

    hyperparameters = _projector_hyperparameters("DualProj")

    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        return DualProjAggregator(projector=_quadprog_projector(options, "DualProj"))
