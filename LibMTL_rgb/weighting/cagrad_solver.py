"""CAGrad's direction as weights on the task gradients, from their Gram matrix alone.

Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning" (NeurIPS 2021), Eq. 4
and its dual: with ``g_0`` the mean gradient and ``φ = c²‖g_0‖²``::

    w* = argmin_{w ∈ Δ}  g_wᵀ g_0 + √φ ‖g_w‖,      g_w = Σ_i w_i g_i,
    d  = g_0 + (√φ / ‖g_w*‖) g_w*.

The problem is solved on the Gram matrix divided by its trace, so the weights do not depend
on the scale of the gradients and ``d`` is positively homogeneous (scaling every loss by
``s > 0`` scales ``d`` by ``s``, whatever ``s``): no absolute ε enters (torchjd's ``norm_eps``
and the authors' ``+1e-8`` do). SciPy's SLSQP finds the face, then Newton steps on that face
polish the weights to round-off.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: SLSQP's ``ftol`` on the normalised problem.
SOLVER_TOL = 1e-15
SOLVER_MAX_ITER = 1000
#: Weights below this (relative to 1) leave the face for the Newton polish.
FACE_TOL = 1e-10
#: ``‖g_w‖`` below this fraction of ``sqrt(trace)`` counts as 0: 0 is in the convex hull of the
#: gradients (a Pareto-stationary point) and ``d = g_0``, as the authors' code then returns.
ZERO_NORM_TOL = 1e-14
NEWTON_STEPS = 20


def cagrad_objective(gram: np.ndarray, w: np.ndarray, radius: float) -> float:
    """``F(w) = wᵀ K 1/T + radius · sqrt(wᵀ K w)`` (the dual above; ``radius = c‖g_0‖``)."""
    mean_products = gram.mean(axis=1)
    return float(w @ mean_products + radius * np.sqrt(max(float(w @ gram @ w), 0.0)))


def cagrad_weights(gram: Tensor, c: float) -> Tensor:
    """Weights ``λ`` with ``d = Σ_i λ_i g_i`` the CAGrad direction (before ``--rescale``),
    for the Gram matrix ``K = G Gᵀ`` ([T, T]); computed in float64 on the host."""
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"cagrad_weights needs a square Gram matrix, got shape {tuple(gram.shape)}")
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    out_dtype, device = gram.dtype, gram.device
    K = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    K = 0.5 * (K + K.T)
    n = K.shape[0]
    uniform = np.full(n, 1.0 / n)
    trace = float(np.trace(K))
    if trace <= 0.0 or c == 0.0:
        return torch.from_numpy(uniform).to(dtype=out_dtype, device=device)
    K = K / trace
    radius = c * np.sqrt(max(float(uniform @ K @ uniform), 0.0))
    w = _solve_dual(K, radius)
    gw_norm = np.sqrt(max(float(w @ K @ w), 0.0))
    if gw_norm <= ZERO_NORM_TOL:
        return torch.from_numpy(uniform).to(dtype=out_dtype, device=device)
    weights = uniform + (radius / gw_norm) * w
    return torch.from_numpy(weights).to(dtype=out_dtype, device=device)


def _solve_dual(K: np.ndarray, radius: float) -> np.ndarray:
    from scipy.optimize import minimize  # loads on first use

    n = K.shape[0]
    mean_products = K.mean(axis=1)

    def gradient(w: np.ndarray) -> np.ndarray:
        norm = np.sqrt(max(float(w @ K @ w), 0.0))
        return mean_products + (radius * (K @ w) / norm if norm > 0 else 0.0)

    result = minimize(
        lambda w: cagrad_objective(K, w, radius), np.full(n, 1.0 / n), jac=gradient, method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}],
        options={"ftol": SOLVER_TOL, "maxiter": SOLVER_MAX_ITER},
    )
    w = _on_simplex(result.x)
    return _newton_polish(K, radius, w)


def _newton_polish(K: np.ndarray, radius: float, w: np.ndarray) -> np.ndarray:
    """Newton steps for F on the face ``{w_S > 0, Σ w = 1}``; each kept only if it stays on the
    simplex and lowers the face's stationarity residual (F itself is flat to round-off there)."""
    support = np.flatnonzero(w > FACE_TOL)
    if len(support) < 2:
        return w
    residual = _face_residual(K, radius, w, support)
    for _ in range(NEWTON_STEPS):
        Kw = K @ w
        q = float(w @ Kw)
        if q <= 0 or residual == 0.0:
            break
        norm = np.sqrt(q)
        grad = (K.mean(axis=1) + radius * Kw / norm)[support]
        hess = (radius * (K / norm - np.outer(Kw, Kw) / (q * norm)))[np.ix_(support, support)]
        k = len(support)
        kkt = np.block([[hess, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
        step = np.linalg.lstsq(kkt, np.append(-grad, 0.0), rcond=None)[0][:k]
        candidate = w.copy()
        candidate[support] += step
        if np.any(candidate < 0):
            break
        candidate /= candidate.sum()
        candidate_residual = _face_residual(K, radius, candidate, support)
        if not candidate_residual < residual:
            break
        w, residual = candidate, candidate_residual
    return w


def _face_residual(K: np.ndarray, radius: float, w: np.ndarray, support: np.ndarray) -> float:
    """How far ``∇F`` restricted to the face is from constant (0 at the face's minimiser)."""
    q = float(w @ K @ w)
    if q <= 0:
        return 0.0
    grad = (K.mean(axis=1) + radius * (K @ w) / np.sqrt(q))[support]
    return float(np.abs(grad - grad.mean()).max())


def _on_simplex(w: np.ndarray) -> np.ndarray:
    w = np.maximum(np.asarray(w, dtype=np.float64), 0.0)
    w[w < FACE_TOL * w.max()] = 0.0
    return w / w.sum()
