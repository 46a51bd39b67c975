"""Euclidean projection onto the probability simplex (used by MoCo, MoDo and SDMGrad)."""
from __future__ import annotations

import torch
from torch import Tensor


def project_to_simplex(v: Tensor) -> Tensor:
    r"""``argmin_{w ∈ Δ} ‖w − v‖²`` with ``Δ = {w ≥ 0, Σ_i w_i = 1}``, by the sort-based
    algorithm of Held, Wolfe & Crowder (1974) / Duchi et al. (ICML 2008, Fig. 1):
    ``w = max(v − θ, 0)`` with ``θ = (Σ_{i≤ρ} u_i − 1) / ρ``, ``u`` = ``v`` sorted
    decreasingly and ``ρ`` the largest ``j`` with ``u_j > (Σ_{i≤j} u_i − 1) / j``."""
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"project_to_simplex takes a non-empty vector, got shape {tuple(v.shape)}")
    u, _ = torch.sort(v, descending=True)
    thresholds = (torch.cumsum(u, dim=0) - 1) / torch.arange(1, len(v) + 1, device=v.device, dtype=v.dtype)
    if not bool(torch.isfinite(v).all()):
        raise FloatingPointError(f"project_to_simplex got a non-finite vector {v.tolist()}")
    # j = 1 always qualifies; rounding can hide it when |u_1| ≫ 1 (then θ = u_1 − 1).
    qualifying = torch.nonzero(u > thresholds)
    rho = int(qualifying[-1]) if len(qualifying) else 0
    return torch.clamp(v - thresholds[rho], min=0)
