"""The batch format the ``Trainer`` reads, checked with errors that say what was expected.

One loader for all tasks (``multi_input=False``): every batch is ``(inputs, {task: labels})``.
One loader per task (``multi_input=True``): task ``t``'s batches are ``(inputs, labels)``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

BATCH_FORMAT = "(inputs, {task: labels}) with one key per task"


def check_labels(labels: Any, task_names: Sequence[str]) -> None:
    """Raise ``TypeError``/``KeyError`` unless ``labels`` maps every task name to its labels.

    >>> check_labels({"seg": 0, "depth": 1}, ["seg", "depth"])
    >>> check_labels([0, 1], ["seg", "depth"])
    Traceback (most recent call last):
    ...
    TypeError: a batch must be (inputs, {task: labels}) with one key per task; its labels are a list, not a dict ...
    """
    if not isinstance(labels, Mapping):
        raise TypeError(f"a batch must be {BATCH_FORMAT}; its labels are a {type(labels).__name__}, not a dict "
                        "(with multi_input=True, pass a dict {task: loader} instead)")
    missing = [task for task in task_names if task not in labels]
    if missing:
        raise KeyError(f"a batch must be {BATCH_FORMAT}; its labels lack task(s) {missing} (they have {list(labels)})")
