"""The exact min-norm point of the convex hull of the task gradients (MGDA's sub-problem).

``min_norm_weights(G G^T)`` solves ``min_w ‖Σ_i w_i g_i‖²`` over the simplex ``{w ≥ 0, Σ w = 1}``
(Sener & Koltun, NeurIPS 2018, Eq. 3) from the T×T Gram matrix alone, with Wolfe's
min-norm-point algorithm (Wolfe, "Finding the nearest point in a polytope", Math. Programming
1976): an active-set method that is exact after finitely many steps, stopped when no vertex
outside the support lowers the norm or the Frank-Wolfe duality gap ``wᵀKw − min_i (Kw)_i`` is
below ``tol · wᵀKw`` (relative to the point itself, so a min-norm point far smaller than the
gradients is found to round-off: with gradient norms spanning 1e-3..1e3 the direction is
within ~1e-12·max‖g_i‖ of a 50-digit solution, ``tests/test_min_norm_exact.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Relative optimality gap at which the solver stops (``gap ≤ tol · ‖Σ w_i g_i‖²``).
DEFAULT_TOL = 1e-12


def _affine_minimizer(gram: Tensor, support: list[int]) -> Tensor:
    """Weights μ (Σ μ = 1) of the point of least norm in the affine hull of the support rows.

    Written from the support's vertex ``b`` of least norm: ``x = g_b + Σ_{j≠b} λ_j (g_j − g_b)``,
    whose normal equations ``M λ = −r`` (``M_jk = (g_j − g_b)ᵀ(g_k − g_b)``, ``r_j = (g_j − g_b)ᵀ g_b``)
    are well scaled even when the gradients' norms span many orders of magnitude (the bordered
    KKT system ``[K 1; 1ᵀ 0]`` is not); least squares when singular, two refinement steps."""
    k = len(support)
    if k == 1:
        return gram.new_ones(1)
    idx = torch.tensor(support)
    K = gram[idx][:, idx]
    base = int(torch.argmin(K.diagonal()))
    rest = torch.tensor([i for i in range(k) if i != base])
    M = K[rest][:, rest] - K[rest, base].unsqueeze(1) - K[base, rest].unsqueeze(0) + K[base, base]
    r = -(K[rest, base] - K[base, base])
    lam = torch.linalg.lstsq(M, r.unsqueeze(1)).solution.squeeze(1)
    for _ in range(2):  # iterative refinement
        lam = lam + torch.linalg.lstsq(M, (r - M @ lam).unsqueeze(1)).solution.squeeze(1)
    mu = gram.new_empty(k)
    mu[rest] = lam
    mu[base] = 1.0 - lam.sum()
    return mu


def min_norm_weights(gram: Tensor, tol: float = DEFAULT_TOL, max_iter: int | None = None) -> Tensor:
    """Simplex weights ``w`` minimising ``wᵀ K w`` for the PSD Gram matrix ``K = G Gᵀ`` ([T, T]).

    Wolfe's algorithm in Gram form: keep a support set S and weights on S; add the vertex
    ``argmin_i (Kw)_i`` while the duality gap exceeds ``tol · wᵀKw``; move toward the
    affine minimiser of S, dropping vertices whose weight reaches zero. Computed in float64."""
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"min_norm_weights needs a square Gram matrix, got shape {tuple(gram.shape)}")
    out_dtype, device = gram.dtype, gram.device
    K = gram.detach().to(device="cpu", dtype=torch.float64)
    K = 0.5 * (K + K.T)
    n = K.shape[0]
    scale = float(K.diagonal().max().clamp(min=0.0))
    if n == 1 or scale == 0.0:
        return torch.full((n,), 1.0 / n, dtype=out_dtype, device=device)
    max_iter = max_iter if max_iter is not None else 100 * n + 100
    first = int(torch.argmin(K.diagonal()))
    w = torch.zeros(n, dtype=torch.float64)
    w[first] = 1.0
    support = [first]
    for _ in range(max_iter):
        Kw = K @ w
        vertex = int(torch.argmin(Kw))
        if float(w @ Kw - Kw[vertex]) <= tol * float(w @ Kw) or vertex in support:
            break
        support.append(vertex)
        while True:  # minor cycle: reach the affine minimiser of the support inside the simplex
            mu = _affine_minimizer(K, support)
            if bool((mu > 0).all()):
                w.zero_()
                w[torch.tensor(support)] = mu
                break
            current = w[torch.tensor(support)]
            blocking = mu <= 0
            theta = float((current[blocking] / (current[blocking] - mu[blocking])).min().clamp(0.0, 1.0))
            moved = current + theta * (mu - current)
            w.zero_()
            w[torch.tensor(support)] = moved
            keep = [i for i, value in zip(support, moved.tolist()) if value > 1e-15]
            for i in set(support) - set(keep):
                w[i] = 0.0
            support = keep
            if len(support) == 1:
                w.zero_()
                w[support[0]] = 1.0
                break
    w = w.clamp(min=0.0)
    return (w / w.sum()).to(dtype=out_dtype, device=device)


def min_norm_gap(gram: Tensor, weights: Tensor) -> float:
    """The Frank-Wolfe duality gap ``wᵀKw − min_i (Kw)_i`` (0 exactly at the min-norm point)."""
    K, w = gram.to(torch.float64), weights.to(torch.float64)
    Kw = K @ w
    return float(w @ Kw - Kw.min())
