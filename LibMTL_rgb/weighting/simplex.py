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
    if not bool(torch.isfinite(v).all()):
        raise FloatingPointError(f"project_to_simplex got a non-finite vector {v.tolist()}")
    exact = v.to(torch.float64)  # a [T] vector: float64 keeps u_j − θ exact for large entries
    u, _ = torch.sort(exact, descending=True)
    thresholds = (torch.cumsum(u, dim=0) - 1) / torch.arange(1, len(v) + 1, device=v.device, dtype=exact.dtype)
    qualifying = torch.nonzero(u > thresholds)
    if len(qualifying) == 0:  # only when rounding hides j = 1 (|u_1| ≳ 1e16): all mass on the largest
        return torch.nn.functional.one_hot(torch.argmax(exact), len(v)).to(v.dtype)
    return torch.clamp(exact - thresholds[int(qualifying[-1])], min=0).to(v.dtype)
