"""The two-objective toy problem of CAGrad (Liu et al., 2021), reused by Nash-MTL, FAMO and
the RGB paper (App. A.10, Fig. 6), as LibMTL pieces: an encoder that *is* the point x ∈ R²
and one parameter-free decoder per task that evaluates f_i(x).

With ``t = tanh(-x2)``, ``c1 = max(tanh(x2/2), 0)`` and ``c2 = max(tanh(-x2/2), 0)``:

    f1(x) = scale · [ c1 (log max(|(-x1 - 7)/2 - t|, LOWER) + 6)
                      + c2 (((x1 - 7)² + 0.1 (x2 + 8)²) / 10 - 20) ]
    f2(x) =          c1 (log max(|(-x1 + 3)/2 + t + 2|, LOWER) + 6)
                      + c2 (((x1 + 7)² + 0.1 (x2 + 8)²) / 10 - 20)

For x2 > 0 the losses are log-abs valleys, for x2 < 0 quadratic bowls; the Pareto set is
close to the segment x1 ∈ [-7, 7], x2 ≈ -8.36. Nash-MTL and FAMO scale f1 by 0.1 (CAGrad
does not), so the two losses have different magnitudes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

#: Lower clamp inside the logarithms (keeps the losses finite on the valleys' floors).
LOWER = 5e-6
#: Task names, in order.
TASKS = ("f1", "f2")
#: Scale of f1 used by Nash-MTL's and FAMO's toy (the paper ran FAMO's code).
DEFAULT_SCALE = 0.1
#: The five initial points of Nash-MTL's and FAMO's toy (so of the paper's Fig. 6).
FAMO_STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
#: CAGrad's three initial points (-8.5, 7.5), (-8.5, -5), (9, 9), plus (0, 0) and (10, -8).
CAGRAD_EXT_STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (0.0, 0.0), (9.0, 9.0), (10.0, -8.0))
#: Named sets of initial points (``--starts``).
START_SETS = {"famo": FAMO_STARTS, "cagrad_ext": CAGRAD_EXT_STARTS}
#: Shift of the losses the weighting sees: f1 + SHIFT·scale, f2 + SHIFT (FAMO's toy subtracts
#: the lower bounds -21·scale and -21 the same way), so they are positive for loss-based
#: methods (FAMO, SI, DWA...). A constant shift leaves every gradient unchanged.
DEFAULT_LOSS_SHIFT = 21.0
#: The square [-LIMIT, LIMIT]² of x-space that is plotted and searched for the Pareto front.
DOMAIN_LIMIT = 11.0


def _gate(value: Tensor) -> Tensor:
    """``max(value, 0)`` whose gradient at ``value = 0`` is 1, as ``torch.clamp``'s was when the
    CAGrad/Nash-MTL/FAMO toys were written; today's ``clamp`` gives 0 there, which would leave
    the start (0, 0) (where both gates are 0) without any gradient."""
    return torch.where(value >= 0, value, torch.zeros_like(value))


def toy_loss(x: Tensor, task_index: int, scale: float = DEFAULT_SCALE) -> Tensor:
    """``f1(x)`` (``task_index`` 0) or ``f2(x)`` (1) for points ``x`` of shape ``[..., 2]``."""
    if x.shape[-1] != 2:
        raise ValueError(f"toy points need a last dimension of size 2, got shape {tuple(x.shape)}")
    if task_index not in (0, 1):
        raise ValueError(f"task_index must be 0 (f1) or 1 (f2), got {task_index}")
    x1, x2 = x[..., 0], x[..., 1]
    # Task 0 (f1): valley along (-x1 - 7)/2 = tanh(-x2), bowl centred at x1 = 7;
    # task 1 (f2): valley along (-x1 + 3)/2 + 2 = -tanh(-x2), bowl centred at x1 = -7.
    sign, offset, centre, factor = (-1.0, -3.5, 7.0, scale) if task_index == 0 else (1.0, 3.5, -7.0, 1.0)
    valley = torch.clamp((-0.5 * x1 + offset + sign * torch.tanh(-x2)).abs(), min=LOWER).log() + 6.0
    bowl = ((x1 - centre).pow(2) + 0.1 * (x2 + 8.0).pow(2)) / 10.0 - 20.0
    valley_gate = _gate(torch.tanh(0.5 * x2))
    bowl_gate = _gate(torch.tanh(-0.5 * x2))
    return factor * (valley_gate * valley + bowl_gate * bowl)


def toy_losses(x: Tensor, scale: float = DEFAULT_SCALE) -> Tensor:
    """``[f1(x), f2(x)]`` for points ``x`` of shape ``[..., 2]``; returns shape ``[..., 2]``."""
    return torch.stack([toy_loss(x, 0, scale), toy_loss(x, 1, scale)], dim=-1)


class ToyPoint(nn.Module):
    """The shared "encoder": holds the point x (the only parameter) and returns it as a
    batch of one, ``[1, 2]``, whatever the input (so ``rep_grad`` sees an identity map)."""

    def __init__(self, start: Sequence[float], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if len(start) != 2:
            raise ValueError(f"a toy start point has 2 coordinates, got {start!r}")
        self.x = nn.Parameter(torch.tensor([float(v) for v in start], dtype=dtype))

    def forward(self, inputs: object = None) -> Tensor:
        return self.x.unsqueeze(0)


class ToyObjective(nn.Module):
    """A parameter-free "decoder": ``f_i`` of the point it receives (``[1, 2]`` -> scalar),
    plus ``shift`` (times ``scale`` for f1, see :data:`DEFAULT_LOSS_SHIFT`)."""

    def __init__(self, task_index: int, scale: float = DEFAULT_SCALE, shift: float = DEFAULT_LOSS_SHIFT) -> None:
        super().__init__()
        if task_index not in range(len(TASKS)):
            raise ValueError(f"task_index must be 0 or 1, got {task_index}")
        self.task_index = task_index
        self.scale = scale
        self.offset = shift * (scale if task_index == 0 else 1.0)

    def forward(self, rep: Tensor) -> Tensor:
        return toy_loss(rep[0], self.task_index, self.scale) + self.offset


def toy_decoders(scale: float = DEFAULT_SCALE, shift: float = DEFAULT_LOSS_SHIFT) -> nn.ModuleDict:
    """One :class:`ToyObjective` per task of :data:`TASKS`."""
    return nn.ModuleDict({task: ToyObjective(i, scale, shift) for i, task in enumerate(TASKS)})


def parse_starts(text: str) -> tuple[tuple[float, float], ...]:
    """``'famo'``/``'cagrad_ext'`` or explicit points ``'x1,x2;x1,x2;...'``."""
    if text in START_SETS:
        return START_SETS[text]
    points = []
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        parts = chunk.split(",")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != 2:
            raise ValueError(
                f"bad start point {chunk!r}: use a named set ({', '.join(START_SETS)}) "
                "or points 'x1,x2;x1,x2;...'"
            )
        points.append(values)
    if not points:
        raise ValueError("no start points given")
    return tuple(points)
