"""Small quadratic programs over task weights on the simplex, solved to a tight tolerance.

Used by the bilevel methods: MOML's min-norm (MGDA) combination of the task hyper-gradients
and FORUM's direction-finding dual. Both have T or T + 1 variables, so they are solved in
float64 on the host with SciPy's SLSQP (tolerance ``QP_TOL``) from their Gram matrices.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

#: SLSQP's ``ftol``: the programs are solved to (about) this accuracy in the objective.
QP_TOL = 1e-14
QP_MAX_ITER = 1000


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """``argmin_{γ ∈ Δ} ||Σ_i γ_i h_i||² = γᵀ G γ`` for the Gram matrix ``G = [<h_i, h_j>]``
    (the min-norm element of the convex hull, MGDA's sub-problem)."""
    gram = _symmetric(gram)
    n = gram.shape[0]
    if n == 1:
        return np.ones(1)
    result = minimize(
        lambda w: float(w @ gram @ w),
        np.full(n, 1.0 / n),
        jac=lambda w: 2.0 * gram @ w,
        method="SLSQP",
        bounds=[(0.0, None)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}],
        options={"ftol": QP_TOL, "maxiter": QP_MAX_ITER},
    )
    return _on_simplex(result.x)


def forum_dual_weights(gram: np.ndarray, pi: np.ndarray, linear: float) -> np.ndarray:
    """FORUM's direction problem as the authors' code states it (LibMTL ``bacth_forward_FORUM``):
    over ``w = (λ_1..λ_T, ν)`` with ``gram`` the Gram matrix of ``[∇F_1 .. ∇F_T, ∇q]``,

        min  wᵀ G w − ν · linear   s.t.  λ ∈ Δ,  ν ≥ Σ_i λ_i π_i,  w ≥ 0.

    Returns ``w`` (length T + 1)."""
    gram = _symmetric(gram)
    pi = np.asarray(pi, dtype=np.float64)
    tasks = len(pi)
    n = tasks + 1
    e_nu = np.zeros(n)
    e_nu[-1] = 1.0
    start = np.append(np.full(tasks, 1.0 / tasks), max(float(pi.mean()), 0.0))
    result = minimize(
        lambda w: float(w @ gram @ w - linear * w[-1]),
        start,
        jac=lambda w: 2.0 * gram @ w - linear * e_nu,
        method="SLSQP",
        bounds=[(0.0, None)] * n,
        constraints=[
            {"type": "eq", "fun": lambda w: w[:-1].sum() - 1.0, "jac": lambda w: np.append(np.ones(tasks), 0.0)},
            {"type": "ineq", "fun": lambda w: w[-1] - pi @ w[:-1], "jac": lambda w: np.append(-pi, 1.0)},
        ],
        options={"ftol": QP_TOL, "maxiter": QP_MAX_ITER},
    )
    w = np.maximum(result.x, 0.0)
    w[:-1] = _on_simplex(w[:-1])
    w[-1] = max(w[-1], float(pi @ w[:-1]), 0.0)
    return w


def _symmetric(gram: np.ndarray) -> np.ndarray:
    gram = np.asarray(gram, dtype=np.float64)
    return 0.5 * (gram + gram.T)


def _on_simplex(w: np.ndarray) -> np.ndarray:
    """Clip the solver's tiny negative entries and renormalise to sum 1."""
    w = np.maximum(np.asarray(w, dtype=np.float64), 0.0)
    total = w.sum()
    return w / total if total > 0 else np.full(len(w), 1.0 / len(w))
