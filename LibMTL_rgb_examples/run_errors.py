"""How an example's run ends when something goes wrong during it: one ``main.py: error: ...``
line instead of a traceback, for the conditions the user can act on.

- a non-finite loss/gradient (``nonfinite.NonFiniteError``), a checkpoint that cannot be used
  (``checkpoint.CheckpointError``), a data file that cannot be read
  (``input_files.InputDataError``, also when raised in a DataLoader worker): exit code 1;
- a training batch of one sample reaching a BatchNorm layer (PyTorch's "Expected more than 1
  value per channel"): said in those words, exit code 1;
- an output that cannot be written (``atomic_io.OutputWriteError``: disk full, read-only file
  system, no permission, ``torch.save``'s ``inline_container`` error): the path, the cause and
  what was kept (that file is unchanged; the checkpoints in the run directory), exit code 1;
- Ctrl-C: how to continue (``--resume``), exit code 130 (128 + SIGINT, as shells report it).
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Iterator, Optional

import torch.nn as nn

from LibMTL_rgb.atomic_io import OutputWriteError
from LibMTL_rgb.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, CheckpointError
from LibMTL_rgb_examples.input_files import InputDataError, worker_message
from LibMTL_rgb.nonfinite import NonFiniteError

#: Exit code of a run stopped by Ctrl-C (SIGINT).
INTERRUPTED_EXIT_CODE = 130
BATCHNORM_SINGLE_SAMPLE = "Expected more than 1 value per channel when training"

__all__ = ["INTERRUPTED_EXIT_CODE", "one_line_errors", "check_batchnorm_batch", "write_failure_message"]

#: What to do about a refused write, by ``errno`` (None: ``torch.save``'s error).
WRITE_ADVICE = {
    errno.ENOSPC: "free disk space", errno.EDQUOT: "free space within your quota",
    errno.EROFS: "the file system is read-only: remount it read-write or choose another --save_path",
    errno.EACCES: "allow writing there or choose another --save_path",
    errno.EPERM: "allow writing there or choose another --save_path",
    None: "check the free space",
}


def _program() -> str:
    return os.path.basename(sys.argv[0]) or "main.py"


@contextlib.contextmanager
def one_line_errors(save_path: "str | None") -> Iterator[None]:
    """Turn the errors listed in the module docstring into one-line exits."""
    try:
        yield
    except (NonFiniteError, CheckpointError, InputDataError) as err:
        raise SystemExit(f"{_program()}: error: {worker_message(err)}") from None
    except OutputWriteError as err:
        raise SystemExit(f"{_program()}: error: {write_failure_message(err, save_path)}") from None
    except KeyboardInterrupt:
        saved = save_path and os.path.isfile(os.path.join(save_path, LAST_CHECKPOINT))
        how = f"continue with --resume {save_path}" if saved else "no finished epoch was saved"
        print(f"{_program()}: interrupted; {how}", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    except ValueError as err:
        if BATCHNORM_SINGLE_SAMPLE not in str(err):
            raise
        raise SystemExit(f"{_program()}: error: a training batch of one sample reached a BatchNorm layer, which "
                         "cannot normalise a single value per channel; choose --bs so that no batch (the last one "
                         "included) holds a single sample") from None


def write_failure_message(err: OutputWriteError, save_path: Optional[str]) -> str:
    """``cannot write PATH: CAUSE; kept: ...; what to do`` for a refused write."""
    kept = [f"{err.filename} is unchanged" + ("" if os.path.exists(str(err.filename)) else " (it did not exist)")]
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        path = os.path.join(save_path, name) if save_path else None
        if path and os.path.isfile(path) and os.path.abspath(path) != os.path.abspath(str(err.filename)):
            kept.append(f"{path} is intact")
    advice = WRITE_ADVICE.get(err.errno, "")
    resume = save_path and os.path.isfile(os.path.join(save_path, LAST_CHECKPOINT))
    then = f"then continue with --resume {save_path}" if resume else "then run again"
    return f"cannot write {err.filename}: {err.strerror}; kept: {', '.join(kept)}; {advice + ', ' if advice else ''}{then}"


def check_batchnorm_batch(model: nn.Module, batch_size: int) -> None:
    """``--bs 1`` cannot train a model with BatchNorm layers: say so before training."""
    if batch_size == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise SystemExit(f"{_program()}: error: --bs 1 cannot train this model: its BatchNorm layers need at least "
                         "2 samples per batch; use --bs 2 or more")
