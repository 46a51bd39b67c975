"""LibMTL's public surface on LibMTL_rgb: every name of LibMTL main (the GitHub code) and of
PyPI LibMTL 1.1.5 exists here with a compatible signature or is documented as absent in
docs/migrating_from_libmtl.md; LibMTL's by-name route; the pieces of LibMTL's semantics that
the end-to-end comparison (test_libmtl_dropin.py) does not reach."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import LibMTL_rgb
import LibMTL_rgb.architecture as architecture_method
import LibMTL_rgb.weighting as weighting_method
from LibMTL_rgb import Trainer
from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.config import LibMTL_args, make_parser, prepare_args
from LibMTL_rgb.loss import AbsLoss, CELoss, KLDivLoss, MSELoss
from LibMTL_rgb.metrics import AbsMetric, AccMetric, L1Metric
from LibMTL_rgb.utils import count_parameters, get_root_dir, set_param
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating_from_libmtl.md"

#: The public names of LibMTL main's modules (read from its source, 2025-05).
LIBMTL_MAIN = {
    "LibMTL": ["architecture", "model", "weighting", "Trainer", "config", "loss", "metrics", "utils"],
    "LibMTL.config": ["LibMTL_args", "prepare_args"],
    "LibMTL.utils": ["get_root_dir", "set_random_seed", "set_device", "count_parameters", "count_improvement", "set_param"],
    "LibMTL.loss": ["AbsLoss", "CELoss", "KLDivLoss", "L1Loss", "MSELoss"],
    "LibMTL.metrics": ["AbsMetric", "AccMetric", "L1Metric"],
    "LibMTL.weighting": ["AbsWeighting", "EW", "GradNorm", "MGDA", "UW", "DWA", "GLS", "GradDrop", "PCGrad", "GradVac",
                         "IMTL", "CAGrad", "Nash_MTL", "RLW", "MoCo", "Aligned_MTL", "DB_MTL", "STCH", "ExcessMTL",
                         "FairGrad", "FAMO", "MoDo", "SDMGrad", "UPGrad"],
    "LibMTL.architecture": ["AbsArchitecture", "HPS", "Cross_stitch", "MMoE", "MTAN", "CGC", "PLE", "DSelect_k", "LTB"],
    "LibMTL.model": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                     "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "resnet_dilated"],
}

#: LibMTL main's signatures that code calls or overrides (ours may add trailing defaults).
SIGNATURES = {
    "utils.get_root_dir": "",
    "utils.set_random_seed": "seed",
    "utils.set_device": "gpu_id",
    "utils.count_parameters": "model",
    "utils.count_improvement": "base_result, new_result, weight",
    "utils.set_param": "curr_mod, name, param=None, mode='update'",
    "config.prepare_args": "params",
    "trainer.Trainer.__init__": "self, task_dict, weighting, architecture, encoder_class, decoders, rep_grad, "
                                "multi_input, optim_param, scheduler_param, save_path=None, load_path=None, **kwargs",
    "trainer.Trainer.train": "self, train_dataloaders, test_dataloaders, epochs, val_dataloaders=None, "
                             "return_weight=False, **kwargs",
    "trainer.Trainer.test": "self, test_dataloaders, epoch=None, mode='test', return_improvement=False",
    "trainer.Trainer.forward4loss": "self, model, inputs, gts, return_preds=False",
    "trainer.Trainer.process_preds": "self, preds, task_name=None",
    "loss.AbsLoss.compute_loss": "self, pred, gt",
    "loss.AbsLoss._update_loss": "self, pred, gt",
    "loss.AbsLoss._average_loss": "self",
    "loss.AbsLoss._reinit": "self",
    "metrics.AbsMetric.update_fun": "self, pred, gt",
    "metrics.AbsMetric.score_fun": "self",
    "metrics.AbsMetric.reinit": "self",
    "weighting.abstract_weighting.AbsWeighting.init_param": "self",
    "weighting.abstract_weighting.AbsWeighting._compute_grad_dim": "self",
    "weighting.abstract_weighting.AbsWeighting._grad2vec": "self",
    "weighting.abstract_weighting.AbsWeighting._compute_grad": "self, losses, mode, rep_grad=False",
    "weighting.abstract_weighting.AbsWeighting._reset_grad": "self, new_grads",
    "weighting.abstract_weighting.AbsWeighting._get_grads": "self, losses, mode='backward'",
    "weighting.abstract_weighting.AbsWeighting._backward_new_grads": "self, batch_weight, per_grads=None, grads=None",
    "weighting.abstract_weighting.AbsWeighting.backward": "self, losses, **kwargs",
    "architecture.abstract_arch.AbsArchitecture.__init__": "self, task_name, encoder_class, decoders, rep_grad, "
                                                           "multi_input, device, **kwargs",
    "architecture.abstract_arch.AbsArchitecture.forward": "self, inputs, task_name=None",
    "architecture.abstract_arch.AbsArchitecture.get_share_params": "self",
    "architecture.abstract_arch.AbsArchitecture.zero_grad_share_params": "self",
    "architecture.abstract_arch.AbsArchitecture._prepare_rep": "self, rep, task, same_rep=None",
}


def ours(libmtl_module: str) -> object:
    return importlib.import_module(libmtl_module.replace("LibMTL", "LibMTL_rgb", 1))


def doc_rows() -> dict[str, str]:
    """``LibMTL.x.Name`` -> its row of the name table in the migration guide."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*`(LibMTL(?:\.\w+)*)`\s*\|", line)
        if match:
            rows[match.group(1)] = line
    return rows


ALL_NAMES = [f"{module}.{name}" for module, names in LIBMTL_MAIN.items() for name in names]


@pytest.mark.parametrize("qualified", ALL_NAMES)
def test_every_libmtl_name_exists_or_is_documented_absent(qualified):
    module, name = qualified.rsplit(".", 1)
    row = doc_rows().get(qualified)
    assert row is not None, f"docs/migrating_from_libmtl.md has no table row for `{qualified}`"
    present = hasattr(ours(module), name)
    documented_absent = "absent" in row.lower()
    assert present != documented_absent, (
        f"{qualified}: {'present' if present else 'absent'} here, but the guide's row says otherwise: {row}")


def test_the_name_list_covers_libmtl_1_1_5():
    if importlib.util.find_spec("LibMTL") is None:
        pytest.skip("LibMTL is not installed")
    import libmtl_trainer_oracle  # noqa: F401  (makes LibMTL 1.1.5 importable)

    for module_name in LIBMTL_MAIN:
        module = importlib.import_module(module_name)
        public = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", module_name).startswith("LibMTL")
            and (inspect.isclass(v) or inspect.isfunction(v) or inspect.ismodule(v) and v.__name__.startswith("LibMTL"))
            and n not in ("torch", "np", "nn", "F", "time", "random", "os", "argparse")]
        added_by_register = {n for n in public if getattr(getattr(module, n, None), "__module__", "").startswith("LibMTL_rgb")}
        missing = sorted(set(public) - set(LIBMTL_MAIN[module_name]) - {"trainer", "_record"} - added_by_register)
        assert not missing, f"{module_name} of LibMTL 1.1.5 has public names the list lacks: {missing}"


def _parameters(spec: str) -> list[inspect.Parameter]:
    scope: dict = {}
    exec(f"def f({spec}): pass", scope)
    return list(inspect.signature(scope["f"]).parameters.values())


@pytest.mark.parametrize("path", sorted(SIGNATURES))
def test_signatures_are_compatible_with_libmtl_main(path):
    *module_parts, attr = path.split(".")
    obj = importlib.import_module("LibMTL_rgb." + module_parts[0])
    for part in module_parts[1:] + [attr]:
        obj = getattr(obj, part)
    actual = list(inspect.signature(obj).parameters.values())
    expected = _parameters(SIGNATURES[path])
    for position, want in enumerate(expected):
        if want.kind is inspect.Parameter.VAR_KEYWORD:
            assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in actual), f"{path} lacks **{want.name}"
            continue
        have = actual[position]
        assert have.name == want.name, f"{path}: parameter {position} is {have.name!r}, LibMTL's is {want.name!r}"
        if want.default is not inspect.Parameter.empty:
            assert have.default == want.default, f"{path}: default of {want.name} differs from LibMTL's"
    for extra in actual[len([p for p in expected if p.kind is not inspect.Parameter.VAR_KEYWORD]):]:
        assert extra.default is not inspect.Parameter.empty or extra.kind in (
            inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL), f"{path}: extra parameter {extra.name} needs a default"


def test_libmtl_module_paths_of_method_classes():
    from LibMTL_rgb.architecture.HPS import HPS
    from LibMTL_rgb.weighting.EW import EW
    from LibMTL_rgb.weighting.MGDA import MGDA

    assert (EW, MGDA, HPS) == (weighting_method.EW, weighting_method.MGDA, architecture_method.HPS)
    assert isinstance(weighting_method.__dict__["EW"], type)  # the attribute is still the class


# ------------------------------------------------------------------ records (LibMTL semantics)
def _classification_batches(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 4, generator=gen), torch.randint(0, 4, (n,), generator=gen)) for n in (5, 3, 7)]


def test_loss_record_bs_and_average_as_libmtl():
    loss = CELoss()
    expected_record, expected_bs = [], []
    for pred, gt in _classification_batches():
        value = loss._update_loss(pred, gt)
        expected_record.append(nn.CrossEntropyLoss()(pred, gt).item())  # LibMTL's CELoss and .item()
        expected_bs.append(pred.size()[0])
        assert value.dim() == 0
    assert loss.bs == expected_bs
    assert loss.record == expected_record and all(isinstance(v, float) for v in loss.record)
    average = (np.array(expected_record) * np.array(expected_bs)).sum() / np.array(expected_bs).sum()
    assert loss._average_loss() == average
    loss._reinit()
    assert loss.record == [] and loss.bs == []


def test_our_losses_and_metrics_defer_the_host_transfer_to_the_first_read():
    loss, metric = CELoss(), AccMetric()
    for pred, gt in _classification_batches():
        loss._update_loss(pred, gt)
        metric.update_fun(pred, gt)
    for holder in (loss, metric):
        pending = holder.__dict__["_record"]
        assert len(pending) == 3 and all(isinstance(v, torch.Tensor) for v in pending)
        assert all(not isinstance(v, torch.Tensor) for v in holder.record)  # read: Python numbers
        assert holder.__dict__["_record"] is pending  # fetched in place, once


def test_metric_record_bs_and_score_as_libmtl_accmetric():
    metric = AccMetric()
    record, bs = [], []
    for pred, gt in _classification_batches(1):
        metric.update_fun(pred, gt)
        record.append(gt.eq(torch.softmax(pred, dim=-1).max(-1)[1]).sum().item())
        bs.append(pred.size()[0])
    assert metric.record == record and metric.bs == bs
    assert metric.score_fun() == [sum(record) / sum(bs)]
    metric.reinit()
    assert metric.record == [] and metric.bs == []


def test_our_classes_match_libmtl_1_1_5_where_it_has_them():
    if importlib.util.find_spec("LibMTL") is None:
        pytest.skip("LibMTL is not installed")
    import libmtl_trainer_oracle  # noqa: F401
    from LibMTL.loss import CELoss as LibMTLCELoss
    from LibMTL.metrics import AccMetric as LibMTLAccMetric

    pairs = [(CELoss(), LibMTLCELoss()), (AccMetric(), LibMTLAccMetric())]
    for pred, gt in _classification_batches(2):
        for mine, theirs in pairs:
            if isinstance(mine, AbsLoss):
                torch.testing.assert_close(mine._update_loss(pred, gt), theirs._update_loss(pred, gt))
            else:
                mine.update_fun(pred, gt)
                theirs.update_fun(pred, gt)
    for mine, theirs in pairs:
        assert (mine.record, mine.bs) == (theirs.record, theirs.bs)
    assert pairs[0][0]._average_loss() == pytest.approx(pairs[0][1]._average_loss(), rel=1e-15)
    assert pairs[1][0].score_fun() == pairs[1][1].score_fun()


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # PyTorch's note on KLDivLoss' default
def test_kldiv_and_l1_metric_as_libmtl():
    gen = torch.Generator().manual_seed(3)
    log_p = torch.log_softmax(torch.randn(4, 5, generator=gen), dim=-1)
    q = torch.softmax(torch.randn(4, 5, generator=gen), dim=-1)
    torch.testing.assert_close(KLDivLoss().compute_loss(log_p, q), nn.KLDivLoss()(log_p, q))
    metric = L1Metric()  # LibMTL's L1Metric works on one-value batches: record |err|, bs 1
    for pred, gt in ((torch.tensor([2.0]), torch.tensor([0.5])), (torch.tensor([1.0]), torch.tensor([1.25]))):
        metric.update_fun(pred, gt)
    assert metric.record == [1.5, 0.25] and metric.bs == [1, 1]
    assert metric.score_fun() == [pytest.approx(0.875)]


def test_record_may_be_replaced_by_a_tensor_as_in_libmtl_examples():
    metric = AbsMetric()
    metric.record = torch.zeros(3, dtype=torch.int64)
    metric.record += torch.tensor([1, 0, 2])
    assert metric.record.tolist() == [1, 0, 2]
    metric.reinit()
    assert metric.record == []


# ---------------------------------------------------------------------- by-name route
class _HalfWeighting(AbsWeighting):
    """LibMTL style, added to the package by name; its option comes from ``backward``."""

    def backward(self, losses, half_scale=0.5, **kwargs):
        (half_scale * losses.sum()).backward()
        return np.full(self.task_num, half_scale)


def _tiny_trainer(weighting, architecture="HPS", **kwargs):
    torch.manual_seed(0)
    tasks = {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in "ab"}
    return Trainer(tasks, weighting, architecture, lambda: nn.Linear(3, 4), nn.ModuleDict({t: nn.Linear(4, 1) for t in "ab"}),
                   False, False, {"optim": "sgd", "lr": 0.1}, device="cpu", **kwargs)


def _regression_batches(count: int, size: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, generator=gen), {t: torch.randn(size, 1, generator=gen) for t in "ab"})
            for _ in range(count)]


@pytest.fixture
def half_weighting_by_name():
    weighting_method._HalfWeighting = _HalfWeighting
    yield "_HalfWeighting"
    del weighting_method._HalfWeighting


def test_weighting_added_to_the_package_works_by_name(half_weighting_by_name):
    parser = make_parser()
    parser.add_argument("--half_scale", type=float, default=0.5)
    params = parser.parse_args(["--weighting", half_weighting_by_name, "--half_scale", "0.25"])
    kwargs, optim_param, _ = prepare_args(params, verbose=False)
    assert kwargs["weight_args"] == {"half_scale": 0.25}
    trainer = _tiny_trainer(params.weighting, **kwargs)
    weights = trainer.train(_regression_batches(2), _regression_batches(1, seed=1), 1, return_weight=True)
    np.testing.assert_array_equal(weights, np.full((2, 1, 2), 0.25))


def test_architecture_added_to_the_package_works_by_name():
    class WideHPS(architecture_method.HPS):
        pass

    architecture_method.WideHPS = WideHPS
    try:
        trainer = _tiny_trainer("EW", "WideHPS")
        assert isinstance(trainer.model, WideHPS)
    finally:
        del architecture_method.WideHPS


def test_names_that_are_not_method_classes_are_refused():
    with pytest.raises(SystemExit):  # refused when parsed (argparse error, exit code 2)
        LibMTL_args.parse_args(["--weighting", "BatchedGradFallbackWarning"])
    with pytest.raises(ValueError, match="unknown weighting 'BatchedGradFallbackWarning'"):
        WEIGHTINGS.get("BatchedGradFallbackWarning")
    with pytest.raises(TypeError, match="not a subclass"):
        _tiny_trainer(nn.Linear)


# ------------------------------------------------------------------------- Trainer
def test_forward4loss_and_train_kwargs_as_libmtl_main():
    trainer = _tiny_trainer("EW")
    x, gts = _regression_batches(1)[0]
    losses, preds = trainer.forward4loss(trainer.model, x, gts, return_preds=True)
    assert losses.shape == (2,) and losses.requires_grad and set(preds) == {"a", "b"}
    expected = torch.stack([nn.functional.mse_loss(preds[t], gts[t]) for t in "ab"])
    torch.testing.assert_close(losses, expected)
    assert trainer.forward4loss(trainer.model, x, gts).shape == (2,)
    assert trainer.meter.losses["a"].bs == [4, 4]  # forward4loss records losses, as LibMTL's
    with pytest.raises(TypeError, match="unexpected keyword"):
        trainer.train(_regression_batches(1), _regression_batches(1), 1, unknown_option=1)


def test_multi_input_evaluation_reads_each_task_loader_once():
    torch.manual_seed(0)
    tasks = {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in "ab"}
    trainer = Trainer(tasks, "EW", "HPS", lambda: nn.Linear(3, 4), nn.ModuleDict({t: nn.Linear(4, 1) for t in "ab"}),
                      False, True, {"optim": "sgd", "lr": 0.1}, device="cpu")
    gen = torch.Generator().manual_seed(0)
    loaders = {"a": [(torch.randn(4, 3, generator=gen), torch.randn(4, 1, generator=gen)) for _ in range(3)],
               "b": [(torch.randn(2, 3, generator=gen), torch.randn(2, 1, generator=gen))]}
    seen = {}
    original = trainer.meter.get_score

    def spy():
        seen.update({t: list(trainer.meter.metrics[t].bs) for t in "ab"})
        original()

    trainer.meter.get_score = spy
    trainer.test(loaders)
    assert seen == {"a": [4, 4, 4], "b": [2]}


def test_libmtl_own_ew_class_runs_in_our_trainer():
    if importlib.util.find_spec("LibMTL") is None:
        pytest.skip("LibMTL is not installed")
    import libmtl_trainer_oracle  # noqa: F401
    from LibMTL.architecture import HPS as LibMTLHPS
    from LibMTL.weighting import EW as LibMTLEW

    trainer = _tiny_trainer(LibMTLEW)  # LibMTL's weighting, our architecture
    weights = trainer.train(_regression_batches(2), _regression_batches(1, seed=1), 1, return_weight=True)
    np.testing.assert_array_equal(weights, np.ones((2, 1, 2)))
    trainer = _tiny_trainer("RGB", LibMTLHPS)  # our weighting, LibMTL's architecture
    trainer.train(_regression_batches(2), _regression_batches(1, seed=1), 1)
    assert int(trainer.model.rgb_step_count) == 2


# --------------------------------------------------------------------------- utils
def test_utils_as_libmtl_main(capsys):
    assert get_root_dir() == str(Path(LibMTL_rgb.__file__).resolve().parent.parent)
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 1)))
    model[0].bias.requires_grad_(False)
    assert count_parameters(model) == (13, 10)
    assert "Total Params: 13" in capsys.readouterr().out
    replacement = torch.zeros(1, 3)
    set_param(model, "1.0.weight", replacement)
    assert model[1][0].weight is replacement and "weight" not in dict(model[1][0].named_parameters())
    assert set_param(model, "1.0.weight", mode="get") is replacement
    assert set_param(model, "0.missing", mode="get") is None


def test_state_created_by_init_param_follows_the_model_device():
    """LibMTL moves the model after ``init_param``; integer step counters stay on the CPU."""
    from LibMTL_rgb.libmtl_compat import move_created_state

    module = nn.Module()
    module.weights = nn.Parameter(torch.ones(3))
    module.register_buffer("ema", torch.zeros(3))
    module.register_buffer("step", torch.zeros((), dtype=torch.long))
    move_created_state(module, torch.device("meta"))
    assert module.weights.device.type == "meta" and isinstance(module.weights, nn.Parameter)
    assert module.ema.device.type == "meta" and module.step.device.type == "cpu"

