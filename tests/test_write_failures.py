"""A disk that fills up or turns read-only while a run writes its checkpoints or outputs: the
write fails as ``OutputWriteError`` naming the file (the previous version intact, no ``.tmp``
left), and an example run ends with one ``error:`` line naming the path, the cause and what was
kept, exit code 1, no traceback. Full disks and read-only remounts are simulated (no tmpfs
here; root ignores ``chmod``)."""
import errno
import importlib.util
import os

import pytest
import torch

from LibMTL_rgb import atomic_io
from LibMTL_rgb.atomic_io import OutputWriteError, atomic_save, atomic_write, atomic_write_json

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 1024 vs 960"


def no_temporary_files(directory) -> bool:
    return not [name for name in os.listdir(directory) if name.endswith(".tmp")]


def test_enospc_while_flushing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    path.write_text("previous")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_io.os, "fsync", disk_full)
    with pytest.raises(OutputWriteError) as info:
        with atomic_write(str(path)) as handle:
            handle.write("new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert str(info.value) == f"[Errno {errno.ENOSPC}] No space left on device: '{path}'"
    assert path.read_text() == "previous" and no_temporary_files(tmp_path)


def test_read_only_file_system_is_named_with_the_target(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".summary.json.x.tmp"))

    monkeypatch.setattr(atomic_io.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputWriteError) as info:
        atomic_write_json(str(tmp_path / "summary.json"), {"a": 1})
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "summary.json")
    assert not (tmp_path / "summary.json").exists()


def test_torch_save_enforce_failure_becomes_a_write_error(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 0}, str(path))

    def fail(obj, handle):
        handle.write(b"partial")
        raise RuntimeError(TORCH_DISK_FULL)

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OutputWriteError) as info:
        atomic_save({"epoch": 1}, str(path))
    assert info.value.errno is None and info.value.filename == str(path)
    assert info.value.strerror == f"torch.save failed ({TORCH_DISK_FULL}), typically a full disk"
    assert torch.load(path)["epoch"] == 0 and no_temporary_files(tmp_path)


def test_other_errors_inside_the_block_pass_unchanged(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(str(tmp_path / "x.json"), {"a": object()})
    with pytest.raises(FileNotFoundError):  # not a write failure: no errno of WRITE_ERRNOS
        with atomic_write(str(tmp_path / "y.txt")):
            open(tmp_path / "absent")
    assert no_temporary_files(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores chmod")
def test_a_directory_made_read_only_gives_eacces(tmp_path):
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(OutputWriteError) as info:
            atomic_write_json(str(tmp_path / "summary.json"), {})
        assert info.value.errno == errno.EACCES
    finally:
        os.chmod(tmp_path, 0o700)


def load_tiny_example():
    spec = importlib.util.spec_from_file_location("tiny_example_write", os.path.join(HERE, "fixtures", "tiny_example.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fail_second_last_pt(monkeypatch, error: BaseException) -> None:
    """``torch.save`` raises ``error`` when it writes ``last.pt`` the second time (epoch 1)."""
    real_save, writes = torch.save, []

    def save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and "epoch" in obj:  # a training state: last.pt
            writes.append(obj["epoch"])
            if len(writes) == 2:
                raise error
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("error, cause, advice", [
    (RuntimeError(TORCH_DISK_FULL), f"torch.save failed ({TORCH_DISK_FULL}), typically a full disk", "check the free space"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device", "free disk space"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system",
     "the file system is read-only: remount it read-write or choose another --save_path"),
])
def test_run_ends_with_one_line_naming_path_cause_and_what_was_kept(tmp_path, monkeypatch, capsys, error, cause, advice):
    run_dir = tmp_path / "run"
    fail_second_last_pt(monkeypatch, error)
    with pytest.raises(SystemExit) as info:
        load_tiny_example().main(["--device", "cpu", "--weighting", "EW", "--epochs", "2", "--save_path", str(run_dir)])
    message = info.value.code
    assert isinstance(message, str) and "\n" not in message  # Python prints it and exits with code 1
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    assert message.endswith(f"error: cannot write {last}: {cause}; kept: {last} is unchanged, {best} is intact; "
                            f"{advice}, then continue with --resume {run_dir}"), message
    assert "Traceback" not in capsys.readouterr().err
    assert torch.load(last, weights_only=False)["epoch"] == 0  # the previous last.pt, intact
    assert no_temporary_files(run_dir)
