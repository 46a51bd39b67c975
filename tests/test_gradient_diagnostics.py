"""MER diagnostics of any weighting (App. A.8, Eqs. 3-6), GMAE / SD-MAE (Def. 2.8), and their
Trainer hooks (diagnostics.csv, diagnostics_summary.json, TensorBoard, STL restriction)."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer
from LibMTL_rgb.gradient_diagnostics import (
    GradientDiagnostics, mer_statistics, rgb_miss_correction, update_alignment,
)
from LibMTL_rgb.rgb import rgb_step
from LibMTL_rgb.run_logger import DIAGNOSTICS_CSV, DIAGNOSTICS_SUMMARY_JSON, SUMMARY_JSON, mean_loss_by_epoch
from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

F64 = torch.float64
S = 1 / math.sqrt(2)


# ------------------------------------------------------------ pure functions, by hand
def test_raw_orthogonal_gradients():
    stats = mer_statistics(torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=F64))
    assert stats["conflict"] == pytest.approx(0.5)  # (1 - 0) / 2
    assert stats["proximity"] == 0.0  # g_adj = g for a method that only reweights
    assert stats["condition_number"] == pytest.approx(1.0)  # R = I
    assert stats["mer_balance"] == pytest.approx(math.sqrt(1 / 1.5 * 1 / 1 * 1 / 2))
    assert stats["raw_conflict"] == stats["conflict"]


def test_adjusted_pcgrad_pair():
    """g1=(1,0), g2=(-1,1) conflict; PCGrad: g1'=(.5,.5), g2'=(0,1)."""
    raw = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    adjusted = torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=F64)
    stats = mer_statistics(raw, adjusted)
    assert stats["conflict"] == pytest.approx((1 - S) / 2)
    assert stats["proximity"] == pytest.approx((2 - math.sqrt(2)) / 4)  # both turned by 45°
    assert stats["condition_number"] == pytest.approx((1 + S) / (1 - S))  # eig of [[1,s],[s,1]]
    assert stats["raw_conflict"] == pytest.approx((1 + S) / 2)  # cos(g1, g2) = -1/√2
    expected = math.sqrt(1 / (1 + stats["conflict"]) / (1 + stats["proximity"]) / (1 + stats["condition_number"]))
    assert stats["mer_balance"] == pytest.approx(expected)


def test_identical_adjusted_gradients_are_ill_conditioned():
    raw = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    stats = mer_statistics(raw, torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=F64))
    assert stats["conflict"] == pytest.approx(0.0, abs=1e-7)  # ε of the normalisation
    assert math.isinf(stats["condition_number"]) and stats["mer_balance"] == 0.0


def test_shape_errors():
    with pytest.raises(ValueError, match="must match"):
        mer_statistics(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"\[T, D\]"):
        mer_statistics(torch.ones(3))


def test_update_alignment():
    out = update_alignment(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([1.0, 1.0]))
    assert out["update_cos_min"] == pytest.approx(S) and out["update_cos_mean"] == pytest.approx(S)
    out = update_alignment(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([1.0, 0.0]))
    assert out["update_cos_min"] == pytest.approx(-1.0) and out["update_cos_mean"] == pytest.approx(0.0)


def test_gmae_sd_mae_on_symmetric_pair():
    """Two unit gradients at ±θ/2 around the consensus: α* = θ/2 for both (λ = 0)."""
    theta = 1.0
    G = torch.tensor([[math.cos(theta / 2), math.sin(theta / 2)], [math.cos(theta / 2), -math.sin(theta / 2)]], dtype=F64)
    ema = rgb_step(G, None, steps=0).ema  # d_1 along the bisector
    none = rgb_miss_correction(torch.zeros(2, dtype=F64), G, ema)
    tol = 1e-6  # the exact solver's tolerance and Algorithm 1's ε
    assert none["exact_angle_mean"] == pytest.approx(theta / 2, abs=tol)
    assert none["gmae"] == pytest.approx(theta / 2, abs=tol)
    assert none["sd_mae"] == pytest.approx(theta, abs=tol)  # Def. 2.8: ε = -θ/2, centred on GMAE = θ/2
    exact = rgb_miss_correction(torch.full((2,), theta / 2, dtype=F64), G, ema)
    assert exact["gmae"] == pytest.approx(0.0, abs=tol) and exact["sd_mae"] == pytest.approx(0.0, abs=tol)


# ------------------------------------------------------------------ with a model
class FixedOrderPCGrad(AbsWeighting):
    """Two-task PCGrad in a fixed order that exposes its projected gradients (the
    ``adjusted_grads`` contract of gradient_diagnostics.py)."""

    def backward(self, losses, **kwargs):
        grads = self._get_grads(losses)
        g1, g2 = grads[0], grads[1]
        dot = g1 @ g2
        p1 = g1 - torch.clamp(dot, max=0) / (g2 @ g2) * g2
        p2 = g2 - torch.clamp(dot, max=0) / (g1 @ g1) * g1
        adjusted = torch.stack([p1, p2])
        if getattr(self, "record_adjusted_grads", False):
            self.adjusted_grads = adjusted
        self._reset_grad(adjusted.sum(0))
        return np.ones(2)


def _model(weighting):
    torch.manual_seed(0)
    return build_mtl_model(weighting, "HPS", ["t0", "t1"], synthetic.encoder_class, synthetic.decoders(2),
                           False, False, torch.device("cpu"))


def _losses(model, seed=0):
    x = torch.randn(16, synthetic.IN_DIM, generator=torch.Generator().manual_seed(seed))
    out = model(x)
    return torch.stack([(out["t0"] - 1).pow(2).mean(), (out["t1"] + x[:, :1]).pow(2).mean()])


def _per_task_grads(model, losses):
    params = [p for p in model.get_share_params() if p.requires_grad]
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def test_adjusted_grads_contract_is_used():
    model = _model(FixedOrderPCGrad)
    diag = GradientDiagnostics(model)
    losses = _losses(model)
    G = _per_task_grads(model, losses)
    diag.before_backward(losses)
    model.backward(losses)
    row = diag.after_backward()
    assert row["source"] == "adjusted"
    g1, g2 = G
    dot = g1 @ g2
    expected = mer_statistics(G, torch.stack([g1 - min(dot, 0) / (g2 @ g2) * g2, g2 - min(dot, 0) / (g1 @ g1) * g1]))
    for key in ("conflict", "proximity", "condition_number", "raw_conflict"):
        assert row[key] == pytest.approx(expected[key], rel=1e-5)
    assert model.adjusted_grads is None and model.record_adjusted_grads is False  # nothing kept between steps


def test_ew_gradients_are_computed_and_training_is_unchanged():
    """EW never forms G: the diagnostics compute it; the update must be the same as without."""
    plain, watched = _model("EW"), _model("EW")
    diag = GradientDiagnostics(watched)
    losses_plain, losses_watched = _losses(plain), _losses(watched)
    G = _per_task_grads(plain, losses_plain)
    plain.backward(losses_plain)
    diag.before_backward(losses_watched)
    watched.backward(losses_watched)
    row = diag.after_backward()
    assert row["source"] == "raw"
    assert row["raw_conflict"] == pytest.approx(mer_statistics(G)["conflict"], rel=1e-5)
    v = G.sum(0)  # EW's update direction
    assert row["update_cos_min"] == pytest.approx(update_alignment(G, v)["update_cos_min"], rel=1e-5)
    for p, q in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_rgb_rows_match_rgb_and_more_inner_steps_reduce_gmae():
    def first_step_row(steps):
        model = _model("RGB")
        # λ > 0: with λ = 0 two coplanar gradients have a whole line of minimisers (docs/benchmark.md)
        args = {"rgb_steps": steps, "rgb_lr": 1.0, "rgb_lambda": 1.0}
        diag = GradientDiagnostics(model, args)
        losses = _losses(model)
        diag.before_backward(losses)
        model.backward(losses, **args)
        row = diag.after_backward()
        assert row["source"] == "rotated" and row["inner_steps"] == steps
        assert row["conflict"] == pytest.approx(model.rgb_diagnostics["conflict"], rel=1e-6)
        assert row["proximity"] == pytest.approx(model.rgb_diagnostics["proximity"], rel=1e-6, abs=1e-9)
        return row

    few, many = first_step_row(1), first_step_row(100)
    assert few["exact_angle_mean"] == pytest.approx(many["exact_angle_mean"])  # same geometry
    assert few["gmae"] > 0.1 and many["gmae"] < 1e-5


def test_every_n_steps_and_epoch_means():
    model = _model("RGB")
    diag = GradientDiagnostics(model, every=2)
    rows = []
    for seed in range(4):
        losses = _losses(model, seed)
        diag.before_backward(losses)
        model.backward(losses)
        rows.append(diag.after_backward())
    assert [r is None for r in rows] == [True, False, True, False]
    summary = diag.end_epoch()
    assert summary["logged_steps"] == 2 and summary["source"] == "rotated"
    assert summary["conflict"] == pytest.approx((rows[1]["conflict"] + rows[3]["conflict"]) / 2)
    assert diag.end_epoch() == {}
    with pytest.raises(ValueError, match="diagnostics_every"):
        GradientDiagnostics(model, every=0)


# --------------------------------------------------------------------- Trainer hooks
def _trainer(tmp_path, **kwargs):
    torch.manual_seed(0)
    return Trainer(synthetic.task_dict(2), kwargs.pop("weighting", "RGB"), "HPS", synthetic.encoder_class,
                   synthetic.decoders(2), False, False, {"optim": "sgd", "lr": 0.05},
                   save_path=str(tmp_path), device="cpu", **kwargs)


def test_default_trainer_has_no_logger_but_writes_summary(tmp_path):
    trainer = _trainer(tmp_path)
    assert trainer.run_logger is None
    train, test = synthetic.loaders(2, train_size=32, test_size=32)
    trainer.train(train, test, 1)
    summary = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert summary["tasks"] == {"t0": {"metrics": ["mae"], "weight": [0]}, "t1": {"metrics": ["mae"], "weight": [0]}}
    assert summary["best"]["epoch"] == 0 and summary["epochs_done"] == 1
    assert not (tmp_path / DIAGNOSTICS_CSV).exists()


def test_trainer_logs_diagnostics_and_tensorboard(tmp_path):
    trainer = _trainer(tmp_path, diagnostics=True, tensorboard=True, weight_args={"rgb_steps": 3})
    train, test = synthetic.loaders(2, batch_size=16, train_size=32, test_size=32)
    trainer.train(train, test, 3, val_dataloaders=test)
    with open(tmp_path / DIAGNOSTICS_CSV) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(int(r["logged_steps"]) == 2 and r["source"] == "rotated" for r in rows)
    summary = json.loads((tmp_path / DIAGNOSTICS_SUMMARY_JSON).read_text())
    mode, losses = mean_loss_by_epoch(trainer.meter.history, trainer.task_name)
    best = min(losses, key=losses.get)
    assert mode == "val" and summary["at_min_mean_val_loss"]["epoch"] == best
    assert summary["at_min_mean_val_loss"]["conflict"] == pytest.approx(float(rows[best]["conflict"]))
    assert summary["at_best_epoch"]["epoch"] == trainer.meter.best_result["epoch"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))


def test_stl_task_trains_one_task(tmp_path):
    trainer = _trainer(tmp_path, weighting="EW", stl_task="t1", base_result={"t0": [1.0], "t1": [2.0]})
    assert trainer.task_name == ["t1"] and list(trainer.model.decoders) == ["t1"]
    assert trainer.meter.base_result == {"t1": [2.0]}
    train, test = synthetic.loaders(2, train_size=32, test_size=32)
    trainer.train(train, test, 1)
    assert list(json.loads((tmp_path / SUMMARY_JSON).read_text())["tasks"]) == ["t1"]
    with pytest.raises(ValueError, match="stl_task 'nope'"):
        _trainer(tmp_path, stl_task="nope")
