"""Eq. 2 of the RGB paper: the adaptive number of inner rotation steps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["relative_loss_change_std", "adaptive_num_steps"]


def _as_float64(x: Tensor | Sequence[float]) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    return torch.as_tensor([float(v) for v in x], dtype=torch.float64)


def relative_loss_change_std(
    losses: Tensor | Sequence[float], prev_losses: Tensor | Sequence[float], eps: float = 1e-8
) -> float:
    """``s_t = std_i (L_i^t - L_i^{t-1}) / (L_i^{t-1} + eps)`` (Eq. 2).

    The standard deviation is the unbiased one (divisor ``T - 1``, torch's
    default); for a single task it is defined as 0.
    """
    cur = _as_float64(losses)
    prev = _as_float64(prev_losses)
    if cur.shape != prev.shape:
        raise ValueError(f"losses and prev_losses differ in shape: {tuple(cur.shape)} vs {tuple(prev.shape)}")
    if cur.numel() < 2:
        return 0.0
    delta = (cur - prev) / (prev + eps)
    return float(delta.std(unbiased=True))


def adaptive_num_steps(
    losses: Tensor | Sequence[float],
    prev_losses: Tensor | Sequence[float] | None,
    min_steps: int,
    max_steps: int,
    k_std: float,
    eps: float = 1e-8,
) -> int:
    """Eq. 2: ``K_t = alpha_min + (alpha_max - alpha_min) s_t / (s_t + k_std)``, rounded.

    * ``prev_losses is None`` (first step) -> ``min_steps``.
    * rounding is half-up: ``floor(x + 0.5)``; the result lies in ``[min_steps, max_steps]``.
    * non-finite ``s_t`` (from NaN/inf losses) -> ``min_steps`` (no extra inner
      work on a step whose losses are broken).
    """
    if k_std <= 0:
        raise ValueError(f"k_std must be > 0, got {k_std}")
    if max_steps < min_steps:
        raise ValueError(f"max_steps ({max_steps}) < min_steps ({min_steps})")
    if prev_losses is None:
        return int(min_steps)
    s = relative_loss_change_std(losses, prev_losses, eps)
    if not math.isfinite(s):
        return int(min_steps)
    k = min_steps + (max_steps - min_steps) * (s / (s + k_std))
    return int(min(max(math.floor(k + 0.5), min_steps), max_steps))
