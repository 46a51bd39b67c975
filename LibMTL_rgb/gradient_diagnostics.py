"""MER diagnostics (paper App. A.8, Eqs. 3–6) of ANY weighting, step by step, and RGB's
miss-correction errors GMAE / SD-MAE (Definition 2.8) against the exact solution of Eq. 1.

The math is :mod:`LibMTL_rgb.rgb.diagnostics` (functions of T×T Gram matrices); this module
decides which gradients enter it and collects the numbers during training.

What ``g_adj`` (the adjusted per-task gradients of Eqs. 3–5) means for each kind of method:

* ``source="rotated"`` — RGB: the final, normalised rotated gradients ``r_i`` of Algorithm 1
  (the ``rgb_step`` result the weighting keeps), so conflict/proximity/condition number are the
  paper's.
* ``source="adjusted"`` — a weighting that sets ``self.adjusted_grads`` (a ``[T, D]`` tensor of
  its per-task adjusted gradients, e.g. PCGrad's projected ``g_i^PC``) during ``backward`` when
  ``self.record_adjusted_grads`` is True (this module sets that flag on logged steps only).
* ``source="raw"`` — every other weighting. Loss weightings (EW, UW, DWA...) and aggregators
  that return only ``Σ_i w_i g_i`` (MGDA, CAGrad, Nash-MTL, torchjd's PCGrad...) do not define
  per-task adjusted gradients: we take ``g_i^adj = w_i g_i`` whose direction is ``ḡ_i`` for
  ``w_i > 0``. Conflict and condition number are then those of the raw normalised gradients
  and proximity is 0. Compare them across methods with that in mind.

Always reported as well: ``raw_conflict`` and ``raw_condition_number`` (Eqs. 3 and 5 on the
normalised gradients ``ḡ_i`` before any manipulation) and the cosines between the final
shared update ``v`` and each ``g_i`` (``update_cos_min`` / ``update_cos_mean``; ``v`` is the
shared parameters' ``.grad`` after ``backward``).

Condition number (Eq. 5): the paper says "eigenvalues of the PCA decomposition of the pairwise
gradient conflict matrix"; we take the eigenvalues of the Gram matrix ``R_ij = r̂_i·r̂_j`` of the
unit adjusted gradients (``LibMTL_rgb.rgb.diagnostics.condition_number`` documents why: it is
the uncentred PCA spectrum of {r̂_i} and fixes the pairwise conflicts ``(1 − R_ij)/2``);
rank-deficient sets give ``inf``.

Every number above except the ``adjusted`` source's is a function of T-sized inner products —
``K = G Gᵀ``, ``G v``, ``‖v‖²`` and, for RGB's GMAE, ``G d_t``, ``‖d_t‖²`` — held in a
:class:`~LibMTL_rgb.weighting.task_geometry.TaskGeometry`, and that is all the diagnostics read:

* matrix path: the per-task gradients ``G`` come from the weighting's own ``_get_grads`` call
  when it makes one (no extra cost: on logged steps this module sets ``model.record_task_grads``
  and ``AbsWeighting._get_grads`` keeps ``model.task_grads``; no model method is replaced); for
  weightings that never form ``G`` (EW does one backward of the summed loss) they are computed on
  logged steps with one extra autograd pass per task. The geometry is computed from ``G``, ``v``
  (the shared ``.grad``) and RGB's ``d_t``. With ``rep_grad=True`` the diagnostics use the
  representation gradients the weighting forms (and no update cosines).
* Gramian path (``model.gradient_path() == "gramian"``): ``G`` is never formed, here either. With
  ``record_task_grads`` set the weighting keeps ``model.task_geometry``: ``K`` from its
  ``_get_gramian_and_product`` call, ``G v`` and ``‖v‖²`` from its update's coefficients
  (``v = Gᵀ w`` for ``_backward_weighted``; RGB: ``v = Gᵀ a' + b d_t`` with ``G d_t`` from the
  step's ``Ḡ d_t``). ``v`` is the update before any later rescaling of ``.grad`` (Nash-MTL's
  clipping): a positive factor that the cosines do not see. A weighting that writes ``.grad``
  otherwise leaves ``K`` only: its rows have no ``update_cos_*``.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.rgb import (
    condition_number,
    conflict,
    gram_of_unit_vectors,
    mer_balance,
    miss_correction_errors,
    proximity,
    rotation_geometry,
    solve_rotation_angles_exact,
)
from LibMTL_rgb.rgb.diagnostics import unit_gram
from LibMTL_rgb.weighting.task_geometry import TaskGeometry

__all__ = [
    "mer_from_grams",
    "mer_statistics",
    "raw_mer_statistics",
    "update_alignment",
    "update_alignment_from_geometry",
    "rgb_miss_correction",
    "rgb_miss_correction_from_geometry",
    "GradientDiagnostics",
]


def mer_from_grams(gram: Tensor, adjusted_gram: Tensor, cross: Tensor) -> dict[str, float]:
    """Eqs. 3–6 from ``gram`` (``P``, unit raw gradients), ``adjusted_gram`` (``R``, unit
    adjusted gradients) and ``cross`` (``r̂_i·ḡ_i``), plus conflict and condition number of ``P``."""
    c = float(conflict(adjusted_gram))
    p = float(proximity(adjusted_gram, cross, gram))
    k = float(condition_number(adjusted_gram))
    return {
        "conflict": c,
        "proximity": p,
        "condition_number": k,
        "mer_balance": float(mer_balance(c, p, k)),
        "raw_conflict": float(conflict(gram)),
        "raw_condition_number": float(condition_number(gram)),
    }


def mer_statistics(raw: Tensor, adjusted: Optional[Tensor] = None, eps: float = 1e-8) -> dict[str, float]:
    """MER diagnostics of per-task gradients ``raw`` ([T, D]) and their adjusted versions
    ``adjusted`` ([T, D]; ``None``: the raw ones, i.e. ``source="raw"``). Rows are normalised
    to unit length (``v / (‖v‖ + eps)``) first; the work is one ``[2T, D]`` Gram product."""
    if raw.dim() != 2:
        raise ValueError(f"raw gradients must be [T, D], got shape {tuple(raw.shape)}")
    raw64 = raw.detach().to(torch.float64)
    if adjusted is None:
        return raw_mer_statistics(TaskGeometry.from_grads(raw64), eps)
    if adjusted.shape != raw.shape:
        raise ValueError(f"adjusted gradients {tuple(adjusted.shape)} must match the raw ones {tuple(raw.shape)}")
    T = raw.shape[0]
    J = gram_of_unit_vectors(torch.cat([raw64, adjusted.detach().to(raw64)]), eps)
    return mer_from_grams(J[:T, :T], J[T:, T:], torch.diagonal(J[T:, :T]))


def raw_mer_statistics(geometry: TaskGeometry, eps: float = 1e-8) -> dict[str, float]:
    """:func:`mer_statistics` of the raw gradients (``source="raw"``) from their Gramian alone:
    ``P`` = the Gram of ``g_i / (‖g_i‖ + eps)``."""
    P = unit_gram(geometry.gram.to(torch.float64), eps)
    return mer_from_grams(P, P, torch.diagonal(P))


def update_alignment(raw: Tensor, direction: Tensor, eps: float = 1e-12) -> dict[str, float]:
    """Cosines between the shared update ``direction`` ([D]) and each task gradient ([T, D]):
    their minimum and mean (a negative minimum: the update increases that task's loss)."""
    return update_alignment_from_geometry(TaskGeometry.from_grads(raw, update=direction), eps)


def update_alignment_from_geometry(geometry: TaskGeometry, eps: float = 1e-12) -> dict[str, float]:
    """:func:`update_alignment` from ``K``, ``G v`` and ``‖v‖²``: ``cos_i = (G v)_i / (‖g_i‖ ‖v‖ + eps)``."""
    if geometry.update_product is None or geometry.update_sq_norm is None:
        raise ValueError("the geometry has no update (G v and ‖v‖²)")
    v_norm = torch.sqrt(torch.clamp(geometry.update_sq_norm.to(torch.float64), min=0.0))
    cos = geometry.update_product.to(torch.float64) / (geometry.norms.to(torch.float64) * v_norm + eps)
    return {"update_cos_min": float(cos.min()), "update_cos_mean": float(cos.mean())}


def rgb_miss_correction(
    angles: Tensor, grads: Tensor, ema: Tensor, lam: float = 0.0, eps: float = 1e-8
) -> dict[str, float]:
    """GMAE and SD-MAE (Def. 2.8) of RGB's K-step ``angles`` against the exact minimiser α* of
    Eq. 1 on the same geometry: ``P`` and ``q = Ḡ d_t`` from ``grads`` ([T, D]) and the EMA
    direction ``ema`` (``d_t``, [D]) of that step, in float64
    (:func:`~LibMTL_rgb.rgb.solve_rotation_angles_exact`: the KKT point reached by descent
    from 0; with λ = 0 the minimiser may not be unique, see docs/benchmark.md)."""
    return rgb_miss_correction_from_geometry(angles, TaskGeometry.from_grads(grads, ema=ema), lam, eps)


def rgb_miss_correction_from_geometry(
    angles: Tensor, geometry: TaskGeometry, lam: float = 0.0, eps: float = 1e-8
) -> dict[str, float]:
    """:func:`rgb_miss_correction` from ``K``, ``G d_t`` and ``‖d_t‖²`` (T×T and T-sized):
    ``P = unit_gram(K)``, ``q_i = (G d_t)_i / (‖g_i‖ + eps)``."""
    if geometry.ema_product is None or geometry.ema_sq_norm is None:
        raise ValueError("the geometry has no EMA direction (G d_t and ‖d_t‖²)")
    K = geometry.gram.to(torch.float64)
    P = unit_gram(K, eps)
    q = geometry.ema_product.to(K) / (geometry.norms.to(K) + eps)
    alpha_star = solve_rotation_angles_exact(rotation_geometry(P, q, geometry.ema_sq_norm.to(K), eps), lam)
    gmae, sd = miss_correction_errors(angles.detach().to(alpha_star), alpha_star)
    return {"gmae": float(gmae), "sd_mae": float(sd), "exact_angle_mean": float(alpha_star.mean())}


RGB_STEP_KEYS = ("rotated", "steps", "angles", "gram", "rotated_gram", "rotated_cross")


def _rgb_last_step(model: torch.nn.Module) -> Optional[dict[str, Any]]:
    """RGB's ``rgb_last_step`` (T-sized tensors of its last step), or None for other weightings."""
    last = getattr(model, "rgb_last_step", None)
    return last if isinstance(last, dict) and all(key in last for key in RGB_STEP_KEYS) else None


class GradientDiagnostics:
    """Collects MER diagnostics of ``model`` (a LibMTL ``MTLmodel``) every ``every`` steps.

    Call :meth:`before_backward` and :meth:`after_backward` around ``model.backward(losses,
    **weight_args)``; :meth:`end_epoch` returns the epoch's means. ``weight_args`` supplies
    RGB's λ and ε (and its solver: GMAE / SD-MAE are logged when it is ``pgd``).
    """

    def __init__(self, model: torch.nn.Module, weight_args: Optional[Mapping[str, Any]] = None, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"diagnostics_every must be >= 1, got {every}")
        self.model = model
        self.weight_args = dict(weight_args or {})
        self.every = every
        self.step = 0
        self.rows: list[dict[str, Any]] = []  # this epoch's per-step rows
        self._logging = False
        self._captured: Optional[Tensor] = None
        self._precomputed: Optional[Tensor] = None
        #: whether the weighting forms ``G`` itself (None: not yet known; learnt on the first logged step)
        self._weighting_forms_grads: Optional[bool] = None

    def before_backward(self, losses: Tensor) -> None:
        """Start a step; on logged steps, ask the weighting to keep ``G`` (Gramian path: its
        :class:`TaskGeometry`) and compute ``G`` here unless the weighting is known to form it
        (never on the Gramian path)."""
        self.step += 1
        self._logging = self.step % self.every == 0
        self._captured = self._precomputed = None
        if not self._logging:
            return
        self.model.record_adjusted_grads = True
        self.model.record_task_grads = True
        self.model.task_grads = None
        self.model.task_geometry = None
        if self._on_path("gramian"):
            return  # the weighting keeps K and its update's products: no [T, D] matrix here either
        if self._on_path("chunked"):
            # G does not fit: K from parameter chunks within the budget (kept as task_geometry);
            # the update's cosines need G v, which the chunked methods do not form
            self.model._get_gramian(losses, mode="autograd")
            return
        if not self._weighting_forms_grads and not getattr(self.model, "rep_grad", False):
            self.model._compute_grad_dim()
            self._precomputed = self.model._compute_grad(losses, mode="autograd").detach()

    def _on_path(self, path: str) -> bool:
        gradient_path = getattr(self.model, "gradient_path", None)
        return callable(gradient_path) and gradient_path() == path

    def after_backward(self) -> Optional[dict[str, Any]]:
        """Finish a step: the diagnostics row of a logged step (also kept in ``rows``)."""
        if not self._logging:
            return None
        self._logging = False
        self.model.record_adjusted_grads = False
        self.model.record_task_grads = False
        captured = getattr(self.model, "task_grads", None)
        kept = getattr(self.model, "task_geometry", None)
        self.model.task_grads = self.model.task_geometry = None
        if isinstance(captured, Tensor):
            self._captured = captured
        self._weighting_forms_grads = self._captured is not None or isinstance(kept, TaskGeometry)
        grads = self._captured if self._captured is not None else self._precomputed
        adjusted = getattr(self.model, "adjusted_grads", None)
        self.model.adjusted_grads = None
        rgb = _rgb_last_step(self.model)
        geometry = kept if isinstance(kept, TaskGeometry) else self._geometry_of(grads, rgb is not None)
        if geometry is None:
            return None
        row: dict[str, Any] = {"step": self.step}
        if rgb is not None:
            row["source"] = "rotated"
            row.update(mer_from_grams(rgb["gram"], rgb["rotated_gram"], rgb["rotated_cross"]))
            row.update(angle_mean=float(rgb["angles"].mean()), angle_max=float(rgb["angles"].max()), inner_steps=rgb["steps"])
            if rgb["rotated"] and self.weight_args.get("rgb_solver", "pgd") == "pgd" and geometry.ema_product is not None:
                row.update(rgb_miss_correction_from_geometry(
                    rgb["angles"], geometry,
                    lam=float(self.weight_args.get("rgb_lambda", 0.0)), eps=float(self.weight_args.get("rgb_eps", 1e-8)),
                ))
        elif grads is not None and isinstance(adjusted, Tensor) and adjusted.shape == grads.shape:
            row["source"] = "adjusted"
            row.update(mer_statistics(grads, adjusted))
        else:
            row["source"] = "raw"
            row.update(raw_mer_statistics(geometry))
        if geometry.update_product is not None:
            row.update(update_alignment_from_geometry(geometry))
        self.rows.append(row)
        return row

    def _geometry_of(self, grads: Optional[Tensor], is_rgb: bool) -> Optional[TaskGeometry]:
        """The matrix path's geometry: from ``G``, the shared update ``v`` (``.grad``; not with
        ``rep_grad``, whose ``G`` holds representation gradients) and RGB's ``d_t``."""
        if grads is None:
            return None
        update = None if getattr(self.model, "rep_grad", False) else self.model._grad2vec()
        ema = getattr(self.model, "rgb_ema", None) if is_rgb else None
        return TaskGeometry.from_grads(grads, update=update, ema=ema)

    def end_epoch(self) -> dict[str, Any]:
        """The means of this epoch's logged rows (``inf`` if any condition number was ``inf``),
        ``source`` (the most common one) and ``logged_steps``; clears ``rows``."""
        rows, self.rows = self.rows, []
        if not rows:
            return {}
        summary: dict[str, Any] = {"source": Counter(r["source"] for r in rows).most_common(1)[0][0], "logged_steps": len(rows)}
        keys = dict.fromkeys(k for r in rows for k in r if k not in ("step", "source"))
        for key in keys:
            values = [float(r[key]) for r in rows if key in r]
            summary[key] = float(np.mean(values)) if values else math.nan
        return summary
