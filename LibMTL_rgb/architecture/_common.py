"""Small helpers shared by the architectures: the ``--img_size`` option, task selection in
``forward(inputs, task_name)``, and shape probing at construction."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.registry import ARCHITECTURES, Hyperparameter

IMG_SIZE = Hyperparameter(
    "img_size", None,
    "size of one input sample, e.g. 3 288 384 (MMoE, CGC, PLE, DSelect_k: sizes the gates, which "
    "read the flattened input; MTAN: optional probe size to infer channel counts)",
    type=int, nargs="+", minimum=1,
)
TASK_STAGES = Hyperparameter(
    "task_stages", None,
    "give each task its own branch only on the encoder's last N stages (MTAN: its attention masks; CGC / PLE: "
    "the experts, gated per task), the earlier stages being one shared trunk run once; needs an encoder with "
    "stages; default: every stage (LibMTL's)",
    type=int, minimum=1,
)


def first_task_stage(num_stages: int, task_stages: Optional[int]) -> int:
    """Index of the first stage with task-specific branches: 0 (every stage, LibMTL's) when
    ``task_stages`` is None or at least ``num_stages``.

    >>> first_task_stage(5, None), first_task_stage(5, 2), first_task_stage(5, 9)
    (0, 3, 0)
    """
    if task_stages is None:
        return 0
    return max(0, num_stages - int(TASK_STAGES.check(task_stages)))


#: Spatial size of the probe image when MTAN infers its channel counts without ``img_size``.
DEFAULT_PROBE_SIDE = 64


def selected_tasks(task_names: Sequence[str], task_name: Optional[str]) -> list[str]:
    """All tasks, or only ``task_name`` (``forward(inputs, task_name)``, e.g. with multi_input)."""
    if task_name is None:
        return list(task_names)
    if task_name not in task_names:
        raise ValueError(f"unknown task {task_name!r}; tasks are {list(task_names)}")
    return [task_name]


def require_img_size(img_size: Optional[Sequence[int]], arch: str) -> tuple[int, ...]:
    """``img_size`` as a tuple of positive ints, or a ``ValueError`` saying what is needed."""
    if img_size is None:
        raise ValueError(
            f"{arch} needs arch_args['img_size'] (--img_size), the size of one input sample such as "
            "3 288 384: its gates read the flattened input, so their size depends on it"
        )
    size = tuple(int(s) for s in img_size)
    if not size or any(s < 1 for s in size):
        raise ValueError(f"img_size must be positive integers, got {list(img_size)}")
    return size


def flat_size(shape: Sequence[int]) -> int:
    """Number of features of one sample of a tensor of shape ``[B, *shape]``."""
    return math.prod(shape)


@contextlib.contextmanager
def probing(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without gradients in eval mode (no BatchNorm statistics change), then
    restore every submodule's training flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def probe_input(encoder: nn.Module, img_size: Optional[Sequence[int]], arch: str) -> Tensor:
    """A zero batch of two samples to trace shapes, on the encoder's device and in its dtype:
    ``img_size`` when given, else a ``DEFAULT_PROBE_SIDE``² image with the input channels of the
    encoder's first convolution."""
    param = next(encoder.parameters(), None)
    like: dict[str, Any] = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    if img_size is not None:
        return torch.zeros(2, *require_img_size(img_size, arch), **like)
    first_conv = next((m for m in encoder.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise TypeError(f"{arch} needs a convolutional encoder (found no nn.Conv2d in {type(encoder).__name__})")
    return torch.zeros(2, first_conv.in_channels, DEFAULT_PROBE_SIDE, DEFAULT_PROBE_SIDE, **like)


def architecture_name(model: nn.Module) -> str:
    """The registered name of ``model``'s architecture (``MTLmodel`` subclasses included)."""
    for klass in type(model).__mro__:
        if klass.__name__ in ARCHITECTURES and ARCHITECTURES.get(klass.__name__) is klass:
            return klass.__name__
    return type(model).__name__
