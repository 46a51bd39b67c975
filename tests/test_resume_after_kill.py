"""Resume after a real kill: a run of a stateful weighting (DWA: loss history; RGB: EMA and
step counter) is SIGKILLed in a subprocess once its first last.pt exists, resumed from the
command line with MORE epochs than it was started with, and must end bit-identical (CPU) to
an uninterrupted run: parameters, buffers, optimiser and scheduler state, loss history, the
best result and history.csv."""
import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch


HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "fixtures", "tiny_example.py")
COMMON = ["--device", "cpu", "--shuffle", "--scheduler", "step", "--step_size", "2", "--lr", "0.02"]
FIRST_EPOCHS, FINAL_EPOCHS = 4, 6


def load_tiny_example():
    spec = importlib.util.spec_from_file_location("tiny_example_resume", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_env() -> dict:
    root = os.path.dirname(HERE)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")


def kill_once_checkpointed(command: list, run_dir) -> int:
    """Start ``command``, SIGKILL it as soon as ``run_dir/last.pt`` appears; the epoch it holds."""
    proc = subprocess.Popen([str(c) for c in command], env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    last = os.path.join(run_dir, "last.pt")
    deadline = time.monotonic() + 300
    while not os.path.exists(last):
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, "no last.pt after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return int(torch.load(last, weights_only=False)["epoch"])


def kill_after_first_checkpoint(argv: list, run_dir: str) -> int:
    """The tiny example, SIGKILLed as soon as its last.pt appears; the epoch it holds."""
    return kill_once_checkpointed([sys.executable, TINY, *argv], run_dir)


def history_without_time(path: str) -> list:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(handle)]


def assert_same_state(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b or (a != a and b != b), where


@pytest.mark.parametrize("weighting", ["DWA", "RGB"])
def test_killed_run_resumed_with_more_epochs_ends_bit_identical(weighting, tmp_path):
    flags = [*COMMON, "--weighting", weighting]
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    load_tiny_example().main([*flags, "--epochs", str(FINAL_EPOCHS), "--save_path", straight])

    killed_at = kill_after_first_checkpoint(
        [*flags, "--epochs", str(FIRST_EPOCHS), "--save_path", interrupted, "--batch_delay", "0.5"], interrupted)
    assert killed_at < FIRST_EPOCHS - 1  # really killed midway
    resumed = subprocess.run(
        [sys.executable, TINY, *flags, "--epochs", str(FINAL_EPOCHS), "--resume", interrupted],  # saves there too
        env=child_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming after epoch {killed_at}" in resumed.stdout

    a = torch.load(os.path.join(straight, "last.pt"), weights_only=False)
    b = torch.load(os.path.join(interrupted, "last.pt"), weights_only=False)
    for key in ("epoch", "model", "optimizer", "scheduler", "best_result", "train_loss_buffer", "torch_rng"):
        assert_same_state(a[key], b[key], key)
    assert np.isfinite(b["train_loss_buffer"]).all() and b["train_loss_buffer"].shape[1] == FINAL_EPOCHS
    assert_same_state(torch.load(os.path.join(straight, "best.pt")), torch.load(os.path.join(interrupted, "best.pt")))
    assert history_without_time(os.path.join(straight, "history.csv")) == \
        history_without_time(os.path.join(interrupted, "history.csv"))


def test_ctrl_c_stops_with_one_line_and_exit_130_keeping_the_checkpoint(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, TINY, *COMMON, "--weighting", "RGB", "--epochs", "50",
                             "--save_path", run_dir, "--batch_delay", "0.2"],
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(run_dir, "last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"interrupted; continue with --resume {run_dir}" in err
    state = torch.load(os.path.join(run_dir, "last.pt"), weights_only=False)
    assert 0 <= state["epoch"] < 49 and state["metadata"]["weighting"] == "RGB"
