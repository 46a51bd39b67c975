"""The exact min-norm point of the convex hull of the task gradients (MGDA's sub-problem).

``min_norm_weights(G G^T)`` solves ``min_w ‖Σ_i w_i g_i‖²`` over the simplex ``{w ≥ 0, Σ w = 1}``
(Sener & Koltun, NeurIPS 2018, Eq. 3) from the T×T Gram matrix alone, with Wolfe's
min-norm-point algorithm (Wolfe, "Finding the nearest point in a polytope", Math. Programming
1976): an active-set method that is exact after finitely many steps, stopped when the
Frank-Wolfe duality gap ``wᵀKw − min_i (Kw)_i`` is below ``tol · max_i K_ii``.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Relative optimality gap at which the solver stops (``gap ≤ tol · max_i ‖g_i‖²``).
DEFAULT_TOL = 1e-12


def _affine_minimizer(gram: Tensor, support: list[int]) -> Tensor:
    """Weights μ (Σ μ = 1) of the point of least norm in the affine hull of the support rows:
    the KKT system ``[K_SS 1; 1ᵀ 0] [μ; ν] = [0; 1]`` (least squares when singular)."""
    k = len(support)
    idx = torch.tensor(support)
    system = gram.new_zeros(k + 1, k + 1)
    system[:k, :k] = gram[idx][:, idx]
    system[:k, k] = 1.0
    system[k, :k] = 1.0
    rhs = gram.new_zeros(k + 1)
    rhs[k] = 1.0
    solution = torch.linalg.lstsq(system, rhs.unsqueeze(1)).solution.squeeze(1)
    return solution[:k]


def min_norm_weights(gram: Tensor, tol: float = DEFAULT_TOL, max_iter: int | None = None) -> Tensor:
    """Simplex weights ``w`` minimising ``wᵀ K w`` for the PSD Gram matrix ``K = G Gᵀ`` ([T, T]).

    Wolfe's algorithm in Gram form: keep a support set S and weights on S; add the vertex
    ``argmin_i (Kw)_i`` while the duality gap exceeds ``tol · max_i K_ii``; move toward the
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
        if float(w @ Kw - Kw[vertex]) <= tol * scale or vertex in support:
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
