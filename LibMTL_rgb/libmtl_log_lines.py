"""LibMTL's printed training log, character for character, for ``--log_format libmtl``.

For scripts that parse LibMTL's logs: the ``LOG FORMAT`` header, one line per epoch
(``Epoch: 0003 | TRAIN: <losses and metrics> | Time: 1.2345 | VAL: ... | TEST: ...``) and the
best result printed as LibMTL's dict.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

SEPARATOR = "=" * 40
MODE_NAMES = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def libmtl_header(task_dict: Mapping[str, Mapping[str, Any]]) -> str:
    """LibMTL's header: a rule, then ``LOG FORMAT | seg_LOSS mIoU pixAcc | ... | TIME``."""
    columns = "".join(f"{task}_LOSS " + "".join(f"{m} " for m in spec["metrics"]) + "| " for task, spec in task_dict.items())
    return f"{SEPARATOR}\nLOG FORMAT | {columns}TIME"


def libmtl_row(mode: str, epoch: Optional[int], losses: "Sequence[float] | np.ndarray", results: Mapping[str, Sequence[float]],
               seconds: float) -> str:
    """One mode's part of LibMTL's epoch line: ``Epoch: NNNN | `` before TRAIN, ``' | '`` after
    TRAIN and VAL, a newline after TEST (so the three parts make one line)."""
    prefix = f"Epoch: {epoch:04d} | " if mode == "train" else ""
    cells = "".join(f"{loss:.4f} " + "".join(f"{v:.4f} " for v in values) + "| "
                    for loss, values in zip(losses, results.values()))
    return f"{prefix}{MODE_NAMES[mode]}: {cells}Time: {seconds:.4f}" + ("\n" if mode == "test" else " | ")


def libmtl_best_result(epoch: int, result: Optional[Mapping[str, Sequence[float]]]) -> str:
    """LibMTL's closing lines: ``Best Result: Epoch N, result {task: [values]}`` between rules
    (``result 0`` before any evaluation, as LibMTL)."""
    return f"{SEPARATOR}\nBest Result: Epoch {epoch}, result {0 if result is None else dict(result)}\n{SEPARATOR}"
