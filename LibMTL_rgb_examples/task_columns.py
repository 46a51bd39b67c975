"""Labels as columns: many-task datasets (QM9's 11 targets, CelebA's 40 attributes) keep all
of a sample's labels in one row. :class:`TaskColumnLoader` turns each batch's ``[B, T]`` label
matrix into LibMTL's ``{task: [B, 1]}`` dict, so the Trainer receives ``(inputs, labels)``."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

from torch import Tensor


def split_task_columns(matrix: Tensor, task_name: Sequence[str]) -> dict[str, Tensor]:
    """``{task_name[k]: matrix[:, k:k+1]}`` for a ``[B, T]`` label matrix."""
    if matrix.dim() != 2 or matrix.shape[1] != len(task_name):
        raise ValueError(
            f"expected a [batch, {len(task_name)}] label matrix (one column per task), got shape {tuple(matrix.shape)}"
        )
    return {task: matrix[:, k : k + 1] for k, task in enumerate(task_name)}


def inputs_and_label_matrix(batch: Any) -> tuple[Any, Tensor]:
    """The default unpacking: the loader yields ``(inputs, label_matrix)`` pairs."""
    inputs, matrix = batch
    return inputs, matrix


class TaskColumnLoader:
    """Wraps a loader so each batch becomes ``(inputs, {task: [B, 1] labels})``.

    Args:
        loader: any re-iterable with ``len`` (a ``torch.utils.data.DataLoader``, PyG's
            ``DataLoader``...).
        task_name: one task per label column, in column order.
        unpack: ``batch -> (inputs, [B, T] label matrix)``; e.g. ``lambda b: (b, b.y)`` for a
            PyG batch whose ``y`` holds the targets.
    """

    def __init__(
        self,
        loader: Iterable,
        task_name: Sequence[str],
        unpack: Callable[[Any], tuple[Any, Tensor]] = inputs_and_label_matrix,
    ) -> None:
        self.loader = loader
        self.task_name = list(task_name)
        self.unpack = unpack

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Tensor]]]:
        for batch in self.loader:
            inputs, matrix = self.unpack(batch)
            yield inputs, split_task_columns(matrix, self.task_name)

    @property
    def wrapped_loader(self) -> Iterable:
        """The loader this one wraps (the loader contract, ``LibMTL_rgb.distributed.data``)."""
        return self.loader

    def with_loader(self, loader: Iterable) -> "TaskColumnLoader":
        """The same column split around ``loader`` (e.g. one process's shard of it)."""
        return TaskColumnLoader(loader, self.task_name, self.unpack)
