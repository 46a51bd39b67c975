"""``trainer.meter.best_result`` against LibMTL 1.1.5's ``_PerformanceMeter`` fed the same results (issue 18)."""
from __future__ import annotations

import numpy as np
import pytest

from LibMTL_rgb.meter import PerformanceMeter
from tests.libmtl_oracle import libmtl_available

pytestmark = pytest.mark.skipif(not libmtl_available(), reason="LibMTL 1.1.5 (the oracle) is not installed")

TASK_DICT = {"a": {"metrics": ["acc"], "weight": [1], "loss_fn": None, "metrics_fn": None},
             "b": {"metrics": ["err"], "weight": [0], "loss_fn": None, "metrics_fn": None}}


def _libmtl_meter_class():
    from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

    ensure_torchvision_models_utils()
    from LibMTL._record import _PerformanceMeter

    return _PerformanceMeter


def _feed(meter, epochs: dict[int, dict[str, dict[str, list[float]]]], has_val: bool) -> None:
    """Drive ``meter`` as a Trainer does: per epoch, train then (val) then test rows."""
    meter.has_val = has_val
    for epoch, by_mode in epochs.items():
        for mode, results in by_mode.items():
            meter.record_time("begin")
            meter.record_time("end")
            meter.results = {t: list(v) for t, v in results.items()}
            meter.loss_item = np.zeros(2)
            meter.display(mode=mode, epoch=epoch)


def _epochs(rng: np.random.Generator, n: int, has_val: bool) -> dict:
    modes = ["train", "val", "test"] if has_val else ["train", "test"]
    return {e: {m: {"a": [float(rng.uniform())], "b": [float(rng.uniform())]} for m in modes} for e in range(n)}


@pytest.mark.parametrize("has_val", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_best_result_has_libmtl_meaning(has_val, seed, capsys):
    epochs = _epochs(np.random.default_rng(seed), 6, has_val)
    # Without a validation set LibMTL takes epoch 0's TRAIN results as the base (its
    # ``(mode == 'val' if has_val else 'test')`` is always true); ours the first test row.
    # Both get that base here, so the comparison is about which results are kept.
    base = None if has_val else epochs[0]["test"]
    theirs = _libmtl_meter_class()(TASK_DICT, False, base)
    ours = PerformanceMeter(TASK_DICT, False, base)
    _feed(theirs, epochs, has_val)
    _feed(ours, epochs, has_val)
    best = ours.best_result
    assert best["epoch"] == theirs.best_result["epoch"]
    assert best["improvement"] == pytest.approx(theirs.best_result["improvement"])
    assert best["result"] == {t: list(v) for t, v in theirs.best_result["result"].items()}
    assert best["result"] == epochs[best["epoch"]]["test"]  # the TEST results, also with a validation set
    if has_val:
        assert best["val"] == epochs[best["epoch"]]["val"]
