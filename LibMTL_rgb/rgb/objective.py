"""Eq. 1 of the RGB paper (the rotation objective) in Gram form, and its solvers.

Everything here works on T-sized and T x T tensors only: the D-dimensional
vectors of Algorithm 1 enter through their inner products, gathered once per
step in a :class:`RotationGeometry` (see ``docs/rgb_math.md`` for the
identities).

Notation (per training step): ``gbar_i`` the normalised task gradients,
``d`` the EMA direction d_t, ``w_i`` the unit vector orthogonal to ``gbar_i``
towards ``d`` and ``r_i(a) = cos(a_i) gbar_i + sin(a_i) w_i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_INNER_LR",
    "RotationGeometry",
    "RotationGradMatrix",
    "rotation_geometry",
    "rotation_grad_matrix",
    "rotation_inner_products",
    "rotation_objective",
    "rotation_objective_grad",
    "projected_gradient_norm",
    "solve_rotation_angles",
    "solve_rotation_angles_exact",
    "solve_rotation_angles_exact_with_info",
]

#: Default learning rate of the K inner projected-gradient steps on Eq. 1.
#: Not tuned; the RGB weighting may override it.
DEFAULT_INNER_LR = 1.0  # chosen by the toy sweep (docs/toy.md)

HALF_PI = math.pi / 2


@dataclass
class RotationGeometry:
    """Inner products that fully determine Eq. 1 for one step.

    Attributes:
        P: ``[T, T]`` Gram of the normalised gradients, ``P_ij = gbar_i . gbar_j``.
        q: ``[T]``, ``q_i = gbar_i . d``.
        dd: scalar tensor, ``||d||^2``.
        m: ``[T]``, ``m_i = ||d - q_i gbar_i||`` (before the ``+ eps``).
        inv_m: ``[T]``, ``1 / (m_i + eps)``, or 0 where ``w_i`` is numerically undefined
            (see :func:`rotation_geometry`).
        B: ``[T, T]``, ``B_ij = gbar_i . w_j``.
        W: ``[T, T]``, ``W_ij = w_i . w_j``.
        eps: the epsilon of Algorithm 1.
    """

    P: Tensor
    q: Tensor
    dd: Tensor
    m: Tensor
    inv_m: Tensor
    B: Tensor
    W: Tensor
    eps: float

    @property
    def num_tasks(self) -> int:
        return int(self.P.shape[0])


#: ``w_i`` is taken as 0 when ``m_i^2 <= DEGENERATE_TOLERANCE * eps_machine * ||d||^2``.
DEGENERATE_TOLERANCE = 64.0


def rotation_geometry(P: Tensor, q: Tensor, dd: Tensor, eps: float = 1e-8) -> RotationGeometry:
    """Build the :class:`RotationGeometry` from ``P = Gbar Gbar^T``, ``q = Gbar d``, ``dd = ||d||^2``.

    Uses (all square roots of quantities clamped at 0 against round-off)::

        m_i    = sqrt(dd - 2 q_i^2 + q_i^2 P_ii)
        B_ij   = gbar_i . w_j = (q_i - q_j P_ij) / (m_j + eps)
        W_ij   = w_i . w_j    = (dd - q_i^2 - q_j^2 + q_i q_j P_ij) / ((m_i + eps)(m_j + eps))
    """
    dd = torch.as_tensor(dd, dtype=P.dtype, device=P.device)
    diag = torch.diagonal(P)
    q2 = q * q
    m_sq = dd - 2.0 * q2 + q2 * diag
    m = torch.sqrt(torch.clamp(m_sq, min=0.0))
    # m_i^2 comes from a difference of O(dd) terms, so below ~eps_machine * dd it is round-off
    # and the direction of d - q_i gbar_i (hence w_i) is undefined: set w_i = 0 there, as
    # Algorithm 1 does when d - q_i gbar_i is exactly 0 (d_t (anti-)parallel to gbar_i, or d_t = 0).
    defined = m_sq > DEGENERATE_TOLERANCE * torch.finfo(P.dtype).eps * dd
    inv_m = torch.where(defined, 1.0 / (m + eps), torch.zeros_like(m))
    qP = P * q.unsqueeze(0)  # qP_ij = q_j P_ij
    B = (q.unsqueeze(1) - qP) * inv_m.unsqueeze(0)
    W = (dd - q2.unsqueeze(1) - q2.unsqueeze(0) + qP * q.unsqueeze(1)) * (
        inv_m.unsqueeze(1) * inv_m.unsqueeze(0)
    )
    return RotationGeometry(P=P, q=q, dd=dd, m=m, inv_m=inv_m, B=B, W=W, eps=float(eps))


def rotation_inner_products(alpha: Tensor, geometry: RotationGeometry) -> tuple[Tensor, Tensor, Tensor]:
    """Inner products of the UNnormalised rotated vectors ``r_i(alpha)``.

    Returns ``(RR, X, Y)`` with ``RR_ij = r_i . r_j``, ``X_ij = gbar_i . r_j`` and
    ``Y_ij = w_i . r_j`` (all ``[T, T]``).
    """
    c = torch.cos(alpha)
    s = torch.sin(alpha)
    g = geometry
    X = g.P * c.unsqueeze(0) + g.B * s.unsqueeze(0)
    Y = g.B.transpose(0, 1) * c.unsqueeze(0) + g.W * s.unsqueeze(0)
    RR = c.unsqueeze(1) * X + s.unsqueeze(1) * Y
    return RR, X, Y


def _objective_from(RR: Tensor, X: Tensor, alpha: Tensor, geometry: RotationGeometry, lam: float) -> Tensor:
    T = geometry.num_tasks
    diag_rr = torch.diagonal(RR)
    if T >= 2:
        off = RR.sum() - diag_rr.sum()  # sum_{i != j} r_i . r_j = 2 sum_{i<j}
        conflict = 0.5 - off / (2.0 * T * (T - 1))
    else:
        conflict = RR.new_zeros(())
    if lam == 0:
        return conflict
    # ||r_i - gbar_i||^2 = r_i.r_i - 2 gbar_i.r_i + gbar_i.gbar_i
    prox = torch.clamp(diag_rr - 2.0 * torch.diagonal(X) + torch.diagonal(geometry.P), min=0.0)
    return conflict + lam / (4.0 * T) * prox.sum()


def rotation_objective(alpha: Tensor, geometry: RotationGeometry, lam: float = 0.0) -> Tensor:
    """Eq. 1: ``1/(T(T-1)) sum_{i<j} (1 - r_i.r_j) + lam/(4T) sum_i ||r_i - gbar_i||^2``.

    ``r_i`` are the UNnormalised ``r_i(alpha)``. For ``T == 1`` the conflict term
    (which has no pairs) is defined as 0.
    """
    RR, X, _ = rotation_inner_products(alpha, geometry)
    return _objective_from(RR, X, alpha, geometry, lam)


def _grad_from(RR: Tensor, X: Tensor, Y: Tensor, alpha: Tensor, geometry: RotationGeometry, lam: float) -> Tensor:
    T = geometry.num_tasks
    c = torch.cos(alpha)
    s = torch.sin(alpha)
    # D_kj = r'_k . r_j with r'_k = dr_k/dalpha_k = -sin gbar_k + cos w_k
    Dm = c.unsqueeze(1) * Y - s.unsqueeze(1) * X
    diag_D = torch.diagonal(Dm)
    if T >= 2:
        grad = -(Dm.sum(dim=1) - diag_D) / (T * (T - 1))
    else:
        grad = torch.zeros_like(alpha)
    if lam != 0:
        # d/da_k ||r_k - gbar_k||^2 = 2 r'_k . (r_k - gbar_k);  r'_k . gbar_k = -s P_kk + c B_kk
        cross = -s * torch.diagonal(geometry.P) + c * torch.diagonal(geometry.B)
        grad = grad + lam / (2.0 * T) * (diag_D - cross)
    return grad


def rotation_objective_grad(alpha: Tensor, geometry: RotationGeometry, lam: float = 0.0) -> Tensor:
    """Analytic gradient of :func:`rotation_objective` w.r.t. ``alpha`` (shape ``[T]``)."""
    RR, X, Y = rotation_inner_products(alpha, geometry)
    return _grad_from(RR, X, Y, alpha, geometry, lam)


def _project(alpha: Tensor) -> Tensor:
    return torch.clamp(alpha, 0.0, HALF_PI)


def projected_gradient_norm(alpha: Tensor, geometry: RotationGeometry, lam: float = 0.0) -> Tensor:
    """Max-norm of the projected-gradient map ``alpha - clip(alpha - grad, 0, pi/2)``.

    It is zero exactly at the KKT points of Eq. 1 on the box ``[0, pi/2]^T``.
    """
    grad = rotation_objective_grad(alpha, geometry, lam)
    return (alpha - _project(alpha - grad)).abs().max()


@dataclass(frozen=True)
class RotationGradMatrix:
    """The gradient of Eq. 1 as one mat-vec in ``z = [cos(alpha); sin(alpha)]``.

    With ``u = matrix @ z + offset``, split as ``u = [u_cos; u_sin]`` (two ``[T]``
    halves), ``scale * dL/dalpha = cos(alpha) * u_cos + sin(alpha) * u_sin``
    (see ``docs/rgb_math.md``, "Cost"). Built once per step by
    :func:`rotation_grad_matrix`; each inner step then costs one ``[2T, 2T]``
    mat-vec and a few T-vector operations, with or without the proximity term.

    Attributes:
        matrix: ``[2T, 2T]``.
        offset: ``[2T]``.
    """

    matrix: Tensor
    offset: Tensor

    def scaled_grad(self, alpha: Tensor) -> Tensor:
        """``scale * dL/dalpha`` at ``alpha`` ([T])."""
        z = torch.cat([torch.cos(alpha), torch.sin(alpha)])
        u_cos, u_sin = torch.addmv(self.offset, self.matrix, z).view(2, -1)
        return z[: alpha.numel()] * u_cos + z[alpha.numel():] * u_sin


def rotation_grad_matrix(geometry: RotationGeometry, lam: float = 0.0, scale: float = 1.0) -> RotationGradMatrix:
    """Precompute ``scale * grad`` of Eq. 1 as a :class:`RotationGradMatrix`.

    From ``D_kj = r'_k . r_j = c_k Y_kj - s_k X_kj`` (``c, s = cos, sin alpha``)
    and the Gram form of ``X``, ``Y``::

        sum_{j != k} D_kj = c_k [(B^T - dB) c + (W - dW) s]_k - s_k [(P - dP) c + (B - dB) s]_k
        D_kk - r'_k . gbar_k = c_k (B_kk c_k + (W_kk - P_kk) s_k - B_kk) - s_k (B_kk s_k - P_kk)

    (``dX`` the diagonal part of ``X``), so with ``k1 = 1/(T(T-1))`` (0 for
    ``T = 1``) and ``k2 = lam/(2T)``::

        matrix = scale [[-k1 (B^T - dB) + k2 dB,  -k1 (W - dW) + k2 (dW - dP)],
                        [ k1 (P - dP),              k1 (B - dB) - k2 dB     ]]
        offset = scale [-k2 diag(B); k2 diag(P)]
    """
    T = geometry.num_tasks
    P, B, W = geometry.P, geometry.B, geometry.W
    k1 = scale / (T * (T - 1)) if T >= 2 else 0.0
    k2 = scale * lam / (2.0 * T)
    blocks = torch.cat([torch.cat([B.transpose(0, 1), W], dim=1), torch.cat([P, B], dim=1)], dim=0)
    # -k1 on the cos rows, +k1 on the sin rows, 0 on the diagonals of the four T x T blocks
    signed_off_diagonal = torch.eye(T, dtype=P.dtype, device=P.device).sub_(1.0).mul_(k1).repeat(2, 2)
    signed_off_diagonal[T:].neg_()
    matrix = blocks.mul_(signed_off_diagonal)
    if lam == 0:
        return RotationGradMatrix(matrix=matrix, offset=P.new_zeros(2 * T))
    diag_P, diag_B, diag_W = torch.diagonal(P), torch.diagonal(B), torch.diagonal(W)
    matrix.diagonal().add_(torch.cat([diag_B, -diag_B]), alpha=k2)  # blocks (1,1) and (2,2)
    matrix.diagonal(T).add_(diag_W - diag_P, alpha=k2)  # block (1,2)
    offset = torch.cat([-diag_B, diag_P]).mul_(k2)
    return RotationGradMatrix(matrix=matrix, offset=offset)


@torch.no_grad()
def solve_rotation_angles(
    geometry: RotationGeometry, lam: float = 0.0, steps: int = 5, lr: float = DEFAULT_INNER_LR
) -> Tensor:
    """Algorithm 1, line 8: ``alpha = 0`` then ``steps`` projected gradient steps on Eq. 1.

    Each step is ``alpha <- clip(alpha - lr grad L(alpha), 0, pi/2)`` with the gradient
    of :func:`rotation_objective_grad` (same value up to round-off), evaluated through
    :func:`rotation_grad_matrix` with ``lr`` folded in: six in-place operations on
    preallocated buffers per step (cos, sin, one ``[2T, 2T]`` mat-vec, two multiply-adds,
    the clip), i.e. six kernel launches per step on a GPU. Not differentiable (runs
    under ``torch.no_grad``).
    """
    T = geometry.num_tasks
    alpha = geometry.P.new_zeros(T)
    if int(steps) <= 0:
        return alpha
    grad_matrix = rotation_grad_matrix(geometry, lam, scale=lr)
    z = alpha.new_empty(2 * T)  # [cos alpha; sin alpha]
    u = alpha.new_empty(2 * T)  # lr [u_cos; u_sin]
    cos_a, sin_a = z.view(2, T).unbind(0)
    u_cos, u_sin = u.view(2, T).unbind(0)
    for _ in range(int(steps)):
        torch.cos(alpha, out=cos_a)
        torch.sin(alpha, out=sin_a)
        torch.addmv(grad_matrix.offset, grad_matrix.matrix, z, out=u)
        alpha.addcmul_(cos_a, u_cos, value=-1.0).addcmul_(sin_a, u_sin, value=-1.0).clamp_(0.0, HALF_PI)
    return alpha


def solve_rotation_angles_exact_with_info(
    geometry: RotationGeometry, lam: float = 0.0, tol: float = 1e-10, max_iter: int = 10000
) -> tuple[Tensor, int, bool]:
    """Like :func:`solve_rotation_angles_exact`, also returning ``(iterations, converged)``."""
    T = geometry.num_tasks
    alpha = geometry.P.new_zeros(T)
    RR, X, Y = rotation_inner_products(alpha, geometry)
    f = _objective_from(RR, X, alpha, geometry, lam)
    grad = _grad_from(RR, X, Y, alpha, geometry, lam)
    # round-off allowance of the sufficient-decrease test (objective is O(1))
    slack = 16.0 * torch.finfo(alpha.dtype).eps * (1.0 + abs(float(lam)))
    sigma = 1e-4
    step = 1.0
    it = 0
    while it < max_iter:
        pg = (alpha - _project(alpha - grad)).abs().max()
        if float(pg) < tol:
            return alpha, it, True
        it += 1
        accepted = False
        for _ in range(60):
            new = _project(alpha - step * grad)
            delta = new - alpha
            RRn, Xn, Yn = rotation_inner_products(new, geometry)
            fn = _objective_from(RRn, Xn, new, geometry, lam)
            if float(fn) <= float(f) + sigma * float(grad @ delta) + slack:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            break  # no representable decrease left: stationary to working precision
        gn = _grad_from(RRn, Xn, Yn, new, geometry, lam)
        # Barzilai-Borwein (BB1) trial step for the next iteration, safeguarded
        dg = gn - grad
        sy = float(delta @ dg)
        ss = float(delta @ delta)
        step = min(max(ss / sy, 1e-6), 1e6) if sy > 0 else min(step * 2.0, 1e6)
        alpha, f, grad = new, fn, gn
    pg = (alpha - _project(alpha - grad)).abs().max()
    return alpha, it, bool(float(pg) < tol)


def solve_rotation_angles_exact(
    geometry: RotationGeometry, lam: float = 0.0, tol: float = 1e-10, max_iter: int = 10000
) -> Tensor:
    """Solve Eq. 1 on ``[0, pi/2]^T`` to tolerance (deterministic).

    Projected gradient from ``alpha = 0`` with Barzilai-Borwein trial steps and an
    Armijo backtracking test (with a round-off allowance), stopped when the
    max-norm of the projected-gradient map is below ``tol`` or after
    ``max_iter`` iterations. Eq. 1 is not convex in general: the result is the
    KKT point reached by descent from ``alpha = 0`` (the same start as the
    K-step solver), which is what the miss-correction errors are measured
    against.
    """
    alpha, _, _ = solve_rotation_angles_exact_with_info(geometry, lam, tol, max_iter)
    return alpha
