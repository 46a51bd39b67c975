"""Crash-safe file output: every file the library writes goes through here.

A file is written to a temporary file in the same directory, flushed and fsync'ed, then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows). A kill or power
cut at any instant leaves either the previous file or the new one, never a truncated one.

Example::

    >>> import os, tempfile
    >>> from LibMTL_rgb.atomic_io import atomic_write
    >>> path = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_write(path) as handle:
    ...     _ = handle.write("complete")
    >>> open(path).read()
    'complete'
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from typing import IO, Any, Iterator

__all__ = ["OutputWriteError", "atomic_write", "atomic_save", "atomic_savefig", "atomic_write_json", "remove_stale_temporaries"]

#: ``errno`` values of a failed write that the user can act on (disk full, quota, read-only
#: file system, no permission, I/O error, file too large).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
#: What ``torch.save`` raises (a ``RuntimeError``) when the file system refuses its writes.
TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter failed", "file write failed")


class OutputWriteError(OSError):
    """``path`` could not be written (see ``errno``/``strerror``; ``errno`` is None for a
    ``torch.save`` failure); ``path`` itself is unchanged: the previous version, if any, is intact."""

    def __init__(self, path: str, cause: BaseException) -> None:
        code = getattr(cause, "errno", None)
        reason = getattr(cause, "strerror", None) or str(cause).strip().splitlines()[0]
        if code is None:
            reason = f"torch.save failed ({reason}), typically a full disk"
        super().__init__(code, reason, path)


def _write_failure(err: BaseException) -> bool:
    if isinstance(err, OutputWriteError):
        return False
    if isinstance(err, OSError):
        return err.errno in WRITE_ERRNOS
    return isinstance(err, RuntimeError) and any(text in str(err) for text in TORCH_WRITE_FAILURES)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically.

    On an exception inside the block the temporary file is removed and ``path`` is untouched.
    A refused write (disk full, read-only file system, no permission; ``torch.save``'s
    ``RuntimeError`` included) raises :class:`OutputWriteError` naming ``path``.
    ``mode`` is ``'w'`` (text) or ``'wb'`` (binary); ``open_kwargs`` go to ``open``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports mode 'w' or 'wb', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as err:
        if _write_failure(err):
            raise OutputWriteError(path, err) from err
        raise
    try:
        _honour_umask(fd)
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if _write_failure(err):
            raise OutputWriteError(path, err) from err
        raise
    _fsync_directory(directory)


def _honour_umask(fd: int) -> None:
    """Give the temporary file (created 0600 by ``mkstemp``) the mode ``open()`` would: 0666 less the umask."""
    if not hasattr(os, "fchmod"):  # Windows: no POSIX modes
        return
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_write_json(path: str, payload: Any, **dump_kwargs: Any) -> None:
    """``json.dump(payload)`` to ``path``, atomically (``indent=1`` unless given)."""
    dump_kwargs.setdefault("indent", 1)
    with atomic_write(path) as handle:
        json.dump(payload, handle, **dump_kwargs)


def atomic_savefig(fig: Any, path: str, **savefig_kwargs: Any) -> str:
    """``fig.savefig(path)``, atomically; the format comes from ``path``'s extension."""
    extension = os.path.splitext(path)[1].lstrip(".").lower() or None
    savefig_kwargs.setdefault("format", extension)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, **savefig_kwargs)
    return path


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of an :func:`atomic_write` (``.<target>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the temporary files a killed :func:`atomic_write` left in ``directory`` (call it
    only while no other process writes there, e.g. under the run directory's lock); returns
    their names."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        if is_temporary(name) and os.path.isfile(os.path.join(directory, name)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def _fsync_directory(directory: str) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
