"""The RGB weighting adapter: Algorithm 1 semantics through the LibMTL contract."""
import math

import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb.rgb import rgb_step
from LibMTL_rgb.trainer import build_mtl_model


def make_model(num_tasks=3, rep_grad=False, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = build_mtl_model("RGB", "HPS", [f"t{i}" for i in range(num_tasks)], synthetic.encoder_class,
                            synthetic.decoders(num_tasks), rep_grad, False, torch.device("cpu"))
    return model.to(dtype)


def batch_losses(model, seed=0, num_tasks=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, synthetic.IN_DIM, generator=gen, dtype=torch.float64)
    y = torch.randn(16, num_tasks, generator=gen, dtype=torch.float64)
    out = model(x)
    return torch.stack([((out[f"t{i}"].squeeze(1) - y[:, i]) ** 2).mean() for i in range(num_tasks)])


def per_task_grads(model, losses):
    shared = list(model.get_share_params())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)]) for loss in losses]
    return torch.stack(rows)


def shared_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.get_share_params()])


def test_shared_gradient_is_rgb_step_direction_over_consecutive_steps():
    model = make_model()
    ema = None
    for step in range(1, 5):
        losses = batch_losses(model, seed=step)
        G = per_task_grads(model, losses).detach()
        expected = rgb_step(G, ema, mu=0.8, lam=0.5, steps=7, lr=0.2, rotate=step % 2 == 0)
        ema = expected.ema
        weights = model.backward(losses, rgb_mu=0.8, rgb_lambda=0.5, rgb_steps=7, rgb_lr=0.2, rgb_interval=2)
        assert np.array_equal(weights, np.ones(3))
        torch.testing.assert_close(shared_grad(model), expected.direction, rtol=0, atol=1e-12)
        assert model.rgb_diagnostics["rotated"] == (step % 2 == 0)
        assert model.rgb_diagnostics["steps"] == (7 if step % 2 == 0 else 0)
        torch.testing.assert_close(model.rgb_ema, ema, rtol=0, atol=0)
        for p in model.parameters():
            p.grad = None


def test_task_specific_parameters_keep_their_own_task_gradient():
    model = make_model()
    losses = batch_losses(model)
    expected = {t: torch.autograd.grad(losses[i], list(model.decoders[t].parameters()), retain_graph=True)
                for i, t in enumerate(model.task_name)}
    model.backward(losses)
    for t, grads in expected.items():
        for p, g in zip(model.decoders[t].parameters(), grads):
            torch.testing.assert_close(p.grad, g)


def test_diagnostics_are_readable_and_bounded():
    model = make_model(num_tasks=4)
    assert model.rgb_diagnostics == {}
    model.backward(batch_losses(model, num_tasks=4), rgb_steps=10)
    diag = model.rgb_diagnostics
    assert diag["steps"] == 10 and diag["rotated"] is True
    assert 0.0 <= diag["angle_mean"] <= diag["angle_max"] <= math.pi / 2
    assert 0.0 <= diag["conflict"] <= 1.0 and 0.0 <= diag["proximity"] <= 1.0


def test_adaptive_steps_start_at_min_and_follow_eq2():
    model = make_model()
    kwargs = dict(rgb_adaptive=True, rgb_min_steps=2, rgb_max_steps=40, rgb_k_std=0.05)
    model.backward(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) * batch_losses(model), **kwargs)
    assert model.rgb_diagnostics["steps"] == 2  # K_1 = alpha_min
    prev = model.rgb_prev_losses.clone()
    losses = batch_losses(model, seed=3)
    delta = (losses.detach() - prev) / (prev + 1e-8)
    s = float(delta.std())
    expected = int(math.floor(2 + 38 * s / (s + 0.05) + 0.5))
    model.backward(losses, **kwargs)
    assert model.rgb_diagnostics["steps"] == expected


def test_state_round_trips_through_state_dict():
    first, second = make_model(seed=0), make_model(seed=1)
    for step in range(3):
        first.backward(batch_losses(first, seed=step), rgb_interval=2)
    second.load_state_dict(first.state_dict())
    assert second._rgb_t == 3
    losses_a, losses_b = batch_losses(first, seed=9), batch_losses(second, seed=9)
    first.backward(losses_a, rgb_interval=2)
    second.backward(losses_b, rgb_interval=2)
    torch.testing.assert_close(shared_grad(first), shared_grad(second), rtol=0, atol=0)
    assert first.rgb_diagnostics["rotated"] and second.rgb_diagnostics["rotated"]  # t = 4


def test_zero_gradient_task_gives_finite_update():
    model = make_model()
    out = model(torch.randn(8, synthetic.IN_DIM, dtype=torch.float64))
    losses = torch.stack([out["t0"].pow(2).mean(), out["t1"].mean() * 0.0, out["t2"].abs().mean()])
    model.backward(losses)
    assert torch.isfinite(shared_grad(model)).all()


def test_non_finite_loss_names_the_task():
    model = make_model()
    losses = batch_losses(model)
    losses = losses * torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="'t1'"):
        model.backward(losses)


class _InfGradient(torch.autograd.Function):
    """Identity whose backward returns inf where the incoming gradient is non-zero."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.where(grad != 0, torch.full_like(grad, float("inf")), grad)


def test_non_finite_gradient_names_the_task():
    model = make_model()
    out = model(torch.randn(8, synthetic.IN_DIM, dtype=torch.float64))
    losses = torch.stack([out["t0"].pow(2).mean(), out["t1"].pow(2).mean(), _InfGradient.apply(out["t2"]).mean()])
    assert torch.isfinite(losses).all()
    with pytest.raises(FloatingPointError, match="'t2'.*gradient"):
        model.backward(losses)


def test_rep_grad_is_refused_at_construction():
    with pytest.raises(ValueError, match="rep_grad=False"):
        make_model(rep_grad=True)


@pytest.mark.parametrize("bad, match", [
    (dict(rgb_mu=1.0), "rgb_mu"), (dict(rgb_interval=0), "rgb_interval"), (dict(rgb_eps=0.0), "rgb_eps"),
    (dict(rgb_steps=-1), "rgb_steps"), (dict(rgb_adaptive=True, rgb_k_std=0.0), "rgb_k_std"),
    (dict(rgb_adaptive=True, rgb_min_steps=9, rgb_max_steps=3), "rgb_min_steps"),
])
def test_bad_options_are_clear_errors(bad, match):
    model = make_model()
    with pytest.raises(ValueError, match=match):
        model.backward(batch_losses(model), **bad)
