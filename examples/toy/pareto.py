"""The Pareto front of a two-objective problem on a square of R², computed (not typed in):
dense grid sampling, a non-dominated filter in loss space, then a finer grid over the region
where the non-dominated points lie; plus the distance of loss pairs to that front."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

LossFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ParetoFront:
    """Non-dominated samples: ``losses`` ``[K, 2]`` sorted by f1 ascending (so f2 descending)
    and the points ``points`` ``[K, 2]`` of x-space that attain them (float64)."""

    losses: Tensor
    points: Tensor

    def __len__(self) -> int:
        return len(self.losses)


def non_dominated_mask(losses: Tensor) -> Tensor:
    """``[N]`` bool: which rows of ``losses`` (``[N, 2]``, both minimised) no other row
    dominates (≤ in both, < in one). Of exact duplicates one is kept. O(N log N)."""
    if losses.dim() != 2 or losses.shape[1] != 2:
        raise ValueError(f"losses must have shape [N, 2], got {tuple(losses.shape)}")
    # Lexicographic order (f1, then f2): a row is non-dominated iff its f2 is below every
    # f2 before it.
    by_f2 = torch.sort(losses[:, 1], stable=True).indices
    order = by_f2[torch.sort(losses[by_f2, 0], stable=True).indices]
    f2 = losses[order, 1]
    best_before = torch.cummin(f2, dim=0).values
    keep_sorted = torch.ones_like(f2, dtype=torch.bool)
    keep_sorted[1:] = f2[1:] < best_before[:-1]
    mask = torch.zeros(len(losses), dtype=torch.bool, device=losses.device)
    mask[order[keep_sorted]] = True
    return mask


def _grid(low: Tensor, high: Tensor, resolution: int) -> Tensor:
    axes = [torch.linspace(float(low[k]), float(high[k]), resolution, dtype=torch.float64) for k in range(2)]
    grid_x1, grid_x2 = torch.meshgrid(*axes, indexing="xy")
    return torch.stack([grid_x1.reshape(-1), grid_x2.reshape(-1)], dim=-1)


def _front_of(loss_fn: LossFn, points: Tensor) -> ParetoFront:
    losses = loss_fn(points)
    mask = non_dominated_mask(losses)
    front_losses, front_points = losses[mask], points[mask]
    order = torch.argsort(front_losses[:, 0])
    return ParetoFront(front_losses[order], front_points[order])


def pareto_front(
    loss_fn: LossFn, limit: float, coarse: int = 401, fine: int = 1001, max_points: int = 2000
) -> ParetoFront:
    """The Pareto front of ``loss_fn`` (``[N, 2]`` points -> ``[N, 2]`` losses) over the square
    ``[-limit, limit]²``: a ``coarse``² grid finds where the front lies, a ``fine``² grid over
    that box (grown by two coarse cells) resolves it, and at most ``max_points`` samples,
    evenly spaced along the front, are kept. Each sample is exact; the front is as fine as
    the grid (about 10⁻³ of the loss range here)."""
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    if coarse < 2 or fine < 2:
        raise ValueError(f"grid resolutions must be >= 2, got coarse={coarse}, fine={fine}")
    bound = torch.tensor([limit, limit], dtype=torch.float64)
    rough = _front_of(loss_fn, _grid(-bound, bound, coarse))
    cell = 2.0 * limit / (coarse - 1)
    low = torch.maximum(rough.points.min(dim=0).values - 2 * cell, -bound)
    high = torch.minimum(rough.points.max(dim=0).values + 2 * cell, bound)
    return _thin(_front_of(loss_fn, _grid(low, high, fine)), max_points)


def _thin(front: ParetoFront, max_points: int) -> ParetoFront:
    """At most ``max_points`` samples, evenly spaced in arc length (both ends kept)."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if len(front) <= max_points:
        return front
    steps = (front.losses[1:] - front.losses[:-1]).norm(dim=-1)
    arc = torch.cat([steps.new_zeros(1), torch.cumsum(steps, dim=0)])
    targets = torch.linspace(0.0, float(arc[-1]), max_points, dtype=arc.dtype)
    keep = torch.unique(torch.searchsorted(arc, targets).clamp_max(len(front) - 1))
    return ParetoFront(front.losses[keep], front.points[keep])


def distance_to_front(losses: Tensor, front: ParetoFront) -> Tensor:
    """Euclidean distance in loss space from each row of ``losses`` (``[M, 2]``) to the front,
    taken as the polyline through its samples in f1 order (this toy's front is one curve)."""
    if losses.dim() != 2 or losses.shape[1] != 2:
        raise ValueError(f"losses must have shape [M, 2], got {tuple(losses.shape)}")
    query = losses.to(torch.float64).unsqueeze(1)  # [M, 1, 2]
    samples = front.losses
    if len(samples) == 1:
        return (query[:, 0] - samples[0]).norm(dim=-1)
    start, end = samples[:-1], samples[1:]  # segments [K-1, 2]
    segment = end - start
    length_sq = (segment * segment).sum(-1).clamp_min(torch.finfo(torch.float64).tiny)
    along = (((query - start) * segment).sum(-1) / length_sq).clamp(0.0, 1.0)  # [M, K-1]
    nearest = start + along.unsqueeze(-1) * segment
    return (query - nearest).norm(dim=-1).min(dim=1).values
