"""Progress bars that follow the terminal: drawn when stderr is a terminal, off when it is a file
or a pipe (SLURM logs, ``nohup``, a grid's ``stderr.log``), where ``\\r``-redrawn bars only fill
the log. ``LIBMTL_RGB_PROGRESS=on|off|auto`` (or a command's ``--progress``) forces either way.

Usage: ``for batch in progress_bar(loader, desc="train"): ...`` — any tqdm keyword goes through.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Optional, TextIO

from tqdm.auto import tqdm

#: The environment variable that overrides the terminal test (a child process inherits it).
PROGRESS_ENV = "LIBMTL_RGB_PROGRESS"
PROGRESS_MODES = ("auto", "on", "off")

__all__ = ["PROGRESS_ENV", "PROGRESS_MODES", "progress_enabled", "progress_bar", "set_progress_mode"]


def _checked(mode: str, source: str) -> str:
    mode = mode.strip().lower()
    if mode not in PROGRESS_MODES:
        raise ValueError(f"{source} must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    return mode


def progress_enabled(mode: Optional[str] = None, stream: Optional[TextIO] = None) -> bool:
    """Whether to draw bars: ``mode`` (or, when None, ``$LIBMTL_RGB_PROGRESS``, default ``auto``)
    ``on``/``off`` decide; ``auto`` draws only when ``stream`` (default stderr) is a terminal."""
    if mode is None:
        mode = _checked(os.environ.get(PROGRESS_ENV, "auto") or "auto", PROGRESS_ENV)
    else:
        mode = _checked(mode, "the progress mode")
    if mode != "auto":
        return mode == "on"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def set_progress_mode(mode: str) -> None:
    """Set ``$LIBMTL_RGB_PROGRESS`` for this process and the processes it starts (a ``--progress`` flag)."""
    os.environ[PROGRESS_ENV] = _checked(mode, "--progress")


def progress_bar(iterable: Optional[Iterable[Any]] = None, *, mode: Optional[str] = None, **tqdm_kwargs: Any) -> tqdm:
    """``tqdm(iterable, **tqdm_kwargs)``, disabled unless :func:`progress_enabled` (``mode`` as there);
    an explicit ``disable=True`` in ``tqdm_kwargs`` still wins. ``dynamic_ncols`` defaults to True
    so that the bar follows the terminal's width."""
    stream = tqdm_kwargs.get("file")
    disable = tqdm_kwargs.pop("disable", False) or not progress_enabled(mode, stream)
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=disable, **tqdm_kwargs)
