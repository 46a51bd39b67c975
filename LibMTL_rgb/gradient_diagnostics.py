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

The per-task gradients ``G`` come from the weighting's own ``_get_grads`` call when it makes
one (no extra cost: on logged steps this module sets ``model.record_task_grads`` and
``AbsWeighting._get_grads`` keeps ``model.task_grads``; no model method is replaced); for weightings that never form ``G`` (EW does one backward of
the summed loss) they are computed on logged steps with one extra autograd pass per task.
With ``rep_grad=True`` the diagnostics use the representation gradients the weighting forms.
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
    normalized_gram,
    proximity,
    rotation_geometry,
    solve_rotation_angles_exact,
)

__all__ = [
    "mer_from_grams",
    "mer_statistics",
    "update_alignment",
    "rgb_miss_correction",
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
        P = gram_of_unit_vectors(raw64, eps)
        return mer_from_grams(P, P, torch.diagonal(P))
    if adjusted.shape != raw.shape:
        raise ValueError(f"adjusted gradients {tuple(adjusted.shape)} must match the raw ones {tuple(raw.shape)}")
    T = raw.shape[0]
    J = gram_of_unit_vectors(torch.cat([raw64, adjusted.detach().to(raw64)]), eps)
    return mer_from_grams(J[:T, :T], J[T:, T:], torch.diagonal(J[T:, :T]))


def update_alignment(raw: Tensor, direction: Tensor, eps: float = 1e-12) -> dict[str, float]:
    """Cosines between the shared update ``direction`` ([D]) and each task gradient ([T, D]):
    their minimum and mean (a negative minimum: the update increases that task's loss)."""
    raw64 = raw.detach().to(torch.float64)
    v = direction.detach().to(raw64)
    cos = (raw64 @ v) / (raw64.norm(dim=1) * v.norm() + eps)
    return {"update_cos_min": float(cos.min()), "update_cos_mean": float(cos.mean())}


def rgb_miss_correction(
    angles: Tensor, grads: Tensor, ema: Tensor, lam: float = 0.0, eps: float = 1e-8
) -> dict[str, float]:
    """GMAE and SD-MAE (Def. 2.8) of RGB's K-step ``angles`` against the exact minimiser α* of
    Eq. 1 on the same geometry: ``P`` and ``q = Ḡ d_t`` from ``grads`` ([T, D]) and the EMA
    direction ``ema`` (``d_t``, [D]) of that step, in float64
    (:func:`~LibMTL_rgb.rgb.solve_rotation_angles_exact`: the KKT point reached by descent
    from 0; with λ = 0 the minimiser may not be unique, see docs/benchmark.md)."""
    G = grads.detach().to(torch.float64)
    d = ema.detach().to(G)
    P, norms = normalized_gram(G, eps, compute_dtype=torch.float64)
    q = (G @ d) / (norms + eps)
    alpha_star = solve_rotation_angles_exact(rotation_geometry(P, q, d @ d, eps), lam)
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
        """Start a step; on logged steps, ask the weighting to keep ``G`` and compute ``G`` here
        unless the weighting is known to form it."""
        self.step += 1
        self._logging = self.step % self.every == 0
        self._captured = self._precomputed = None
        if not self._logging:
            return
        self.model.record_adjusted_grads = True
        self.model.record_task_grads = True
        self.model.task_grads = None
        if not self._weighting_forms_grads and not getattr(self.model, "rep_grad", False):
            self.model._compute_grad_dim()
            self._precomputed = self.model._compute_grad(losses, mode="autograd").detach()

    def after_backward(self) -> Optional[dict[str, Any]]:
        """Finish a step: the diagnostics row of a logged step (also kept in ``rows``)."""
        if not self._logging:
            return None
        self._logging = False
        self.model.record_adjusted_grads = False
        self.model.record_task_grads = False
        captured = getattr(self.model, "task_grads", None)
        self.model.task_grads = None
        if isinstance(captured, Tensor):
            self._captured = captured
        self._weighting_forms_grads = self._captured is not None
        grads = self._captured if self._captured is not None else self._precomputed
        adjusted = getattr(self.model, "adjusted_grads", None)
        self.model.adjusted_grads = None
        if grads is None:
            return None
        row: dict[str, Any] = {"step": self.step}
        rgb = _rgb_last_step(self.model)
        if rgb is not None:
            row["source"] = "rotated"
            row.update(mer_from_grams(rgb["gram"], rgb["rotated_gram"], rgb["rotated_cross"]))
            row.update(angle_mean=float(rgb["angles"].mean()), angle_max=float(rgb["angles"].max()), inner_steps=rgb["steps"])
            if rgb["rotated"] and self.weight_args.get("rgb_solver", "pgd") == "pgd":
                row.update(rgb_miss_correction(
                    rgb["angles"], grads, self.model.rgb_ema,
                    lam=float(self.weight_args.get("rgb_lambda", 0.0)), eps=float(self.weight_args.get("rgb_eps", 1e-8)),
                ))
        elif isinstance(adjusted, Tensor) and adjusted.shape == grads.shape:
            row["source"] = "adjusted"
            row.update(mer_statistics(grads, adjusted))
        else:
            row["source"] = "raw"
            row.update(mer_statistics(grads))
        if not getattr(self.model, "rep_grad", False):
            row.update(update_alignment(grads, self.model._grad2vec()))
        self.rows.append(row)
        return row

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
