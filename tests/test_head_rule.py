"""The head rule, for every registered weighting: after ``backward`` the task-specific
parameters (decoders) hold exactly ``∇ Σ_t w_t ℓ_t`` for the weights ``w`` that ``backward``
returned (ones when it returns None), ``ℓ_t`` the losses the method weights (the losses
themselves; IMTL-L's ``e^s L − s``; DB-MTL's ``log L``). Exceptions, as documented in
``docs/methods.md``: MoDo/SDMGrad (three batches, no task weights on the heads)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting.db_mtl import LOG_EPS as DB_LOG_EPS
from LibMTL_rgb.weighting.imtl_loss import imtl_scaled_losses

TASKS = ("a", "b", "c")
MULTI_SAMPLE = {"MoDo": 1.0 / 3.0, "SDMGrad": 1.0}
#: the losses each method's weights apply to
WEIGHTED_LOSSES = {
    "IMTL": lambda model, losses: imtl_scaled_losses(losses, model.imtl_log_scales),
    "DB_MTL": lambda model, losses: torch.log(losses + DB_LOG_EPS),
}


def make_model(name: str, rep_grad: bool = False):
    torch.manual_seed(0)
    decoders = nn.ModuleDict({t: nn.Linear(4, 1) for t in TASKS})
    model = build_mtl_model(name, "HPS", list(TASKS), lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh()), decoders,
                            rep_grad, False, torch.device("cpu")).double()
    model.epoch, model.epochs = 3, 10
    model.train_loss_buffer = np.array([[2.0, 1.0, 0.0, 0.0], [1.0, 1.5, 0.0, 0.0], [4.0, 2.0, 0.0, 0.0]])
    if name == "STCH":  # after the warm-up, with a nadir point
        model.stch_nadir_sum.fill_(1.0)
        model.stch_nadir_count.fill_(1)
    return model


def batch_losses(model, seed: int, size: int = 5) -> torch.Tensor:
    x = torch.randn(size, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out = model(x)
    return torch.stack([out[t].pow(2).mean() + 0.3 * (k + 1) for k, t in enumerate(TASKS)])


def head_params(model) -> list[nn.Parameter]:
    return list(model.decoders.parameters())


def weighting_args(name: str) -> dict:
    return {"STCH": {"STCH_warmup_epoch": 2}, "GradDrop": {}}.get(name, {})


NAMES = sorted(n for n in WEIGHTINGS.names() if n not in MULTI_SAMPLE)
#: bilevel.py's backward (outside a bilevel loop) back-propagates Σ_t w_t L_t itself
BY_CONSTRUCTION = {"MOML", "FORUM", "AutoLambda"}


@pytest.mark.parametrize("name", sorted(WEIGHTINGS.names()))
def test_every_registered_weighting_opts_into_the_head_rule(name):
    assert WEIGHTINGS.get(name).head_rule or name in BY_CONSTRUCTION


def test_libmtl_style_custom_weighting_keeps_libmtls_contract():
    """A LibMTL-derived weighting (``head_rule`` False) gets LibMTL's heads: Σ_t ∇L_t after
    ``mode='backward'``, whatever weights it returns (tests/test_libmtl_dropin.py: same runs)."""
    from LibMTL_rgb.weighting import AbsWeighting

    class Halves(AbsWeighting):
        def backward(self, losses, **kwargs):
            grads = self._get_grads(losses, mode="backward")
            self._reset_grad(0.5 * grads.sum(0))
            return np.full(len(losses), 0.5)

    model = make_model(Halves)
    losses = batch_losses(model, seed=6)
    heads = head_params(model)
    expected = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    model.backward(losses)
    for param, value in zip(heads, expected):
        torch.testing.assert_close(param.grad, value, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rep_grad", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_heads_get_the_gradient_of_the_weighted_losses(name, rep_grad):
    klass = WEIGHTINGS.get(name)
    if rep_grad and not klass.supports_rep_grad:
        pytest.skip(f"{name} refuses rep_grad")
    if not rep_grad and name == "GradDrop":
        pytest.skip("GradDrop runs on representation gradients")
    model = make_model(name, rep_grad)
    losses = batch_losses(model, seed=1)
    weighted = WEIGHTED_LOSSES.get(name, lambda model, losses: losses)(model, losses)
    heads = head_params(model)
    per_task = per_task_grads(weighted, heads)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    weights = model.backward(losses, **weighting_args(name))
    w = np.ones(len(TASKS)) if weights is None else np.asarray(weights, dtype=np.float64)
    assert not np.allclose(w, 1.0) or name in RETURN_ONES, "a case where the weights matter"
    if not klass.heads_take_returned_weights:  # documented: weights of other vectors than ∇L_t, or of no loss
        assert name in UNWEIGHTED_HEADS
        w = np.ones(len(TASKS))
    for k, param in enumerate(heads):
        expected = sum(float(w[t]) * per_task[t][k] for t in range(len(TASKS)))
        torch.testing.assert_close(param.grad, expected, rtol=1e-12, atol=1e-14)


#: heads get their own task's gradient (docs/methods.md, the head rule): weights of other vectors
#: (DB_MTL, MoCo) or coefficients of a direction-changing update (as LibMTL main and the authors' code)
UNWEIGHTED_HEADS = {"DB_MTL", "MoCo", "PCGrad", "GradVac", "CAGrad", "Aligned_MTL", "UPGrad", "DualProj"}

#: weights of one here: no weights (EW, RGB, GradDrop), DWA's and GradNorm's first steps, no
#: conflicting gradients in this case (PCGrad, GradVac)
RETURN_ONES = {"EW", "RGB", "GradDrop", "DWA", "GradNorm", "PCGrad", "GradVac"}


def per_task_grads(losses: torch.Tensor, params: list) -> list[list[torch.Tensor]]:
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)])
    return rows


@pytest.mark.parametrize("name", sorted(MULTI_SAMPLE))
def test_multi_sample_heads_get_the_scaled_sum_over_batches(name):
    model = make_model(name)
    batches = tuple(batch_losses(model, seed=s, size=2 + s) for s in range(3))
    heads = head_params(model)
    expected = torch.autograd.grad(torch.stack(batches).sum() * MULTI_SAMPLE[name], heads, retain_graph=True)
    model.backward(batches)
    for param, value in zip(heads, expected):
        torch.testing.assert_close(param.grad, value, rtol=1e-12, atol=1e-14)


def test_nash_mtl_heads_get_alpha_weighted_gradients_and_the_shared_update_is_clipped():
    model = make_model("Nash_MTL")
    losses = batch_losses(model, seed=4)
    heads = head_params(model)
    per_task = per_task_grads(losses, heads)
    model.zero_grad(set_to_none=True)
    alpha = model.backward(losses, max_norm=1e-3)
    for k, param in enumerate(heads):
        expected = sum(float(alpha[t]) * per_task[t][k] for t in range(len(TASKS)))
        torch.testing.assert_close(param.grad, expected, rtol=1e-12, atol=1e-14)
    shared = torch.cat([p.grad.reshape(-1) for p in model.get_share_params()])
    assert float(shared.norm()) == pytest.approx(1e-3, rel=1e-5)  # clip_grad_norm_'s ε = 1e-6, as the authors
    assert float(np.linalg.norm(alpha)) > 1e-2  # α itself is not clipped


def test_direct_mode_backward_calls_still_give_heads_the_plain_sum():
    """Outside ``backward`` (LibMTL's ``_get_grads(mode='backward')`` contract): Σ_t ∇L_t."""
    model = make_model("MGDA")
    losses = batch_losses(model, seed=2)
    heads = head_params(model)
    expected = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    model._get_grads(losses, mode="backward")
    for param, value in zip(heads, expected):
        torch.testing.assert_close(param.grad, value, rtol=1e-12, atol=1e-14)
