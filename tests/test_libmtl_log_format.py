"""``log_format='libmtl'`` prints LibMTL 1.1.5's exact lines; ``save_every`` writes ``last.pt``
every N epochs and after the last (issue 18)."""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer
from LibMTL_rgb.meter import PerformanceMeter
from tests.libmtl_oracle import libmtl_available
from tests.test_libmtl_meter import TASK_DICT, _epochs, _libmtl_meter_class


def _printed(meter, epochs: dict, has_val: bool, libmtl: bool) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if libmtl:
            meter = meter()  # LibMTL prints its header when built
        meter.has_val = has_val
        for epoch, by_mode in epochs.items():
            for mode, results in by_mode.items():
                meter.results = {t: list(v) for t, v in results.items()}
                meter.loss_item = np.array([0.25 * epoch, 1.5])
                if libmtl:
                    meter.beg_time, meter.end_time = 10.0, 10.0 + 0.125 * epoch
                else:
                    meter._elapsed = 0.125 * epoch
                meter.display(mode=mode, epoch=epoch)
        meter.display_best_result()
    return out.getvalue()


@pytest.mark.skipif(not libmtl_available(), reason="LibMTL 1.1.5 (the oracle) is not installed")
@pytest.mark.parametrize("has_val", [True, False])
def test_libmtl_log_lines_are_libmtls(has_val):
    epochs = _epochs(np.random.default_rng(3), 4, has_val)
    base = None if has_val else epochs[0]["test"]
    ours = PerformanceMeter(TASK_DICT, False, base)
    ours.log_format = "libmtl"
    theirs = _printed(lambda: _libmtl_meter_class()(TASK_DICT, False, base), epochs, has_val, libmtl=True)
    assert _printed(ours, epochs, has_val, libmtl=False) == theirs
    assert theirs.count("\n") == 2 + 4 + 3  # header (2), one line per epoch, best result (3)


def _train(tmp_path, epochs: int, **options):
    torch.manual_seed(0)
    trainer = Trainer(synthetic.task_dict(2), "EW", "HPS", synthetic.encoder_class, synthetic.decoders(2), False, False,
                      {"optim": "adam", "lr": 1e-2}, save_path=str(tmp_path), device="cpu", **options)
    train, test = synthetic.loaders(2)
    trainer.train(train, test, epochs=epochs)
    return trainer


def test_save_every_writes_last_pt_every_n_epochs_and_at_the_end(tmp_path, monkeypatch, capsys):
    import LibMTL_rgb.run_directory as run_directory

    saved = []
    real = run_directory.atomic_save
    monkeypatch.setattr(run_directory, "atomic_save", lambda obj, path: (saved.append(os.path.basename(path)), real(obj, path)))
    trainer = _train(tmp_path, 5, save_every=2, log_format="libmtl")
    assert saved.count("last.pt") == 3  # after epochs 1, 3 and the last (4)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 4
    out = capsys.readouterr().out
    best = trainer.meter.best_result["epoch"]
    assert f"Save Model {best} to {tmp_path / 'best.pt'}" in out and "Best Result: Epoch" in out
    assert out.startswith("=" * 40 + "\nTotal Params: ")  # LibMTL's count_parameters lines
    lines = out.splitlines()
    assert lines[lines.index(f"Save Model {best} to {tmp_path / 'best.pt'}") - 1].startswith(f"Epoch: {best:04d} | TRAIN: ")


def test_options_are_checked():
    with pytest.raises(ValueError, match="save_every"):
        _train("unused", 1, save_every=0)
    with pytest.raises(ValueError, match="log_format"):
        _train("unused", 1, log_format="json")


def test_example_flags_reach_the_trainer():
    from LibMTL_rgb_examples.example_runner import example_parser, setup_run

    parser = example_parser("t", {})
    params = parser.parse_args(["--log_format", "libmtl", "--save_every", "3", "--device", "cpu"])
    _, kwargs, _, _ = setup_run(params)
    assert (kwargs["log_format"], kwargs["save_every"]) == ("libmtl", 3)
    assert "log_format" not in setup_run(parser.parse_args(["--device", "cpu"]))[1]
    with pytest.raises(SystemExit):
        parser.parse_args(["--save_every", "0"])
