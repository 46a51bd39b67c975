"""Reading the examples' data files with errors that name the file.

A truncated ``.npy`` or an unreadable image otherwise fails deep inside NumPy or PIL (often in
a DataLoader worker) with a message that does not say which file is broken. Here each read
raises :class:`CorruptInputError` naming the file and what to do. The examples report every
:class:`InputDataError` as one ``error:`` line (:func:`install_input_error_hook`).
"""
from __future__ import annotations

import os
import sys
from typing import Literal, Optional

import numpy as np

__all__ = ["InputDataError", "CorruptInputError", "InvalidLabelError", "load_npy", "open_image", "check_class_labels",
           "install_input_error_hook"]

#: Class id of an unlabelled pixel (LibMTL's and MTAN's ``-1``).
IGNORE_LABEL = -1


class InputDataError(ValueError):
    """The user's data cannot be used as it is (reported without a traceback by the examples)."""


class CorruptInputError(InputDataError):
    """A data file that exists but cannot be read."""


class InvalidLabelError(InputDataError):
    """A label file that reads but holds values or a size the task cannot use."""


def check_class_labels(labels: np.ndarray, num_classes: int, path: str) -> None:
    """Refuse class ids outside ``0..num_classes-1`` (``-1`` = ignore) with the file and the
    values found (one ``min``/``max`` pass per sample)."""
    low, high = int(labels.min(initial=0)), int(labels.max(initial=0))
    if low >= IGNORE_LABEL and high < num_classes:
        return
    bad = np.unique(labels[(labels < IGNORE_LABEL) | (labels >= num_classes)])
    shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
    hint = f"; {IGNORE_LABEL} marks an unlabelled pixel (a 255 'ignore' value must be stored as {IGNORE_LABEL})"
    raise InvalidLabelError(f"{path}: class label(s) {shown} outside 0..{num_classes - 1}{hint}")


def load_npy(path: str, mmap_mode: Optional[Literal["r", "r+", "w+", "c"]] = None) -> np.ndarray:
    """``np.load(path)``; a truncated or foreign file raises :class:`CorruptInputError`."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise CorruptInputError(
            f"{path}: not a readable .npy file ({_first_line(err)}); it is probably truncated or damaged: "
            "re-create or re-download it") from None


def open_image(path: str, mode: Optional[str] = None):
    """The decoded PIL image at ``path`` (converted to ``mode`` when given); an unreadable or
    truncated file raises :class:`CorruptInputError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode else image.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptInputError(
            f"{path}: not a readable image ({_first_line(err)}); it is probably truncated or damaged: "
            "re-download or re-extract it") from None


def install_input_error_hook() -> None:
    """Report an uncaught :class:`InputDataError` or ``atomic_io.OutputWriteError`` (a file that
    cannot be written: disk full, read-only) as ``<script>: error: <message>`` (exit code 1, no
    traceback); other exceptions keep Python's report."""
    from LibMTL_rgb.atomic_io import OutputWriteError

    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if isinstance(value, (InputDataError, OutputWriteError)):
            print(f"{os.path.basename(sys.argv[0]) or 'main.py'}: error: {worker_message(value)}", file=sys.stderr)
            return
        previous(kind, value, traceback)

    sys.excepthook = hook


def worker_message(err: BaseException) -> str:
    """``err``'s message; for an error re-raised from a DataLoader worker (whose message embeds
    the worker's traceback) its last line, the original message."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
