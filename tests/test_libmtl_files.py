"""Files the library writes honour the umask as ``open()`` does (LibMTL's ``torch.save``) (issue 18)."""
from __future__ import annotations

import os
import stat

import pytest

from LibMTL_rgb.atomic_io import atomic_save, atomic_write


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_0666_less_the_umask(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        with atomic_write(str(tmp_path / "a.csv")) as handle:
            handle.write("x")
        atomic_save({"w": 1}, str(tmp_path / "b.pt"))
    finally:
        os.umask(previous)
    for name in ("a.csv", "b.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name
