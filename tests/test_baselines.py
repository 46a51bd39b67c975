"""The hand-written baselines (SI, RLW, DWA, UW, GradNorm, FAMO) against their papers'
formulas on hand-computed cases, plus construction errors, CLI flags and one Trainer step
for every baseline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer
from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.registry import WEIGHTINGS, hyperparameters_of
from LibMTL_rgb.weighting.famo import adam_step
from jacobian_model import jacobian_model, set_task, step

# 3 tasks, gradients G (rows), losses L.
G = torch.tensor([[1.0, 0.0, 2.0], [0.0, -3.0, 1.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
L = [0.5, 2.0, 4.0]
BASELINES = ["SI", "RLW", "DWA", "UW", "GradNorm", "MGDA", "PCGrad", "GradDrop", "GradVac", "CAGrad",
             "IMTL", "Nash_MTL", "FAMO", "FairGrad", "Aligned_MTL", "UPGrad", "DualProj"]


def test_si_gradient_is_sum_of_gradients_over_losses():
    weights, grad = step(jacobian_model("SI", G, L))
    expected = sum(G[i] / L[i] for i in range(3))
    torch.testing.assert_close(grad, expected)
    np.testing.assert_allclose(weights, [2.0, 0.5, 0.25])


def test_si_refuses_non_positive_losses():
    with pytest.raises(ValueError, match="positive"):
        step(jacobian_model("SI", G, [1.0, 0.0, 2.0]))


def test_rlw_weights_are_softmax_of_a_standard_normal_draw():
    torch.manual_seed(3)
    z = torch.randn(3)
    expected = torch.exp(z) / torch.exp(z).sum()
    torch.manual_seed(3)
    weights, grad = step(jacobian_model("RLW", G, L))
    np.testing.assert_allclose(weights, expected.numpy(), rtol=1e-6)
    assert weights.sum() == pytest.approx(1.0)
    torch.testing.assert_close(grad, torch.from_numpy(weights) @ G)
    second, _ = step(jacobian_model("RLW", G, L))
    assert not np.allclose(second, weights)  # a new draw every step


def test_dwa_weights_from_the_loss_buffer():
    model = jacobian_model("DWA", G, L)
    model.train_loss_buffer = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [4.0, 2.0, 0.0]])
    model.epoch = 2  # r = L(1)/L(0) = [0.5, 1, 0.5]
    weights, grad = step(model, T=2.0)
    e_small, e_large = math.exp(0.25), math.exp(0.5)
    total = 2 * e_small + e_large
    expected = [3 * e_small / total, 3 * e_large / total, 3 * e_small / total]
    np.testing.assert_allclose(weights, expected)
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64) @ G)
    model.epoch = 1
    np.testing.assert_array_equal(step(model)[0], np.ones(3))  # first two epochs: equal weights


def test_uw_objective_and_its_log_variance_gradient():
    model = jacobian_model("UW", G, L)
    assert "uw_log_vars" in dict(model.named_parameters())
    model.uw_log_vars.grad = None
    weights, grad = step(model)
    half_precision = 0.5 * math.exp(0.5)  # s = -0.5: 1 / (2 σ²) = e^{0.5} / 2
    np.testing.assert_allclose(weights, [half_precision] * 3, rtol=1e-6)
    torch.testing.assert_close(grad, half_precision * G.sum(0), rtol=1e-6, atol=1e-6)
    # d/ds [½(e^{-s} L + s)] = ½(1 − e^{-s} L)
    expected = [0.5 * (1 - math.exp(0.5) * loss) for loss in L]
    np.testing.assert_allclose(model.uw_log_vars.grad.numpy(), expected, rtol=1e-6)


def test_loss_weightings_with_rep_grad_train_the_encoder_like_without():
    for name in ("UW", "SI", "FAMO"):
        _, plain = step(jacobian_model(name, G, L))
        _, via_rep = step(jacobian_model(name, G, L, rep_grad=True))
        torch.testing.assert_close(via_rep, plain, msg=name)


def test_gradnorm_weight_gradient_and_renormalisation():
    model = jacobian_model("GradNorm", G, L)
    norms = G.norm(dim=1).numpy()
    weights, grad = step(model, alpha=1.5)
    np.testing.assert_array_equal(weights, np.ones(3))
    torch.testing.assert_close(grad, G.sum(0))
    # Step 0: r_i = 1, target = mean ‖g‖; ∂L_grad/∂w_i = sign(‖g_i‖ − mean) ‖g_i‖.
    np.testing.assert_allclose(model.gradnorm_weights.grad.numpy(), np.sign(norms - norms.mean()) * norms)

    with torch.no_grad():
        model.gradnorm_weights.copy_(torch.tensor([3.0, 2.0, 1.0]))  # renormalised to sum 3
    model.gradnorm_weights.grad = None
    new_losses = [0.25, 2.0, 2.0]
    for i, loss in enumerate(new_losses):
        set_task(model, i, loss=loss)
    weights, grad = step(model, alpha=1.5)
    w = np.array([1.5, 1.0, 0.5])
    np.testing.assert_allclose(weights, w, rtol=1e-6)
    torch.testing.assert_close(grad, torch.from_numpy(w) @ G, rtol=1e-6, atol=1e-6)
    ratios = np.array(new_losses) / np.array(L)  # [0.5, 1, 0.5]
    target = (w * norms).mean() * (ratios / ratios.mean()) ** 1.5
    expected = np.sign(w * norms - target) * norms
    np.testing.assert_allclose(model.gradnorm_weights.grad.numpy(), expected, rtol=1e-6)
    # A descent step lowers the weight of every task whose gradient norm is above its target.
    above = w * norms > target
    assert above.any() and (~above).any()
    assert np.all((model.gradnorm_weights.grad.numpy() > 0) == above)


def test_famo_weights_and_logit_update():
    model = jacobian_model("FAMO", G, L)
    weights, grad = step(model, FAMO_w_lr=0.1, FAMO_w_gamma=0.0)
    inverse = 1.0 / (np.array(L) + 1e-8)
    np.testing.assert_allclose(weights, inverse / inverse.sum(), rtol=1e-6)  # z uniform
    torch.testing.assert_close(grad, torch.from_numpy(weights) @ G, rtol=1e-6, atol=1e-6)

    new_losses = [0.25, 2.0, 1.0]  # log-decreases δ = [log 2, 0, log 4]
    for i, loss in enumerate(new_losses):
        set_task(model, i, loss=loss)
    weights, _ = step(model, FAMO_w_lr=0.1, FAMO_w_gamma=0.0)
    delta = np.log(2.0), 0.0, np.log(4.0)
    g = (np.array(delta) - np.mean(delta)) / 3  # z ⊙ (δ − zᵀδ) with z = 1/3
    logits = -0.1 * g / (np.abs(g) + 1e-8)  # Adam's first step: −lr · g / (|g| + ε)
    np.testing.assert_allclose(model.famo_logits.numpy(), logits, rtol=1e-5)
    z = np.exp(logits) / np.exp(logits).sum()
    inverse = 1.0 / (np.array(new_losses) + 1e-8)
    np.testing.assert_allclose(weights, z * inverse / (z * inverse).sum(), rtol=1e-5)
    # the task whose loss fell fastest (δ largest) gets the smallest logit
    assert np.argmin(model.famo_logits.numpy()) == 2


def test_famo_update_w_replaces_the_next_step_update():
    model = jacobian_model("FAMO", G, L)
    step(model)
    model.update_w(torch.tensor([0.25, 2.0, 1.0], dtype=torch.float64))
    after_update = model.famo_logits.clone()
    assert not torch.equal(after_update, torch.zeros(3))
    step(model)
    torch.testing.assert_close(model.famo_logits, after_update)  # no second update
    assert {"famo_logits", "famo_adam_m", "famo_adam_v", "famo_adam_step", "famo_prev_losses"} <= set(model.state_dict())


def test_adam_step_matches_torch_adam():
    gen = torch.Generator().manual_seed(0)
    ours = torch.randn(4, generator=gen, dtype=torch.float64)
    theirs = ours.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theirs], lr=0.05, weight_decay=0.01)
    m, v, count = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), torch.zeros((), dtype=torch.long)
    for _ in range(4):
        grad = torch.randn(4, generator=gen, dtype=torch.float64)
        adam_step(ours, grad, m, v, count, lr=0.05, weight_decay=0.01)
        theirs.grad = grad.clone()
        optimizer.step()
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["RGB", "MoCo"])
def test_methods_without_rep_grad_support_raise_at_construction(name):
    assert not WEIGHTINGS.get(name).supports_rep_grad
    with pytest.raises(ValueError, match="rep_grad"):
        jacobian_model(name, G, L, rep_grad=True)


def _non_default(hp):
    if isinstance(hp.default, bool):
        return not hp.default, ["--no-" + hp.name] if hp.default else ["--" + hp.name]
    if hp.choices is not None:
        value = next(c for c in hp.choices if c != hp.default)
    elif isinstance(hp.default, int):
        value = hp.default + 1
    elif isinstance(hp.default, float):
        value = hp.default * 0.5 + 0.125
    else:
        raise AssertionError(f"no test value for {hp}")
    return value, [f"--{hp.name}", str(value)]


@pytest.mark.parametrize("name", BASELINES)
def test_every_flag_reaches_weight_args(name):
    cls = WEIGHTINGS.get(name)
    parser = make_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    declared = hyperparameters_of(cls)
    assert name in WEIGHTINGS
    for hp in declared:
        assert f"--{hp.name}" in flags and hp.help.strip()
        value, argv = _non_default(hp)
        kwargs, _, _ = prepare_args(parser.parse_args(["--weighting", name, *argv]), verbose=False)
        assert kwargs["weight_args"][hp.name] == value
    kwargs, _, _ = prepare_args(parser.parse_args(["--weighting", name]), verbose=False)
    assert kwargs["weight_args"] == {hp.name: hp.default for hp in declared}


def test_libmtl_flag_names_and_defaults():
    expected = {"T": 2.0, "alpha": 1.5, "calpha": 0.5, "rescale": 1, "GradVac_beta": 0.5, "leak": 0.0,
                "mgda_gn": "none", "update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0,
                "FAMO_w_lr": 0.025, "FAMO_w_gamma": 1e-3, "FairGrad_alpha": 1.0,
                "UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4}
    params = make_parser().parse_args([])
    assert {name: getattr(params, name) for name in expected} == expected


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_trains_a_step_in_the_trainer(name):
    rep_grad = WEIGHTINGS.get(name).supports_rep_grad and name in ("MGDA", "UW", "GradNorm", "DWA", "PCGrad")
    torch.manual_seed(0)
    parser = make_parser()
    params = parser.parse_args(["--weighting", name, "--lr", "0.01", *(["--rep_grad"] if rep_grad else [])])
    kwargs, optim_param, scheduler_param = prepare_args(params, verbose=False)
    tasks = 3
    trainer = Trainer(synthetic.task_dict(tasks), name, "HPS", synthetic.encoder_class, synthetic.decoders(tasks),
                      params.rep_grad, False, optim_param, scheduler_param, device="cpu", **kwargs)
    before = [p.detach().clone() for p in trainer.model.encoder.parameters()]
    train, test = synthetic.loaders(tasks, batch_size=32, train_size=64, test_size=32)
    weights = trainer.train(train, test, epochs=1, return_weight=True)
    assert np.isfinite(weights).all() and weights.shape == (tasks, 1, 2)
    after = list(trainer.model.encoder.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
