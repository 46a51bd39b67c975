"""The Trainer on the step protocol: hook order, typed options, a skipped batch that leaves
no trace, the run directory as one transaction, and resume refusing a changed configuration."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from LibMTL_rgb import Trainer
from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.checkpoint import CheckpointError
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric
from LibMTL_rgb.run_directory import LOCK_FILE, RunDirectoryError

TASKS = ("a", "b")


class NaNGradient(torch.autograd.Function):
    """Identity forward; a NaN gradient backward (a finite loss whose gradient is not)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class PoisonableLoss(MSELoss):
    """MSE; a batch whose first target is 1e6 gets a finite loss with a NaN gradient."""

    def compute_loss(self, pred, gt):
        loss = super().compute_loss(pred, gt)
        if bool(gt.reshape(-1)[0] == 1e6):
            loss = loss + 0 * NaNGradient.apply(pred).sum()
        return loss


def task_dict():
    return {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": PoisonableLoss(), "weight": [0]} for t in TASKS}


def encoder():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())


def make_trainer(weighting="EW", save_path=None, **kwargs):
    torch.manual_seed(0)
    decoders = nn.ModuleDict({t: nn.Linear(8, 1) for t in TASKS})
    kwargs.setdefault("device", "cpu")
    return Trainer(task_dict(), weighting, "HPS", encoder, decoders, False, False, {"optim": "adam", "lr": 1e-2},
                   save_path=save_path, **kwargs)


def batches(count, seed=0, size=4):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 4, generator=g), {t: torch.randn(size, 1, generator=g) for t in TASKS})
            for _ in range(count)]


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


# ------------------------------------------------------------------ hooks
class Recorder(Callback):
    state_key = "recorder"

    def __init__(self):
        self.calls = []
        self.loaded = None

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith(("on_", "transform_")) and callable(attr):
            def wrapped(*args):
                self.calls.append(name)
                return attr(*args)
            return wrapped
        return attr

    def on_save_checkpoint(self, trainer, state):
        state[self.state_key] = {"calls": len(self.calls)}

    def on_load_checkpoint(self, trainer, state):
        self.loaded = state[self.state_key]


def test_the_loop_calls_the_hooks_in_protocol_order_and_checkpoints_each_components_state(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(save_path=str(tmp_path), callbacks=[recorder])
    assert trainer.callbacks[-1] is recorder
    trainer.train(batches(2), batches(1, seed=1), epochs=1)
    step = ["on_train_batch_start", "transform_losses", "on_before_backward", "on_after_backward",
            "on_before_optimizer_step", "on_after_optimizer_step", "on_train_batch_end"]
    assert recorder.calls == [
        "transform_model", "transform_loaders", "on_fit_start", "on_train_epoch_start", *step, *step,
        "on_train_epoch_end", "on_before_scores", "transform_loaders", "on_before_scores", "on_evaluation_end",
        "on_save_checkpoint", "on_epoch_end", "on_fit_end"]  # the run directory (before it) saves in its on_epoch_end
    resumed = make_trainer(callbacks=[recorder2 := Recorder()])
    resumed.resume(str(tmp_path))
    assert recorder2.loaded == {"calls": recorder.calls.index("on_save_checkpoint") + 1}


# --------------------------------------------------------------- options
def test_unknown_options_and_method_options_are_refused_with_a_suggestion():
    with pytest.raises(TypeError, match=r"unknown Trainer option 'nonfinte' \(did you mean 'nonfinite'\?\)"):
        make_trainer(nonfinte="skip")
    with pytest.raises(ValueError, match=r"RGB has no option 'rgb_step' \(did you mean 'rgb_steps'\?\)"):
        make_trainer("RGB", weight_args={"rgb_step": 3})
    with pytest.raises(ValueError, match=r"weight_args\['rgb_mu'\] of RGB must be in \[0, 1\), got 1.5"):
        make_trainer("RGB", weight_args={"rgb_mu": 1.5})
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        make_trainer(nonfinite="ignore")
    make_trainer("RGB", weight_args={"rgb_steps": 3})  # a declared option in range


def test_a_custom_weighting_without_declarations_is_checked_against_its_backward():
    from LibMTL_rgb.weighting import EW

    class Strict(EW):
        def backward(self, losses, scale=1.0):
            return super().backward(losses * scale)

    with pytest.raises(ValueError, match=r"Strict has no option 'scal' \(did you mean 'scale'\?\)"):
        make_trainer(Strict, weight_args={"scal": 2.0})
    make_trainer(Strict, weight_args={"scale": 2.0})


# ------------------------------------------------- --nonfinite skip: no trace
@pytest.mark.parametrize("weighting", ["FAMO", "RGB"])
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_skipped_batch_leaves_no_trace(weighting, poison):
    data = batches(4)
    bad_x, bad_y = batches(1, seed=5)[0]
    if poison == "loss":
        bad_x = bad_x.clone()
        bad_x[0, 0] = float("nan")
    else:
        bad_y = {t: y.clone() for t, y in bad_y.items()}
        bad_y["a"][0, 0] = 1e6
    poisoned = data[:2] + [(bad_x, bad_y)] + data[2:]
    test = batches(2, seed=9)

    skipping = make_trainer(weighting, nonfinite="skip")
    skipping.train(poisoned, test, epochs=2)
    reference = make_trainer(weighting)
    reference.train(data, test, epochs=2)

    assert skipping.nonfinite.skipped == 2
    got, want = skipping.model.state_dict(), reference.model.state_dict()
    assert got.keys() == want.keys()
    for key in want:  # BatchNorm statistics and the weighting's state included, bit for bit
        assert torch.equal(got[key], want[key]), key
    assert without_time(skipping.meter.history) == without_time(reference.meter.history)
    assert skipping.meter.best_result == reference.meter.best_result


# ------------------------------------------------- the run directory
def test_a_fresh_run_into_a_finished_run_is_refused_unless_overwrite(tmp_path):
    make_trainer(save_path=str(tmp_path)).train(batches(2), batches(1), epochs=1)
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(last.pt, best.pt, history.csv, summary.json\)"):
        make_trainer(save_path=str(tmp_path)).train(batches(2), batches(1), epochs=1)
    assert not os.path.exists(tmp_path / LOCK_FILE)  # the refused run left no lock
    make_trainer(save_path=str(tmp_path), overwrite=True).train(batches(2), batches(1), epochs=2)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1


def test_a_locked_run_directory_is_refused_and_a_dead_process_lock_taken_over(tmp_path):
    import socket

    with open(tmp_path / LOCK_FILE, "w") as handle:  # a live process (this test's parent) holds it
        json.dump({"pid": os.getppid(), "host": socket.gethostname()}, handle)
    with pytest.raises(RunDirectoryError, match=rf"in use by process {os.getppid()} on"):
        make_trainer(save_path=str(tmp_path)).train(batches(2), batches(1), epochs=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(tmp_path / LOCK_FILE, "w") as handle:
        json.dump({"pid": int(dead.stdout), "host": socket.gethostname()}, handle)
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    make_trainer(save_path=str(tmp_path)).train(batches(2), batches(1), epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "history.csv", "last.pt", "summary.json"]


def test_resume_after_a_kill_before_the_derived_files_rebuilds_them(tmp_path, capsys):
    make_trainer(save_path=str(tmp_path)).train(batches(2), batches(1), epochs=2)
    history, summary = (tmp_path / "history.csv").read_text(), (tmp_path / "summary.json").read_text()
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["run_directory"]["summary"] == json.loads(summary)  # the checkpoint carries the summary
    # as if killed after last.pt of the final epoch: the derived files still hold epoch 0
    (tmp_path / "history.csv").write_text("\n".join(history.splitlines()[:3]) + "\n")
    (tmp_path / "summary.json").unlink()
    resumed = make_trainer(save_path=str(tmp_path))
    assert resumed.resume(str(tmp_path)) == 2
    resumed.train(batches(2), batches(1), epochs=2)
    assert (tmp_path / "history.csv").read_text() == history
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(summary)
    assert "is complete (2 epochs)" in capsys.readouterr().out


def test_resume_refuses_a_changed_configuration_naming_each_difference(tmp_path):
    config = {"--lr": 0.01, "--seed": 0, "--bs": 4}
    make_trainer(save_path=str(tmp_path), run_config=config).train(batches(2), batches(1), epochs=1)
    changed = make_trainer(save_path=str(tmp_path), run_config={**config, "--lr": 0.1, "--seed": 3})
    with pytest.raises(CheckpointError) as info:
        changed.resume(str(tmp_path))
    lines = str(info.value).splitlines()
    assert lines[1:] == ["  --lr: 0.01 in the checkpoint, 0.1 now", "  --seed: 0 in the checkpoint, 3 now"]
    # the Python API without run_config: the optimiser itself (no KeyError from its state)
    torch.manual_seed(0)
    sgd = Trainer(task_dict(), "EW", "HPS", encoder, nn.ModuleDict({t: nn.Linear(8, 1) for t in TASKS}), False, False,
                  {"optim": "sgd", "lr": 1e-2}, device="cpu")
    with pytest.raises(CheckpointError, match=r"optim_param\['optim'\]: 'adam' in the checkpoint, 'sgd' now"):
        sgd.resume(str(tmp_path))
    same = make_trainer(save_path=str(tmp_path), run_config=config)
    assert same.resume(str(tmp_path)) == 1
    same.train(batches(2), batches(1), epochs=2)  # more epochs are allowed


# ------------------------------------------------- the examples' command line
def load_tiny_example():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tiny_example.py")
    spec = importlib.util.spec_from_file_location("tiny_example_protocol", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_flags_refuse_a_finished_run_dir_and_a_changed_resume_before_the_data(tmp_path, capsys):
    main = load_tiny_example().main
    run_dir = str(tmp_path / "run")
    flags = ["--device", "cpu", "--weighting", "EW", "--lr", "0.02", "--epochs", "1", "--save_path", run_dir]
    main(flags)
    with pytest.raises(SystemExit, match=rf"error: {run_dir} already holds a run .*pass --overwrite"):
        main(flags)
    main([*flags, "--overwrite"])
    with pytest.raises(SystemExit) as info:
        main([*flags[:-2], "--resume", run_dir, "--lr", "0.05", "--optim", "adam", "--seed", "1"])
    lines = str(info.value.code).splitlines()
    assert lines[0].startswith("error: --resume: cannot resume") and "(3 difference(s)" in lines[0]
    assert lines[1:] == ["  --lr: 0.02 in the checkpoint, 0.05 now", "  --optim: 'sgd' in the checkpoint, 'adam' now",
                         "  --seed: 0 in the checkpoint, 1 now"]
    capsys.readouterr()
    main([*flags[:-2], "--resume", run_dir, "--num_workers", "0"])  # same training flags, same --epochs
    assert "is complete (1 epochs)" in capsys.readouterr().out


def test_diagnostics_rows_survive_a_resume(tmp_path):
    from LibMTL_rgb.run_logger import DIAGNOSTICS_CSV

    make_trainer("RGB", save_path=str(tmp_path / "straight"), diagnostics=True).train(batches(2), batches(1), epochs=2)
    first = make_trainer("RGB", save_path=str(tmp_path / "resumed"), diagnostics=True)
    first.train(batches(2), batches(1), epochs=1)
    second = make_trainer("RGB", save_path=str(tmp_path / "resumed"), diagnostics=True)
    second.resume(str(tmp_path / "resumed"))
    second.train(batches(2), batches(1), epochs=2)
    straight = (tmp_path / "straight" / DIAGNOSTICS_CSV).read_text().splitlines()
    resumed = (tmp_path / "resumed" / DIAGNOSTICS_CSV).read_text().splitlines()
    assert len(straight) == 3 and resumed == straight  # header + both epochs, equal values
