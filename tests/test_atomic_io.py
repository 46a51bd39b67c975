"""Crash-safe writes: a failure in the middle of a write leaves the previous file intact."""
import os

import pytest
import torch

from LibMTL_rgb.atomic_io import atomic_save, atomic_write, atomic_write_json


class _Dies(Exception):
    pass


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, str(path))

    class HalfThenDie:
        def __reduce__(self):  # torch.save pickles this after writing part of the file
            raise _Dies("killed mid-write")

    with pytest.raises(_Dies):
        atomic_save({"epoch": 2, "payload": torch.zeros(10000), "bad": HalfThenDie()}, str(path))
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_text_write_replaces_atomically(tmp_path):
    path = tmp_path / "sub" / "history.csv"
    with atomic_write(str(path), newline="") as handle:
        handle.write("a,b\n")
    with pytest.raises(_Dies):
        with atomic_write(str(path)) as handle:
            handle.write("half")
            raise _Dies()
    assert path.read_text() == "a,b\n"
    atomic_write_json(str(path), {"x": 1})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"x":1}'


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(tmp_path / "x"), "a"):
            pass
