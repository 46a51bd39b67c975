"""LibMTL research code runs on LibMTL_rgb unchanged, with LibMTL's numbers.

``libmtl_style_code.py`` holds metric, loss, weighting and architecture classes written
against LibMTL. Each scenario trains the same tiny problem three times and compares every
epoch's losses and metrics, the returned task weights and the final parameters:

1. oracle: PyPI LibMTL 1.1.5's own ``Trainer`` with those classes (``libmtl_trainer_oracle.py``);
2. our ``Trainer`` with the very same classes (built on LibMTL's base classes);
3. our ``Trainer`` with a copy of the file whose only change is ``from LibMTL`` ->
   ``from LibMTL_rgb`` (built on our base classes, our gradient plumbing).
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

if importlib.util.find_spec("LibMTL") is None:
    pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)", allow_module_level=True)

import libmtl_trainer_oracle  # noqa: E402
from libmtl_oracle import float64_default as float64  # noqa: E402  (LibMTL builds vectors in the default dtype)
import libmtl_style_code as libmtl_code  # noqa: E402
from LibMTL_rgb import Trainer  # noqa: E402

IN_DIM, REP_DIM, CLASSES, BATCH = 4, 6, 3, 5
EPOCHS, TRAIN_BATCHES, TEST_BATCHES = 3, 3, 2


def load_variant(replace_imports: bool) -> types.ModuleType:
    """``libmtl_style_code`` as written, or with ``from LibMTL`` -> ``from LibMTL_rgb``."""
    if not replace_imports:
        return libmtl_code
    path = Path(libmtl_code.__file__)
    source = path.read_text().replace("from LibMTL.", "from LibMTL_rgb.")
    assert "from LibMTL." not in source and source.count("from LibMTL_rgb.") == 4
    module = types.ModuleType("libmtl_style_code_on_rgb")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def batches(count: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(BATCH, IN_DIM, generator=gen)
        out.append((x, {"reg": x[:, :1] * 2 - x[:, 1:2] + 0.1 * torch.randn(BATCH, 1, generator=gen),
                        "cls": torch.randint(0, CLASSES, (BATCH,), generator=gen)}))
    return out


def task_dict(code):
    return {
        "reg": {"metrics": ["MAE"], "metrics_fn": code.MAEMetric(scale=10.0), "loss_fn": code.HuberLoss(), "weight": [0]},
        "cls": {"metrics": ["Acc", "share0", "seen"], "metrics_fn": _CombinedMetric(code), "loss_fn": code.CrossEntropyLoss(),
                "weight": [1, 1, 1]},
    }


def _CombinedMetric(code):
    """Both classification metrics of ``code`` behind one LibMTL metric object."""

    class Combined(code.AccuracyMetric):
        def __init__(self):
            super().__init__()
            self.share = code.ClassShareMetric(CLASSES)

        def update_fun(self, pred, gt):
            super().update_fun(pred, gt)
            self.share.update_fun(pred, gt)

        def score_fun(self):
            return super().score_fun() + self.share.score_fun()

        def reinit(self):
            super().reinit()
            self.share.reinit()

    return Combined()


def encoder_class():
    return nn.Sequential(nn.Linear(IN_DIM, REP_DIM), nn.Tanh())


def run(trainer_class, code, weighting, rep_grad: bool, loader=list, **trainer_kwargs):
    """Train in float64; return (per-epoch rows, task weights, final parameters)."""
    with float64():
        return _run(trainer_class, code, weighting, rep_grad, loader, **trainer_kwargs)


def _run(trainer_class, code, weighting, rep_grad, loader, **trainer_kwargs):
    torch.manual_seed(0)
    decoders = nn.ModuleDict({"reg": nn.Linear(REP_DIM, 1), "cls": nn.Linear(REP_DIM, CLASSES)})
    trainer = trainer_class(
        task_dict=task_dict(code), weighting=getattr(code, weighting), architecture=code.GatedSharing,
        encoder_class=encoder_class, decoders=decoders, rep_grad=rep_grad, multi_input=False,
        optim_param={"optim": "sgd", "lr": 0.1, "momentum": 0.0}, scheduler_param=None,
        weight_args={"temperature": 2.0}, arch_args={"rep_dim": REP_DIM}, **trainer_kwargs,
    )
    rows = []
    display = trainer.meter.display

    def record_row(mode, epoch):
        rows.append((mode, epoch, [float(v) for v in trainer.meter.loss_item],
                     {t: [float(v) for v in r] for t, r in trainer.meter.results.items()}))
        return display(mode=mode, epoch=epoch)

    trainer.meter.display = record_row
    weights = trainer.train(loader(batches(TRAIN_BATCHES, 1)), loader(batches(TEST_BATCHES, 2)), EPOCHS, return_weight=True)
    params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return rows, weights, params


def assert_same_run(actual, expected, rtol):
    rows, weights, params = actual
    rows_ref, weights_ref, params_ref = expected
    assert [(m, e) for m, e, _, _ in rows] == [(m, e) for m, e, _, _ in rows_ref]
    assert len(rows) == 2 * EPOCHS
    for (_, _, losses, results), (_, _, losses_ref, results_ref) in zip(rows, rows_ref):
        np.testing.assert_allclose(losses, losses_ref, rtol=rtol, atol=0)
        assert results.keys() == results_ref.keys()
        for task in results:
            np.testing.assert_allclose(results[task], results_ref[task], rtol=rtol, atol=0)
    np.testing.assert_allclose(weights, weights_ref, rtol=rtol, atol=0)
    assert params.keys() == params_ref.keys()
    for name in params:
        torch.testing.assert_close(params[name], params_ref[name], rtol=rtol, atol=1e-14)


SCENARIOS = [("InverseNormWeighting", False), ("InverseNormWeighting", True), ("ProjectConflicts", False)]


@pytest.fixture(scope="module")
def oracle_runs():
    out = {}
    with libmtl_trainer_oracle.with_main_zero_grad():
        for weighting, rep_grad in SCENARIOS:
            out[weighting, rep_grad] = run(libmtl_trainer_oracle.cpu_trainer_class(), libmtl_code, weighting, rep_grad,
                                           loader=libmtl_trainer_oracle.LegacyLoader)
    return out


@pytest.mark.parametrize("weighting,rep_grad", SCENARIOS)
def test_libmtl_classes_in_our_trainer_match_libmtl(oracle_runs, weighting, rep_grad):
    with libmtl_trainer_oracle.with_main_zero_grad():
        ours = run(Trainer, libmtl_code, weighting, rep_grad, device="cpu")
    assert_same_run(ours, oracle_runs[weighting, rep_grad], rtol=1e-12)


@pytest.mark.parametrize("weighting,rep_grad", SCENARIOS)
def test_same_code_with_rgb_imports_matches_libmtl(oracle_runs, weighting, rep_grad):
    code = load_variant(replace_imports=True)
    assert issubclass(code.GatedSharing, sys.modules["LibMTL_rgb.architecture.abstract_arch"].AbsArchitecture)
    ours = run(Trainer, code, weighting, rep_grad, device="cpu")
    assert_same_run(ours, oracle_runs[weighting, rep_grad], rtol=1e-9)


def test_the_run_is_not_trivial(oracle_runs):
    """The comparison means something: weights vary, and training moved the parameters."""
    rows, weights, params = oracle_runs["InverseNormWeighting", False]
    assert np.ptp(weights) > 0.01
    with float64():  # the encoder as ``run`` builds it, before training
        torch.manual_seed(0)
        nn.ModuleDict({"reg": nn.Linear(REP_DIM, 1), "cls": nn.Linear(REP_DIM, CLASSES)})
        start = encoder_class()[0].weight.detach()
    assert (params["encoder.0.weight"] - start).abs().max() > 1e-3
    assert rows[-1][3]["cls"][2] == TEST_BATCHES * BATCH  # ClassShareMetric counted each test sample once


def test_metric_updates_run_without_grad():
    """QM9Metric's ``.cpu().numpy()`` on a prediction needs LibMTL's ``torch.no_grad()``."""
    code = load_variant(replace_imports=True)
    seen = []

    class Probe(code.MAEMetric):
        def update_fun(self, pred, gt):
            seen.append(torch.is_grad_enabled())
            super().update_fun(pred, gt)

    tasks = task_dict(code)
    tasks["reg"]["metrics_fn"] = Probe()
    with float64():
        trainer = Trainer(tasks, "EW", "HPS", encoder_class,
                          nn.ModuleDict({"reg": nn.Linear(REP_DIM, 1), "cls": nn.Linear(REP_DIM, CLASSES)}),
                          False, False, {"optim": "sgd", "lr": 0.1}, device="cpu")
        trainer.train(batches(2, 1), batches(1, 2), 1)
    assert seen == [False, False, False]
