"""One step of Algorithm 1 (Rotation-Based Gradient Balancing) in Gram form.

The D-dimensional work is three reads of the gradient matrix ``G`` ([T, D]):
``G G^T`` and ``G d_{t-1}`` to start, one ``[2, T] @ [T, D]`` product to form
the update direction ``v`` and the new EMA ``d_t``. Everything between works on
T x T numbers, optionally on another device (``inner_device``). See
``docs/rgb_math.md`` for the identities and the cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .objective import (
    DEFAULT_INNER_LR,
    rotation_geometry,
    rotation_inner_products,
    solve_rotation_angles,
    solve_rotation_angles_exact_with_info,
)

__all__ = ["RGBStepResult", "rgb_step", "rgb_step_from_gramian", "normalized_gram", "ema_dtype"]


@dataclass
class RGBStepResult:
    """Output of :func:`rgb_step`.

    ``direction = task_coefficients @ grads + ema_coefficient * ema`` (up to the
    dtype of the final products).
    """

    direction: Tensor  # v, [D], dtype/device of the grads
    ema: Tensor  # d_t, [D], dtype ema_dtype(grads.dtype)
    angles: Tensor  # alpha after the inner solve, [T] (zeros when not rotated)
    rotated: bool
    steps: int  # inner iterations actually run (0 when not rotated)
    task_coefficients: Tensor  # a'_i, [T]
    ema_coefficient: Tensor  # b, scalar
    gram: Tensor  # P = Gbar Gbar^T, [T, T]
    rotated_gram: Tensor  # R_ij = r_i . r_j of the final normalised r_i, [T, T]
    rotated_cross: Tensor  # r_i . gbar_i, [T]
    ema_sq_norm: Tensor | None = None  # ||d_t||^2 in closed form, scalar; pass back as ema_sq_norm


def ema_dtype(dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of the EMA direction: the more precise of ``dtype`` and float32."""
    return torch.promote_types(dtype, torch.float32)


def _norms_from_raw_gram(raw: Tensor) -> Tensor:
    return torch.sqrt(torch.clamp(torch.diagonal(raw), min=0.0))


def normalized_gram(grads: Tensor, eps: float = 1e-8, *, compute_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """``(P, norms)`` with ``P = Gbar Gbar^T``, ``Gbar_i = g_i / (||g_i|| + eps)``.

    One GEMM on ``grads`` ([T, D]); the result is in ``compute_dtype``
    (default: the more precise of ``grads.dtype`` and float32).
    """
    cd = compute_dtype or ema_dtype(grads.dtype)
    raw = (grads @ grads.transpose(0, 1)).to(cd)
    norms = _norms_from_raw_gram(raw)
    scale = 1.0 / (norms + eps)
    return raw * scale.unsqueeze(1) * scale.unsqueeze(0), norms


def _no_autocast(device: torch.device):
    """Autocast off for the step: the Gram and the final products run in the grads' dtype."""
    if device.type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def rgb_step(
    grads: Tensor,
    ema: Tensor | None,
    *,
    mu: float = 0.9,
    lam: float = 0.0,
    steps: int = 5,
    lr: float = DEFAULT_INNER_LR,
    eps: float = 1e-8,
    rotate: bool = True,
    solver: str = "pgd",
    compute_dtype: torch.dtype | None = None,
    exact_tol: float = 1e-10,
    exact_max_iter: int = 10000,
    ema_sq_norm: Tensor | float | None = None,
    inner_device: torch.device | str | None = None,
) -> RGBStepResult:
    """One step of Algorithm 1 on the per-task gradients ``grads`` ([T, D]).

    Args:
        grads: per-task gradients ``G`` ([T, D]); not modified.
        ema: the previous EMA direction ``d_{t-1}`` ([D]) or ``None`` (``d_0 = 0``).
        mu, lam, eps: the paper's mu, lambda and epsilon.
        steps: number K of projected gradient steps on Eq. 1 (``solver="pgd"``).
        lr: inner learning rate of those steps.
        rotate: whether this is a rotation step (``t mod update_interval == 0``);
            the EMA is updated either way.
        solver: ``"pgd"`` (K steps from 0, the paper) or ``"exact"`` (Eq. 1 solved
            to ``exact_tol``, see :func:`solve_rotation_angles_exact`).
        compute_dtype: dtype of the T x T math (default: the more precise of
            ``grads.dtype`` and float32).
        ema_sq_norm: ``||d_{t-1}||^2`` as returned by the previous step
            (``RGBStepResult.ema_sq_norm``), used instead of a dot product over
            D. ``None``: computed from ``ema``. Ignored when ``ema`` is
            ``None``. It must belong to ``ema``: pass ``None`` whenever ``ema``
            was replaced from elsewhere (e.g. loaded from a checkpoint).
        inner_device: where the T x T problem (EMA in T-space, Eq. 1's solver,
            the output coefficients) runs; default: ``grads.device``. With
            ``"cpu"`` for CUDA grads, ``G G^T``, ``G d_{t-1}`` and
            ``||d_{t-1}||^2`` (T^2 + T + 1 numbers) go to the host in one
            copy (a sync) and the T-sized results come back in one copy; the
            K inner steps then launch no kernels. See ``docs/rgb_math.md``
            ("Cost") for the trade-off.

    Returns:
        :class:`RGBStepResult`; ``direction`` has the dtype/device of ``grads``;
        ``ema`` is stored in ``ema_dtype(grads.dtype)``. For float32/float64
        grads, ``direction`` and ``ema`` are the two rows of one ``[2, D]`` buffer
        (no extra allocation); treat ``ema`` as read-only state. All T-sized
        results are on ``grads.device``, whatever ``inner_device``.

    Autocast is disabled inside (the GEMMs run in ``grads.dtype``, the T x T math
    in ``compute_dtype``), so calling it under ``torch.autocast`` is safe.
    """
    if grads.dim() != 2:
        raise ValueError(f"grads must be [T, D], got shape {tuple(grads.shape)}")
    with _no_autocast(grads.device):
        return _rgb_step(grads, ema, mu, lam, steps, lr, eps, rotate, solver, compute_dtype, exact_tol, exact_max_iter,
                         ema_sq_norm, inner_device)


class _TaskSpaceStep(NamedTuple):
    """The T-sized results of a step (all in the compute dtype, on one device)."""

    gram: Tensor  # P, [T, T]
    angles: Tensor  # alpha, [T]
    task_coefficients: Tensor  # a', [T]
    ema_coefficient: Tensor  # b, []
    rotated_gram: Tensor  # [T, T]
    rotated_cross: Tensor  # [T]
    ema_sq_norm: Tensor  # ||d_t||^2, []
    product_rows: Tensor  # [a' + b c'; c'], [2, T]: the coefficients of the product with G
    prev_weights: Tensor  # [b mu, mu], [2]: the weights of d_{t-1} in (v, d_t)


def _on_device(tensors: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """``tensors`` on ``device``; those elsewhere travel packed in ONE copy (one sync, not one each)."""
    away = [i for i, t in enumerate(tensors) if t.device != device]
    if not away:
        return list(tensors)
    packed = torch.cat([tensors[i].reshape(-1) for i in away]).to(device)
    moved = list(tensors)
    parts = packed.split([tensors[i].numel() for i in away])
    for i, part in zip(away, parts):
        moved[i] = part.view(tensors[i].shape)
    return moved


def _resolve_device(device: torch.device | str | None, default: torch.device) -> torch.device:
    if device is None:
        return default
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"inner_device must be a torch.device, a device string or None, got {device!r}") from err
    if resolved.type == default.type and resolved.index is None:
        return default  # "cuda" for grads on "cuda:0" means no transfer
    return resolved


def _previous_sq_norm(d_prev: Tensor, ema_sq_norm: Tensor | float | None, cd: torch.dtype) -> Tensor:
    """``||d_{t-1}||^2``: the carried value when given, else one dot product over D."""
    if ema_sq_norm is None:
        return torch.dot(d_prev, d_prev).to(cd)
    carried = torch.as_tensor(ema_sq_norm, dtype=cd)  # a Python float straight to cd, not via float32
    if carried.numel() != 1:
        raise ValueError(f"ema_sq_norm must be a scalar, got shape {tuple(carried.shape)}")
    return carried.reshape(())


def _task_space_step(raw: Tensor, u: Tensor, dd_prev: Tensor, mu, lam, steps, lr, eps, rotate, solver,
                     exact_tol, exact_max_iter) -> tuple[_TaskSpaceStep, int]:
    """Everything of a step between the two passes over G, from ``G G^T``, ``G d_{t-1}``
    and ``||d_{t-1}||^2``: O(T^2) per inner step, nothing of size D."""
    T = raw.shape[0]
    norms = _norms_from_raw_gram(raw)
    scale = 1.0 / (norms + eps)  # Gbar = diag(scale) G
    P = raw * scale.unsqueeze(1) * scale.unsqueeze(0)
    q_prev = u * scale  # Gbar d_{t-1}

    # ---- EMA (Algorithm 1, lines 4-5) ------------------------------------------------
    # y = Gbar^T 1/T;  ||y||^2 = 1^T P 1 / T^2;  d_t = mu d_{t-1} + kappa y
    ny = torch.sqrt(torch.clamp(P.sum(), min=0.0)) / T
    kappa = (1.0 - mu) / (ny + eps)
    Py = P.sum(dim=1) / T  # Gbar y
    q = mu * q_prev + kappa * Py  # Gbar d_t
    y_dot_dprev = q_prev.mean()  # y . d_{t-1}
    dd = mu * mu * dd_prev + 2.0 * mu * kappa * y_dot_dprev + kappa * kappa * ny * ny
    dd = torch.clamp(dd, min=0.0)
    ema_coef_g = kappa * scale / T  # c': d_t = mu d_{t-1} + G^T c'

    # ---- rotation (lines 6-12) -------------------------------------------------------
    if rotate:
        geom = rotation_geometry(P, q, dd, eps)
        if solver == "pgd":
            alpha = solve_rotation_angles(geom, lam, steps, lr)
            used = int(steps)
        else:
            alpha, used, _ = solve_rotation_angles_exact_with_info(geom, lam, exact_tol, exact_max_iter)
        RR, X, _ = rotation_inner_products(alpha, geom)
        nr = torch.sqrt(torch.clamp(torch.diagonal(RR), min=0.0))
        inv_nr = 1.0 / (nr + eps)
        rotated_gram = RR * inv_nr.unsqueeze(1) * inv_nr.unsqueeze(0)
        rotated_cross = torch.diagonal(X) * inv_nr
        # r_i = [(cos a_i - sin a_i q_i/(m_i+eps)) gbar_i + sin a_i/(m_i+eps) d_t] / (||r_i(a)|| + eps)
        c = torch.cos(alpha)
        s = torch.sin(alpha)
        inv_m = geom.inv_m
        a_bar = (c - s * q * inv_m) * inv_nr / T  # coefficients on gbar_i
        b = (s * inv_m * inv_nr).sum() / T
        task_coef = a_bar * scale
    else:
        alpha = P.new_zeros(T)
        used = 0
        rotated_gram = P.clone()
        rotated_cross = torch.diagonal(P).clone()
        task_coef = scale / T
        b = P.new_zeros(())
    # v = G^T a' + b d_t = G^T (a' + b c') + b mu d_{t-1}
    product_rows = torch.stack([task_coef + b * ema_coef_g, ema_coef_g])
    prev_weights = torch.stack([b * mu, b.new_full((), mu)])
    result = _TaskSpaceStep(
        gram=P, angles=alpha, task_coefficients=task_coef, ema_coefficient=b, rotated_gram=rotated_gram,
        rotated_cross=rotated_cross, ema_sq_norm=dd, product_rows=product_rows, prev_weights=prev_weights,
    )
    return result, used


def _rgb_step(grads, ema, mu, lam, steps, lr, eps, rotate, solver, compute_dtype, exact_tol, exact_max_iter,
              ema_sq_norm, inner_device):
    if solver not in ("pgd", "exact"):
        raise ValueError(f"solver must be 'pgd' or 'exact', got {solver!r}")
    T, D = grads.shape
    gd = grads.dtype
    sd = ema_dtype(gd)
    cd = compute_dtype or sd
    dev = grads.device
    inner = _resolve_device(inner_device, dev)

    # ---- pass 1 over G: G G^T and G d_{t-1}; ||d_{t-1}||^2 carried or one dot ----------
    raw = (grads @ grads.transpose(0, 1)).to(cd)
    if ema is None:
        d_prev = None
        u = raw.new_zeros(T)  # G d_{t-1}
        dd_prev = raw.new_zeros(())
    else:
        if ema.shape != (D,):
            raise ValueError(f"ema must have shape ({D},), got {tuple(ema.shape)}")
        d_prev = ema.to(device=dev, dtype=sd)
        u = (grads @ d_prev.to(gd)).to(cd)
        dd_prev = _previous_sq_norm(d_prev, ema_sq_norm, cd)
        if dd_prev.device not in (dev, inner):
            dd_prev = dd_prev.to(dev)

    return _finish_step(raw, u, dd_prev, d_prev, lambda rows: rows @ grads, gd, dev, inner,
                        mu, lam, steps, lr, eps, rotate, solver, exact_tol, exact_max_iter)


def _finish_step(raw, u, dd_prev, d_prev, combine, gd, dev, inner, mu, lam, steps, lr, eps, rotate, solver,
                 exact_tol, exact_max_iter) -> RGBStepResult:
    """The step after pass 1: the T x T problem, then pass 2 (``combine(rows) = rows @ G``)."""
    sd = ema_dtype(gd)
    # ---- the T x T problem, on ``inner`` (one packed copy each way when it is elsewhere) ----
    raw, u, dd_prev = _on_device([raw, u, dd_prev], inner)
    small, used = _task_space_step(raw, u, dd_prev, mu, lam, steps, lr, eps, rotate, solver,
                                   exact_tol, exact_max_iter)
    small = _TaskSpaceStep(*_on_device(small, dev))

    # ---- pass 2 over G: [a' + b c'; c'] @ G, then (v, d_t) += (b mu, mu) d_{t-1} --------
    # (in place on the fresh [2, D] product: ``direction`` and ``ema`` are its two rows)
    out = combine(small.product_rows.to(gd)).to(sd)  # [2, D]
    if d_prev is not None:
        if rotate:
            out.addr_(small.prev_weights.to(sd), d_prev)  # one pass reading d_{t-1} for both rows
        else:
            out[1].add_(d_prev, alpha=mu)  # b = 0: v does not need d_{t-1}
    return RGBStepResult(
        direction=out[0].to(gd),
        ema=out[1],
        angles=small.angles,
        rotated=bool(rotate),
        steps=used,
        task_coefficients=small.task_coefficients,
        ema_coefficient=small.ema_coefficient,
        gram=small.gram,
        rotated_gram=small.rotated_gram,
        rotated_cross=small.rotated_cross,
        ema_sq_norm=small.ema_sq_norm,
    )


def rgb_step_from_gramian(
    gram: Tensor,
    ema_product: Tensor | None,
    combine: Callable[[Tensor], Tensor],
    ema: Tensor | None,
    *,
    mu: float = 0.9,
    lam: float = 0.0,
    steps: int = 5,
    lr: float = DEFAULT_INNER_LR,
    eps: float = 1e-8,
    rotate: bool = True,
    solver: str = "pgd",
    compute_dtype: torch.dtype | None = None,
    exact_tol: float = 1e-10,
    exact_max_iter: int = 10000,
    ema_sq_norm: Tensor | float | None = None,
) -> RGBStepResult:
    """:func:`rgb_step` without the matrix ``G``: from ``gram = G Gᵀ`` ([T, T]), ``ema_product =
    G d_{t-1}`` ([T]; ``None`` with ``ema=None``) and ``combine(rows) = rows @ G`` ([k, T] →
    [k, D], called once with the two rows of pass 2). Same options and result as
    :func:`rgb_step` (``docs/rgb_math.md`` §2: a step reads ``G`` only through these three)."""
    if solver not in ("pgd", "exact"):
        raise ValueError(f"solver must be 'pgd' or 'exact', got {solver!r}")
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be [T, T], got shape {tuple(gram.shape)}")
    T = gram.shape[0]
    gd = gram.dtype
    sd = ema_dtype(gd)
    cd = compute_dtype or sd
    dev = gram.device
    with _no_autocast(dev):
        raw = gram.to(cd)
        if ema is None:
            d_prev = None
            u = raw.new_zeros(T)
            dd_prev = raw.new_zeros(())
        else:
            if ema_product is None or ema_product.shape != (T,):
                raise ValueError(f"ema_product must be G d_(t-1) of shape ({T},) when ema is given")
            d_prev = ema.to(device=dev, dtype=sd)
            u = ema_product.to(device=dev, dtype=cd)
            dd_prev = _previous_sq_norm(d_prev, ema_sq_norm, cd)
        return _finish_step(raw, u, dd_prev, d_prev, combine, gd, dev, dev, mu, lam, steps, lr, eps, rotate, solver,
                            exact_tol, exact_max_iter)
