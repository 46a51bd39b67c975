"""The MER diagnostics on the Gramian path (no ``[T, D]`` matrix): from the weighting's
``TaskGeometry`` (``K = G Gᵀ``, ``G v``, ``‖v‖²``, RGB's ``G d_t`` and ``‖d_t‖²``), the same rows as
on the matrix path (Gramian from parameter chunks or from the engine, asked or automatic), and no
D-sized tensor created by the diagnostics."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import synthetic
from LibMTL_rgb.gradient_diagnostics import GradientDiagnostics
from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting
from LibMTL_rgb.weighting.task_geometry import TaskGeometry

TASKS = ["t0", "t1", "t2"]
STEPS = 4
#: rgb_interval 2: steps without (b = 0) and with rotation; λ > 0: a unique minimiser of Eq. 1 for GMAE
METHODS = {"RGB": {"rgb_lambda": 0.5, "rgb_interval": 2, "rgb_steps": 3}, "UPGrad": {}, "MGDA": {}}


pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def make_model(weighting: str, path: str):
    torch.manual_seed(0)
    model = build_mtl_model(weighting, "HPS", TASKS, synthetic.encoder_class, synthetic.decoders(len(TASKS)),
                            False, False, torch.device("cpu"))
    if path in ("gramian", "engine"):
        model.grad_method = "gramian"
        model.gramian_computer = "engine" if path == "engine" else "chunks"
    elif path == "over_budget":  # the automatic switch: the [T, D] matrix does not fit 1 byte
        model.grad_memory_budget = 1
    else:
        model.grad_method = "loop"
    return model


def losses_of(model, seed: int) -> torch.Tensor:
    x = torch.randn(16, synthetic.IN_DIM, generator=torch.Generator().manual_seed(seed))
    out = model(x)
    return torch.stack([(out["t0"] - 1).pow(2).mean(), (out["t1"] + x[:, :1]).pow(2).mean(),
                        (out["t2"] - x[:, 1:2] * x[:, 2:3]).pow(2).mean()])


def diagnostics_rows(weighting: str, path: str, watch=None) -> list[dict]:
    """STEPS SGD steps with diagnostics on every step; ``watch`` wraps the diagnostics' own calls."""
    model = make_model(weighting, path)
    assert model.gradient_path() == ("matrix" if path == "matrix" else "gramian")
    args = METHODS[weighting]
    diag = GradientDiagnostics(model, args)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = []
    for seed in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        losses = losses_of(model, seed)
        with watch() if watch else _nothing():
            diag.before_backward(losses)
        model.backward(losses, **args)
        with watch() if watch else _nothing():
            rows.append(diag.after_backward())
        optimizer.step()
    return rows


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("path", ["gramian", "engine", "over_budget"])
@pytest.mark.parametrize("weighting", list(METHODS))
def test_gramian_rows_equal_matrix_rows(weighting, path):
    matrix, gramian = diagnostics_rows(weighting, "matrix"), diagnostics_rows(weighting, path)
    assert len(matrix) == len(gramian) == STEPS
    for step, (a, b) in enumerate(zip(matrix, gramian)):
        assert a.keys() == b.keys(), f"{weighting} step {step}: {a.keys() ^ b.keys()}"
        assert {"update_cos_min", "raw_conflict", "conflict"} <= a.keys()
        for key, value in a.items():
            if isinstance(value, float) and not math.isinf(value):
                assert b[key] == pytest.approx(value, rel=0, abs=1e-8), f"{weighting} step {step}: {key}"
            else:
                assert b[key] == value, f"{weighting} step {step}: {key}"
    if weighting == "RGB":  # GMAE on the rotation steps (2 and 4), not on the others
        assert ["gmae" in row for row in gramian] == [False, True, False, True]
        assert gramian[1]["angle_mean"] > 0.01 and gramian[3]["exact_angle_mean"] > 0.01


class LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an operation creates inside the mode."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                LargestTensor.largest = max(LargestTensor.largest, tensor.numel())
        return out


@pytest.mark.parametrize("path", ["gramian", "engine"])
@pytest.mark.parametrize("weighting", ["RGB", "UPGrad"])
def test_no_d_sized_tensor_on_the_gramian_path(weighting, path, monkeypatch):
    model = make_model(weighting, "matrix")
    dim = sum(p.numel() for p in model.get_share_params())
    LargestTensor.largest = 0
    diagnostics_rows(weighting, "matrix", watch=LargestTensor)
    assert LargestTensor.largest >= len(TASKS) * dim  # the matrix path's diagnostics hold G: the check can fail

    def no_matrix(self, *args, **kwargs):
        raise AssertionError("the [T, D] matrix was formed on the Gramian path")

    monkeypatch.setattr(AbsWeighting, "_compute_grad", no_matrix)
    LargestTensor.largest = 0
    rows = diagnostics_rows(weighting, path, watch=LargestTensor)
    assert all(row is not None and "update_cos_min" in row for row in rows)
    assert 0 < LargestTensor.largest < dim  # T×T and T-sized work only: not even one D-vector


def test_geometry_with_update_matches_the_vectors():
    """``v = Gᵀ w + β d``: ``G v`` and ``‖v‖²`` from ``K``, ``Ḡ d`` and ``‖d‖²`` alone."""
    generator = torch.Generator().manual_seed(3)
    G = torch.randn(4, 50, generator=generator)
    d = torch.randn(50, generator=generator)
    w = torch.randn(4, generator=generator)
    beta, eps = 0.7, 1e-3
    cross = (G @ d) / (G.norm(dim=1) + eps)  # Ḡ d, as RGB's step gives it
    kept = TaskGeometry.from_gramian(G @ G.T).with_normalized_ema(cross, d @ d, eps).with_update(w, beta)
    v = G.T @ w + beta * d
    expected = TaskGeometry.from_grads(G, update=v, ema=d)
    for field in ("gram", "update_product", "update_sq_norm", "ema_product", "ema_sq_norm"):
        torch.testing.assert_close(getattr(kept, field), getattr(expected, field), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="d_t"):
        TaskGeometry.from_gramian(G @ G.T).with_update(w, beta)
    with pytest.raises(ValueError, match="3 update weights for 4 tasks"):
        kept.with_update(w[:3])


def test_trainer_writes_the_same_diagnostics_on_both_paths(tmp_path):
    """``--diagnostics`` with ``--grad_method gramian`` end to end: diagnostics.csv as on the matrix path."""
    import csv

    from LibMTL_rgb import Trainer
    from LibMTL_rgb.run_logger import DIAGNOSTICS_CSV

    tables = {}
    for grad_method in ("loop", "gramian"):
        torch.manual_seed(0)
        trainer = Trainer(synthetic.task_dict(3), "UPGrad", "HPS", synthetic.encoder_class, synthetic.decoders(3),
                          False, False, {"optim": "sgd", "lr": 0.05}, save_path=str(tmp_path / grad_method),
                          device="cpu", diagnostics=True, grad_method=grad_method)
        assert trainer.model.gradient_path() == ("gramian" if grad_method == "gramian" else "matrix")
        train, test = synthetic.loaders(3, batch_size=16, train_size=32, test_size=16)
        trainer.train(train, test, 2)
        with open(tmp_path / grad_method / DIAGNOSTICS_CSV) as handle:
            tables[grad_method] = list(csv.DictReader(handle))
    assert len(tables["gramian"]) == 2 and tables["gramian"][0].keys() == tables["loop"][0].keys()
    for matrix, gramian in zip(tables["loop"], tables["gramian"]):
        for key in ("update_cos_min", "update_cos_mean", "raw_conflict", "conflict", "condition_number"):
            assert float(gramian[key]) == pytest.approx(float(matrix[key]), rel=0, abs=1e-8), key
