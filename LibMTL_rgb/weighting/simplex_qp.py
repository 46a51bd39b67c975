"""FORUM's direction-finding dual: a small quadratic program over task weights, solved to a
tight tolerance (MOML's min-norm combination uses MGDA's exact solver, ``min_norm.py``).

It has T + 1 variables, so it is solved in float64 on the host from its Gram matrix: SciPy's SLSQP (tolerance ``QP_TOL``) finds the
active constraints, then the KKT system on those constraints is solved exactly
(:func:`_polish`), which removes SLSQP's residual error (up to ~1e-7 in the weights).
"""
from __future__ import annotations

import numpy as np

#: SLSQP's ``ftol``: the programs are solved to (about) this accuracy in the objective.
QP_TOL = 1e-14
QP_MAX_ITER = 1000
#: A constraint is taken as active in SLSQP's solution when it holds within this slack.
ACTIVE_TOL = 1e-7
#: The polished solution must satisfy every constraint within this slack.
FEASIBLE_TOL = 1e-12


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
    from scipy.optimize import minimize  # scipy.optimize loads on first use (0.3 s)

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
    # inequalities as rows r with r @ w <= 0: w >= 0 and Σ λ_i π_i − ν <= 0
    inequalities = np.vstack([-np.eye(n), np.append(pi, -1.0)])
    active = [row for row in inequalities if row @ w > -ACTIVE_TOL]
    equalities = np.array([np.append(np.ones(tasks), 0.0)] + active)
    targets = np.array([1.0] + [0.0] * len(active))
    return _polish(w, gram, -linear * e_nu, equalities, targets, inequalities, np.zeros(len(inequalities)))


def _polish(w: np.ndarray, gram: np.ndarray, linear: np.ndarray, equalities: np.ndarray, targets: np.ndarray,
            inequalities: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The minimiser of ``wᵀ G w + linearᵀ w`` subject to ``equalities @ w = targets`` (the
    constraints active at ``w``), from its KKT system; ``w`` itself when that point violates
    ``inequalities @ w <= bounds`` or is not better (a wrongly guessed active set)."""
    n = len(w)
    kkt = np.block([[2.0 * gram, equalities.T], [equalities, np.zeros((len(equalities), len(equalities)))]])
    rhs = np.concatenate([-linear, targets])
    candidate = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]
    objective = lambda v: float(v @ gram @ v + linear @ v)  # noqa: E731
    feasible = np.all(inequalities @ candidate <= bounds + FEASIBLE_TOL) and np.allclose(equalities @ candidate, targets, atol=FEASIBLE_TOL)
    if feasible and objective(candidate) <= objective(w) + FEASIBLE_TOL:
        return np.maximum(candidate, 0.0)
    return w


def _symmetric(gram: np.ndarray) -> np.ndarray:
    gram = np.asarray(gram, dtype=np.float64)
    return 0.5 * (gram + gram.T)


def _on_simplex(w: np.ndarray) -> np.ndarray:
    """Clip the solver's tiny negative entries and renormalise to sum 1."""
    w = np.maximum(np.asarray(w, dtype=np.float64), 0.0)
    total = w.sum()
    return w / total if total > 0 else np.full(len(w), 1.0 / len(w))
