"""Appendix A.8 diagnostics (Eqs. 3-6) and Definition 2.8 (GMAE / SD-MAE).

All functions take small tensors: T x T Gram matrices of unit vectors, T-vectors
of inner products or angles. ``rgb_step`` returns exactly these
(``rotated_gram``, ``rotated_cross``, ``gram``, ``angles``). For another
aggregator, build ``rotated_gram`` from its adjusted per-task gradients
``g_i^adj`` normalised to unit length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "conflict",
    "proximity",
    "condition_number",
    "mer_balance",
    "miss_correction_errors",
    "gram_of_unit_vectors",
    "unit_gram",
]


def gram_of_unit_vectors(vectors: Tensor, eps: float = 1e-8) -> Tensor:
    """``[T, T]`` Gram of the rows of ``vectors`` ([T, D]) after ``v / (||v|| + eps)``."""
    return unit_gram(vectors @ vectors.transpose(0, 1), eps)


def unit_gram(gram: Tensor, eps: float = 1e-8) -> Tensor:
    """The Gram matrix of ``v_i / (||v_i|| + eps)`` from the Gram matrix ``gram = [v_i . v_j]``
    ([T, T]) of the vectors themselves: ``gram_ij / ((||v_i|| + eps)(||v_j|| + eps))``."""
    n = torch.sqrt(torch.clamp(torch.diagonal(gram), min=0.0))
    inv = 1.0 / (n + eps)
    return gram * inv.unsqueeze(1) * inv.unsqueeze(0)


def conflict(rotated_gram: Tensor) -> Tensor:
    """Eq. 3: ``(1/M) sum_{i<j} (1 - <r_i, r_j>) / 2`` with ``M = T(T-1)/2``.

    0 for identical directions, 0.5 for mutually orthogonal ones, 1 for opposite
    ones. Defined as 0 when ``T < 2`` (no pairs).
    """
    R = rotated_gram
    T = R.shape[0]
    if T < 2:
        return R.new_zeros(())
    off = R.sum() - torch.diagonal(R).sum()  # 2 sum_{i<j} R_ij
    M = T * (T - 1) / 2.0
    return (M - off / 2.0) / (2.0 * M)


def proximity(rotated_gram: Tensor, rotated_cross: Tensor, gram: Tensor) -> Tensor:
    """Eq. 4: ``(1/T) sum_i ||r_i - gbar_i||^2 / 4``.

    Uses ``||r_i - gbar_i||^2 = R_ii - 2 r_i.gbar_i + P_ii`` (clamped at 0), with
    ``R`` the Gram of the final r_i, ``rotated_cross_i = r_i . gbar_i`` and ``P``
    the Gram of the normalised gradients.
    """
    sq = torch.diagonal(rotated_gram) - 2.0 * rotated_cross + torch.diagonal(gram)
    return torch.clamp(sq, min=0.0).mean() / 4.0


def condition_number(rotated_gram: Tensor, floor: float = 1e-12) -> Tensor:
    """Eq. 5: ``kappa = lambda_max / lambda_min``.

    The matrix is the Gram ``R = [r_i . r_j]`` of the final (unit) adjusted
    gradients: its eigenvalues are the spectrum of the uncentred PCA of the set
    {r_i} (R = U U^T shares its non-zero eigenvalues with U^T U), it is
    symmetric PSD, and it determines the pairwise conflicts
    ``C_ij = (1 - R_ij) / 2``. ``kappa = 1`` for mutually orthogonal r_i and
    grows as the r_i become linearly dependent. If ``lambda_min <= floor *
    lambda_max`` (rank-deficient, e.g. two identical r_i, or T > D) the result is
    ``inf``; it is also ``inf`` for an all-zero matrix. The eigenvalues are
    computed in float64.
    """
    R = rotated_gram.detach().to(torch.float64)
    R = 0.5 * (R + R.transpose(0, 1))
    ev = torch.linalg.eigvalsh(R)
    lmax = ev[-1]
    lmin = ev[0]
    if not bool(lmax > 0) or bool(lmin <= floor * lmax):
        return torch.tensor(math.inf, dtype=rotated_gram.dtype, device=rotated_gram.device)
    return (lmax / lmin).to(dtype=rotated_gram.dtype, device=rotated_gram.device)


def mer_balance(conflict: Tensor | float, proximity: Tensor | float, cond: Tensor | float) -> Tensor:
    """Eq. 6: ``sqrt( 1/(1+conflict) * 1/(1+proximity) * 1/(1+cond) )`` (0 when cond is inf)."""
    c = torch.as_tensor(conflict, dtype=torch.float64)
    p = torch.as_tensor(proximity, dtype=torch.float64)
    k = torch.as_tensor(cond, dtype=torch.float64)
    return torch.sqrt(1.0 / ((1.0 + c) * (1.0 + p) * (1.0 + k)))


def miss_correction_errors(alpha: Tensor, alpha_star: Tensor) -> tuple[Tensor, Tensor]:
    """Definition 2.8: ``(GMAE, SD-MAE)`` of the angles ``alpha`` against ``alpha_star``.

    ``eps_i = alpha_i - alpha*_i`` (Def. 2.5), ``GMAE = mean |eps_i|`` and, exactly
    as the paper writes it, ``SD-MAE = sqrt(mean (eps_i - GMAE)^2)`` -- the signed
    errors are centred on the mean ABSOLUTE error (so it is not the standard
    deviation of ``|eps|`` when some eps_i < 0).
    """
    err = alpha - alpha_star
    gmae = err.abs().mean()
    sd = torch.sqrt(((err - gmae) ** 2).mean())
    return gmae, sd
