"""RGB inside an installed LibMTL (``LibMTL_rgb.integrations.libmtl.register``).

Skipped only when LibMTL is not installed (CI installs ``LibMTL==1.1.5``); any other import
failure is an error.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

if importlib.util.find_spec("LibMTL") is None:
    pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)", allow_module_level=True)

from libmtl_trainer_oracle import LegacyLoader, cpu_trainer_class  # noqa: E402  (makes LibMTL 1.1.5 importable)

import LibMTL  # noqa: E402
import LibMTL.config  # noqa: E402
import LibMTL.weighting  # noqa: E402
from LibMTL.architecture import HPS  # noqa: E402
from LibMTL.loss import CELoss  # noqa: E402
from LibMTL.metrics import AccMetric  # noqa: E402
from LibMTL.weighting.abstract_weighting import AbsWeighting as LibMTLAbsWeighting  # noqa: E402

from LibMTL_rgb.integrations.libmtl import register  # noqa: E402
from LibMTL_rgb.rgb import rgb_step  # noqa: E402
from LibMTL_rgb.weighting import RGB as OurRGB  # noqa: E402

TASKS = ("a", "b")
IN_DIM, HIDDEN, CLASSES, BATCH = 6, 5, 3, 8


@pytest.fixture(scope="module")
def rgb_class():
    return register()


def _batches(num: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        x = torch.randn(BATCH, IN_DIM, generator=gen)
        out.append((x, {t: torch.randint(0, CLASSES, (BATCH,), generator=gen) for t in TASKS}))
    return out


def _task_dict():
    return {t: {"metrics": ["acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]} for t in TASKS}


def _encoder():
    return nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.Tanh())


def _decoders():
    return nn.ModuleDict({t: nn.Linear(HIDDEN, CLASSES) for t in TASKS})


def test_register_adds_rgb_to_libmtl(rgb_class):
    assert LibMTL.weighting.__dict__["RGB"] is rgb_class
    assert issubclass(rgb_class, LibMTLAbsWeighting) and issubclass(rgb_class, OurRGB)
    assert register() is rgb_class  # idempotent: no duplicate flags, no double wrapping


def test_libmtl_args_and_prepare_args_carry_rgb_flags(rgb_class):
    params = LibMTL.config.LibMTL_args.parse_args(["--weighting", "RGB", "--rgb_steps", "7", "--rgb_mu", "0.5"])
    kwargs, optim_param, _ = LibMTL.config.prepare_args(params)
    assert kwargs["weight_args"]["rgb_steps"] == 7
    assert kwargs["weight_args"]["rgb_mu"] == 0.5
    assert set(kwargs["weight_args"]) == {hp.name for hp in OurRGB.hyperparameters}
    assert optim_param["optim"] == "adam"
    ew_kwargs, _, _ = LibMTL.config.prepare_args(LibMTL.config.LibMTL_args.parse_args(["--weighting", "DWA"]))
    assert ew_kwargs["weight_args"] == {"T": 2.0}  # other methods still go through LibMTL's own code


def test_libmtl_trainer_trains_two_steps_with_rgb(rgb_class):
    torch.manual_seed(0)
    params = LibMTL.config.LibMTL_args.parse_args(["--weighting", "RGB", "--rgb_steps", "3", "--lr", "0.05"])
    kwargs, optim_param, scheduler_param = LibMTL.config.prepare_args(params)
    trainer = cpu_trainer_class()(
        task_dict=_task_dict(), weighting=LibMTL.weighting.__dict__[params.weighting], architecture=HPS,
        encoder_class=_encoder, decoders=_decoders(), rep_grad=False, multi_input=False,
        optim_param=optim_param, scheduler_param=scheduler_param, **kwargs,
    )
    before = [p.detach().clone() for p in trainer.model.encoder.parameters()]
    seen = []
    original_backward = trainer.model.backward

    def spy(losses, **weight_args):
        seen.append((losses.detach().clone(), weight_args))
        return original_backward(losses, **weight_args)

    trainer.model.backward = spy
    weights = trainer.train(LegacyLoader(_batches(2, 0)), LegacyLoader(_batches(1, 1)), epochs=1, return_weight=True)
    assert len(seen) == 2
    assert all(bool(torch.isfinite(losses).all()) for losses, _ in seen)
    assert seen[0][1]["rgb_steps"] == 3
    np.testing.assert_array_equal(weights, np.ones((2, 1, 2)))
    assert int(trainer.model.rgb_step_count) == 2
    assert trainer.model.rgb_diagnostics["steps"] == 3
    moved = [not torch.equal(b, p) for b, p in zip(before, trainer.model.encoder.parameters())]
    assert all(moved)


def test_shared_gradient_equals_pure_rgb_step(rgb_class):
    torch.manual_seed(1)
    model = cpu_trainer_class()(
        task_dict=_task_dict(), weighting=rgb_class, architecture=HPS, encoder_class=_encoder,
        decoders=_decoders(), rep_grad=False, multi_input=False,
        optim_param={"optim": "sgd", "lr": 0.1, "momentum": 0.0}, scheduler_param=None,
        weight_args={}, arch_args={},
    ).model.double()
    x, labels = _batches(1, 2)[0]
    out = model(x.double())
    losses = torch.stack([nn.functional.cross_entropy(out[t], labels[t]) for t in TASKS])
    shared = list(model.encoder.parameters())
    grads = torch.stack([
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], shared, retain_graph=True)])
        for i in range(len(TASKS))
    ])
    expected = rgb_step(grads, None, mu=0.9, lam=0.1, steps=4, lr=0.2).direction
    model.backward(losses, rgb_steps=4, rgb_lambda=0.1, rgb_lr=0.2)
    actual = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


def test_rep_grad_is_refused_at_construction(rgb_class):
    with pytest.raises(ValueError, match="rep_grad"):
        cpu_trainer_class()(
            task_dict=_task_dict(), weighting=rgb_class, architecture=HPS, encoder_class=_encoder,
            decoders=_decoders(), rep_grad=True, multi_input=False,
            optim_param={"optim": "adam", "lr": 1e-3}, scheduler_param=None, weight_args={}, arch_args={},
        )
