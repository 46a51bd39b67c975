"""Issue 17's feature matrix: every example (NYUv2, Cityscapes 2-task, QM9, CelebA) on tiny
fixtures (the builders of ``test_example_*.py``) × each feature, through its ``main.py``:

(a) ``torchrun --nproc_per_node 2`` (gloo): each process runs half the steps of a process with
    the same ``--bs``, the data is sharded (QM9 and CelebA wrap their loaders), and where the
    result is exact (no BatchNorm: QM9) it equals one process on the global batch;
(b) a run SIGKILLed during epoch 2, then ``--resume``, at the example's default
    ``--num_workers`` (2; CelebA 4) with augmentation: bit-identical to the uninterrupted run;
(c) ``--nonfinite skip`` with a NaN batch: as the same run without that batch (NYUv2 and
    Cityscapes, whose ``.npy`` images can hold a NaN; a CelebA JPEG or ±1 label cannot, and
    QM9's row is left to the non-finite guard's own tests), on the matrix and the Gramian path;
(d) ``--grad_method gramian`` (no [T, D] matrix): as the matrix path up to float32 rounding.

The toy example has no data to shard, seed or skip (its own resume: ``test_toy_resume.py``).

Single-process runs call ``main()`` in this process; torchrun and the killed run are
subprocesses. The killed run's samples are read 50 ms slower (``SLOW_READS``), so the kill
lands mid-run without changing what is read.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from example_loading import EXAMPLES, load_example
from LibMTL_rgb.distributed.seeds import SeededSampler
from test_example_celeba import make_celeba_root
from test_example_cityscapes import write_mtan
from test_resume_after_kill import assert_same_state, kill_once_checkpointed
from test_example_nyu import SIZE as NYU_SIZE, TINY_MODEL as NYU_MODEL, write_nyu
from test_example_qm9 import make_qm9_root

REPO = Path(__file__).resolve().parents[1]
SEED = 0
#: Runs the example's main.py with every sample read 50 ms later (argv[1]: the main.py).
SLOW_READS = ("import os, runpy, sys, time\n"
              "from LibMTL_rgb.distributed import seeds\n"
              "read = seeds.SeededSamples.__getitem__\n"
              "seeds.SeededSamples.__getitem__ = lambda self, key: (time.sleep(0.05), read(self, key))[1]\n"
              "sys.argv = sys.argv[1:]\n"
              "sys.path.insert(0, os.path.dirname(sys.argv[0]))\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@dataclass(frozen=True)
class Example:
    name: str
    make_root: Callable[[Path], Path]
    flags: Callable[[Path], list]
    train_size: int
    bs: int                 # per process in (a)
    exact: bool             # (a): equal to one process on the global batch (no BatchNorm)
    drop_last: bool = True


def _nyu_flags(root: Path) -> list:
    return ["--dataset_path", str(root), "--img_size", *map(str, NYU_SIZE), *NYU_MODEL, "--weighting", "RGB",
            "--arch", "HPS", "--rgb_steps", "2", "--eval_bs", "2", "--aug"]


def _cityscapes_flags(root: Path) -> list:
    return ["--dataset_path", str(root), "--img_size", "16", "32", "--no_pretrained", "--backbone_depth", "18",
            "--backbone_width", "8", "--device", "cpu", "--weighting", "RGB", "--arch", "HPS", "--rgb_steps", "2",
            "--eval_bs", "2", "--aug"]


def _qm9_flags(root: Path) -> list:
    return ["--dataset_path", str(root), "--val_size", "5", "--test_size", "5", "--dim", "8", "--edge_hidden", "8",
            "--rgb_steps", "2", "--device", "cpu"]


def _celeba_flags(root: Path) -> list:
    return ["--dataset_path", str(root), "--width", "2", "--image_size", "32", "--rgb_steps", "2", "--device", "cpu"]


EXAMPLES_MATRIX = [
    Example("nyu", lambda tmp: write_nyu(tmp / "nyuv2", {"train": 8, "val": 2}), _nyu_flags, 8, 2, False),
    Example("cityscapes", lambda tmp: write_mtan(tmp / "cityscapes2", {"train": 8, "val": 2}, size=(16, 32)),
            _cityscapes_flags, 8, 2, False),
    Example("qm9", lambda tmp: make_qm9_root(tmp / "qm9", 30), _qm9_flags, 20, 5, True, drop_last=False),
    Example("celeba", lambda tmp: make_celeba_root(tmp / "celeba")[0], _celeba_flags, 12, 2, False, drop_last=False),
]
IDS = [e.name for e in EXAMPLES_MATRIX]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("matrix")
    return {e.name: e.make_root(tmp) for e in EXAMPLES_MATRIX}


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")


def main_py(example: Example) -> str:
    return str(EXAMPLES / example.name / "main.py")


def run_in_process(example: Example, argv: list) -> None:
    load_example(example.name)[0].main([str(a) for a in argv])


def last_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.pt", weights_only=False)


def history(run_dir: Path) -> list:
    with open(run_dir / "history.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(handle)]


def steps_per_epoch(example: Example, samples: int, bs: int) -> int:
    return samples // bs if example.drop_last else -(-samples // bs)


# ---------------------------------------------------------------- (a) torchrun, 2 processes
@pytest.mark.parametrize("example", EXAMPLES_MATRIX, ids=IDS)
def test_torchrun_two_processes_shard_and_run_half_the_steps(example, roots, tmp_path):
    flags = [*example.flags(roots[example.name]), "--epochs", "1", "--num_workers", "0", "--seed", str(SEED)]
    two, one = tmp_path / "two", tmp_path / "one"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", main_py(example),
               *flags, "--bs", str(example.bs), "--distributed_check", "--save_path", str(two)]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2 (gloo)" in done.stdout
    run_in_process(example, [*flags, "--bs", 2 * example.bs, "--save_path", two.parent / "one"])

    per_process = -(-example.train_size // 2)  # DistributedSampler pads to a multiple of the world size
    steps = int(last_state(two)["model"]["rgb_step_count"])
    assert steps == steps_per_epoch(example, per_process, example.bs)
    assert 2 * steps in (steps_per_epoch(example, example.train_size, example.bs),
                         steps_per_epoch(example, example.train_size, example.bs) + 1)  # half the steps
    assert steps == int(last_state(one)["model"]["rgb_step_count"])  # one process on the global batch
    rows_two, rows_one = history(two), history(one)
    assert [r["mode"] for r in rows_two] == [r["mode"] for r in rows_one]
    if example.exact:
        got, want = last_state(two)["model"], last_state(one)["model"]
        for name, value in want.items():
            if value.is_floating_point():
                torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
        for got_row, want_row in zip(rows_two, rows_one):
            for key, value in want_row.items():
                if key not in ("mode", "epoch") and value not in ("", None):
                    assert float(got_row[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-5), key


# ------------------------------------------------- (b) SIGKILL in epoch 2, --resume, default workers
def kill_during_second_epoch(example: Example, argv: list, run_dir: Path) -> int:
    """Start the run (samples read slowly), SIGKILL it once the first last.pt exists; the epoch
    that last.pt holds."""
    return kill_once_checkpointed([sys.executable, "-c", SLOW_READS, main_py(example), *argv], run_dir)


@pytest.mark.parametrize("example", EXAMPLES_MATRIX, ids=IDS)
def test_kill_and_resume_at_default_workers_is_bit_identical(example, roots, tmp_path):
    epochs = 2
    flags = [*example.flags(roots[example.name]), "--bs", example.bs, "--seed", SEED]  # default --num_workers
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_in_process(example, [*flags, "--epochs", epochs, "--save_path", straight])
    killed_at = kill_during_second_epoch(example, [*flags, "--epochs", epochs, "--save_path", killed], killed)
    assert killed_at < epochs - 1
    run_in_process(example, [*flags, "--epochs", epochs, "--resume", killed])

    a, b = last_state(straight), last_state(killed)
    for key in ("epoch", "model", "optimizer", "best_result", "train_loss_buffer"):
        assert_same_state(a[key], b[key], key)
    assert history(straight) == history(killed)


# --------------------------------------------------- (c) --nonfinite skip = the run without that batch
def epoch0_order(samples: int) -> list:
    """The sample indices in the order the seeded training loader draws them in epoch 0."""
    sampler = SeededSampler(samples, True, SEED)
    sampler.set_epoch(0)
    return [index for index, _ in sampler]


def dense_with_nan_batch(example: Example, tmp: Path) -> tuple[Path, Path]:
    """``(root whose first training batch has NaN images, root of only the second batch)``; the
    reference root's loader draws the second batch's samples in the same order (the dense
    losses are not bit-for-bit invariant to the order within a batch)."""
    write = {"nyu": lambda r: write_nyu(r, {"train": 2 * example.bs, "val": 2}),
             "cityscapes": lambda r: write_mtan(r, {"train": 2 * example.bs, "val": 2}, size=(16, 32))}[example.name]
    with_nan = write(tmp / "with_nan")
    without = Path(shutil.copytree(with_nan, tmp / "without"))  # the same samples (the writer draws them at random)
    order = epoch0_order(2 * example.bs)
    poisoned, second = order[:example.bs], order[example.bs:]
    for i in poisoned:
        image = np.load(with_nan / "train" / "image" / f"{i}.npy")
        np.save(with_nan / "train" / "image" / f"{i}.npy", np.full_like(image, np.nan))
    for folder in (without / "train").iterdir():
        arrays = {i: np.load(folder / f"{i}.npy") for i in second}
        for f in folder.iterdir():
            f.unlink()
        for position, new in enumerate(epoch0_order(example.bs)):  # the reference draws file `new` at `position`
            np.save(folder / f"{new}.npy", arrays[second[position]])
    return with_nan, without


@pytest.mark.parametrize("grad_method", ["loop", "gramian"])
@pytest.mark.parametrize("example", EXAMPLES_MATRIX[:2], ids=IDS[:2])
def test_nonfinite_skip_equals_the_run_without_that_batch(example, grad_method, tmp_path):
    with_nan, without = dense_with_nan_batch(example, tmp_path)
    common = ["--bs", example.bs, "--seed", SEED, "--epochs", "1", "--num_workers", "0", "--grad_method", grad_method]
    skipped, reference = tmp_path / "skipped", tmp_path / "reference"
    # no --aug: its draws are seeded by (seed, epoch, sample index), and the reference's samples are renumbered
    def flags(root: Path) -> list:
        return [flag for flag in example.flags(root) if flag != "--aug"]

    run_in_process(example, [*flags(with_nan), *common, "--nonfinite", "skip", "--save_path", skipped])
    run_in_process(example, [*flags(without), *common, "--save_path", reference])
    got, want = last_state(skipped)["model"], last_state(reference)["model"]
    for name, value in want.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
        else:
            assert torch.equal(got[name], value), name
    for got_row, want_row in zip(history(skipped), history(reference)):
        for key, value in want_row.items():
            if key not in ("mode", "epoch") and value not in ("", None):
                assert float(got_row[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-5), key


# ---------------------------------------------------------------- (d) the Gramian path
@pytest.mark.parametrize("example", EXAMPLES_MATRIX, ids=IDS)
def test_gramian_path_trains_as_the_matrix_path(example, roots, tmp_path):
    """``--grad_method gramian`` (RGB without the [T, D] matrix) on every example: the same run as
    the matrix path (``--grad_method loop``) up to float32 rounding of the Gramian (SGD: Adam
    would scale a rounding difference in a near-zero gradient up to its learning rate)."""
    common = [*example.flags(roots[example.name]), "--bs", example.bs, "--seed", SEED, "--epochs", "1",
              "--num_workers", "0", "--optim", "sgd", "--lr", "0.01"]
    gramian, matrix = tmp_path / "gramian", tmp_path / "matrix"
    run_in_process(example, [*common, "--grad_method", "gramian", "--save_path", gramian])
    run_in_process(example, [*common, "--grad_method", "loop", "--save_path", matrix])
    got, want = last_state(gramian)["model"], last_state(matrix)["model"]
    for name, value in want.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
        else:
            assert torch.equal(got[name], value), name
