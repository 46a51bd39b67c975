"""Bilevel weightings (MOML, FORUM, AutoLambda): one step of each against a literal, slow
float64 implementation of its update formulas on a tiny model (written here from the papers /
the authors' code, independent of the library's functional machinery), their solvers, the
training loop they need (training + meta batches) and their flags."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from LibMTL_rgb import Trainer
from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric
from LibMTL_rgb.weighting.autolambda import FD_SCALE, meta_gradient
from LibMTL_rgb.weighting.bilevel import BilevelLoop
from LibMTL_rgb.weighting.forum import forum_gradients, forum_lambda_and_pi
from LibMTL_rgb.weighting.moml import unrolled_hypergradients
from LibMTL_rgb.weighting.min_norm import min_norm_weights
from LibMTL_rgb.weighting.simplex_qp import forum_dual_weights
from test_arch_weighting_matrix import loader as image_loader
from test_arch_weighting_matrix import make_trainer as make_image_trainer

IN, HIDDEN = 3, 4
BILEVEL = ["MOML", "FORUM", "AutoLambda"]
DOUBLE = torch.float64


# ----------------------------------------------------------------- tiny model
def task_dict(tasks):
    return {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in tasks}


def make_trainer(weighting, tasks=("a", "b", "c"), **optim):
    torch.manual_seed(0)
    encoder = lambda: nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh())  # noqa: E731
    decoders = nn.ModuleDict({t: nn.Linear(HIDDEN, 1) for t in tasks})
    optim_param = {"optim": "sgd", "lr": 0.05, **optim}
    trainer = Trainer(task_dict(tasks), weighting, "HPS", encoder, decoders, False, False, optim_param, device="cpu")
    trainer.model.double()
    return trainer


def batch(tasks, seed, size=6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, IN, generator=gen, dtype=DOUBLE)
    return x, {t: torch.randn(size, 1, generator=gen, dtype=DOUBLE) for t in tasks}


class Flat:
    """The model's parameters as one float64 vector, and the model's losses written out by
    hand: ``L_t = mean((V_t tanh(W x + b) + c_t − y_t)²)``."""

    def __init__(self, model, tasks):
        self.tasks = list(tasks)
        self.named = [(n, p) for n, p in model.named_parameters()]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in self.named]).clone()

    def split(self, theta):
        out, offset = {}, 0
        for name, p in self.named:
            out[name] = theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return out

    def losses(self, theta, data):
        params = self.split(theta)
        x, y = data
        h = torch.tanh(x @ params["encoder.0.weight"].T + params["encoder.0.bias"])
        return torch.stack([
            ((h @ params[f"decoders.{t}.weight"].T + params[f"decoders.{t}.bias"]) - y[t]).pow(2).mean()
            for t in self.tasks
        ])

    def grad(self, output, theta, **kwargs):
        return torch.autograd.grad(output, theta, **kwargs)[0]


def model_vector(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def adam_first_step(value, grad, lr):
    """``torch.optim.Adam``'s first step from zero moments."""
    var = value.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([var], lr=lr)
    var.grad = grad.detach().clone()
    optimizer.step()
    return var.detach()


# ---------------------------------------------------------------- AutoLambda
def test_autolambda_step_follows_the_authors_update():
    tasks = ("a", "b", "c")
    lr, momentum, wd, outer_lr = 0.05, 0.9, 1e-3, 0.01
    trainer = make_trainer("AutoLambda", tasks, momentum=momentum, weight_decay=wd)
    model, loop = trainer.model, BilevelLoop(trainer, None)
    train, meta = batch(tasks, 1), batch(tasks, 2)
    # one ordinary SGD step first, so that the virtual step has a momentum buffer to read
    loop.losses(batch(tasks, 3)).sum().backward()
    trainer.optimizer.step()
    ref = Flat(model, tasks)
    buffer = torch.cat([trainer.optimizer.state[p]["momentum_buffer"].reshape(-1) for p in model.parameters()])
    lam0 = torch.full((3,), 0.1, dtype=DOUBLE)

    # exact meta-gradient: d/dλ Σ_i L_i^meta(θ − α(m + ∇_θ Σ λ_i L_i^train(θ) + wd θ))
    lam = lam0.clone().requires_grad_(True)
    theta = ref.theta.clone().requires_grad_(True)
    g = ref.grad(lam @ ref.losses(theta, train), theta, create_graph=True)
    stepped = theta - lr * (momentum * buffer + g + wd * theta)
    exact = ref.grad(ref.losses(stepped, meta).sum(), lam)
    # the authors' central finite difference of the mixed derivative, literally
    theta_v = stepped.detach().requires_grad_(True)
    d = ref.grad(ref.losses(theta_v, meta).sum(), theta_v)
    eps = FD_SCALE / d.norm()
    with torch.no_grad():
        finite = -lr * (ref.losses(ref.theta + eps * d, train) - ref.losses(ref.theta - eps * d, train)) / (2 * eps)

    ours = meta_gradient(loop, train, meta, lam0.clone(), lr)
    torch.testing.assert_close(ours, finite, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours, exact, rtol=1e-3, atol=1e-8)  # O(ε²) from the exact derivative

    weights = model.bilevel_step(loop, train, meta, outer_lr=outer_lr, AutoLambda_init=0.1)
    lam1 = adam_first_step(lam0, finite, outer_lr)
    np.testing.assert_allclose(weights, lam1.numpy(), rtol=1e-9)
    # the model then takes the optimizer's step on Σ λ_i L_i (same training batch)
    theta = ref.theta.clone().requires_grad_(True)
    grad = ref.grad(lam1 @ ref.losses(theta, train), theta) + wd * ref.theta
    expected = ref.theta - lr * (momentum * buffer + grad)
    torch.testing.assert_close(model_vector(model), expected, rtol=1e-10, atol=1e-12)


def test_autolambda_makes_one_virtual_step_only():
    trainer = make_trainer("AutoLambda")
    data = batch(("a", "b", "c"), 1)
    with pytest.raises(ValueError, match="inner_step must be 1"):
        trainer.model.bilevel_step(BilevelLoop(trainer, None), data, data, inner_step=2)


# ---------------------------------------------------------------------- MOML
@pytest.mark.parametrize("inner_step", [1, 2])
def test_moml_step_follows_the_unrolled_hypergradient_and_mgda(inner_step):
    tasks = ("a", "b", "c")
    lr, inner_lr, outer_lr = 0.05, 0.3, 0.01
    trainer = make_trainer("MOML", tasks)
    model, loop = trainer.model, BilevelLoop(trainer, None)
    alpha0 = torch.tensor([0.3, -0.2, 0.1], dtype=DOUBLE)
    model.moml_logits.copy_(alpha0)
    train, meta = batch(tasks, 1), batch(tasks, 2)
    ref = Flat(model, tasks)

    def meta_losses_after_inner_steps(alpha):
        theta = ref.theta.clone().requires_grad_(True)
        for _ in range(inner_step):
            theta = theta - inner_lr * ref.grad(torch.softmax(alpha, 0) @ ref.losses(theta, train), theta, create_graph=True)
        return ref.losses(theta, meta)

    hyper = torch.autograd.functional.jacobian(meta_losses_after_inner_steps, alpha0)  # [T, T]
    ours = unrolled_hypergradients(loop, train, meta, alpha0, inner_lr, inner_step)
    torch.testing.assert_close(ours, hyper, rtol=1e-9, atol=1e-12)
    if inner_step == 1:  # LibMTL's closed form: −μ ∇F_i(ω_1)ᵀ [∇L_j(ω_0)]_j J_softmax(α)
        theta = ref.theta.clone().requires_grad_(True)
        per_task = torch.stack([ref.grad(ref.losses(theta, train)[j], theta) for j in range(3)])
        omega1 = (ref.theta - inner_lr * torch.softmax(alpha0, 0) @ per_task).requires_grad_(True)
        jac = torch.autograd.functional.jacobian(lambda a: torch.softmax(a, 0), alpha0)
        closed = torch.stack([-inner_lr * ref.grad(ref.losses(omega1, meta)[i], omega1) @ per_task.T @ jac for i in range(3)])
        torch.testing.assert_close(ours, closed, rtol=1e-9, atol=1e-12)

    weights = model.bilevel_step(loop, train, meta, outer_lr=outer_lr, inner_lr=inner_lr, inner_step=inner_step)
    # the upper level: min-norm point of the l2-normalised hyper-gradients; optimality: <h_i, d> >= ||d||²
    normalised = hyper / hyper.norm(dim=1, keepdim=True)
    gamma = min_norm_weights(normalised @ normalised.T)
    direction = gamma @ normalised
    assert torch.all(normalised @ direction >= direction @ direction - 1e-10)
    alpha1 = adam_first_step(alpha0, direction, outer_lr)
    torch.testing.assert_close(model.moml_logits, alpha1, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(weights, torch.softmax(alpha1, 0).numpy(), rtol=1e-12)
    theta = ref.theta.clone().requires_grad_(True)
    expected = ref.theta - lr * ref.grad(torch.softmax(alpha1, 0) @ ref.losses(theta, train), theta)
    torch.testing.assert_close(model_vector(model), expected, rtol=1e-8, atol=1e-11)


def test_min_norm_weights_solve_the_two_and_three_vector_cases():
    h = np.array([[1.0, 0.0], [0.2, 1.0]])
    gamma = min_norm_weights(torch.from_numpy(h @ h.T)).numpy()
    closed = np.clip((h[1] - h[0]) @ h[1] / np.sum((h[0] - h[1]) ** 2), 0, 1)  # weight of h_0
    np.testing.assert_allclose(gamma, [closed, 1 - closed], atol=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(5):
        h = rng.normal(size=(3, 6))
        gamma = min_norm_weights(torch.from_numpy(h @ h.T)).numpy()
        d = gamma @ h
        assert abs(gamma.sum() - 1) < 1e-12 and np.all(gamma >= 0)
        assert np.all(h @ d >= d @ d - 1e-9)  # KKT of the min-norm point of the convex hull


# --------------------------------------------------------------------- FORUM
def forum_reference_weights(rows, q, phi):
    """Brute force of the authors' direction problem for T = 2 on a fine grid of λ_1, with ν
    minimised exactly (convex quadratic in ν with lower bound max(πᵀλ, 0))."""
    q_sq = q @ q + 1e-8
    pi = phi - rows @ q / q_sq
    c = phi * q_sq
    lam1 = np.linspace(0.0, 1.0, 200001)
    a = lam1[:, None] * rows[0] + (1 - lam1)[:, None] * rows[1]
    lower = np.maximum(lam1 * pi[0] + (1 - lam1) * pi[1], 0.0)
    nu = np.maximum(lower, (c / 2 - a @ q) / (q @ q))
    objective = np.sum((a + nu[:, None] * q) ** 2, axis=1) - nu * c
    best = int(np.argmin(objective))
    return np.array([lam1[best], 1 - lam1[best], nu[best]]), pi, objective[best]


def test_forum_step_follows_the_authors_first_order_update():
    tasks = ("a", "b")
    lr, inner_lr, inner_step, outer_lr, phi = 0.05, 0.2, 3, 0.01, 0.1
    trainer = make_trainer("FORUM", tasks)
    model, loop = trainer.model, BilevelLoop(trainer, None)
    alpha0 = torch.tensor([0.2, -0.1], dtype=DOUBLE)
    model.forum_logits.copy_(alpha0)
    train, meta = batch(tasks, 1), batch(tasks, 2)
    ref = Flat(model, tasks)

    # ∇q = ∇_z f(α, ω) − (∇_α f(α, ω_K), 0), ω_K from K SGD steps on f(α, ·), held constant
    alpha = alpha0.clone().requires_grad_(True)
    theta = ref.theta.clone().requires_grad_(True)
    f = torch.softmax(alpha, 0) @ ref.losses(theta, train)
    grad_f = torch.cat(torch.autograd.grad(f, (alpha, theta)))
    omega = ref.theta.clone()
    for _ in range(inner_step):
        omega = omega.requires_grad_(True)
        omega = (omega - inner_lr * ref.grad(torch.softmax(alpha0, 0) @ ref.losses(omega, train), omega)).detach()
    grad_q = grad_f.clone()
    grad_q[:2] -= ref.grad(torch.softmax(alpha, 0) @ ref.losses(omega, train), alpha)
    meta_rows = []
    for i in range(2):
        g = ref.grad(ref.losses(theta, meta)[i], theta)
        meta_rows.append(torch.cat([torch.zeros(2, dtype=DOUBLE), g / (g.norm() + 1e-8)]))
    meta_rows = torch.stack(meta_rows)

    grads = forum_gradients(loop, train, meta, alpha0, inner_lr, inner_step)
    torch.testing.assert_close(grads.q, grad_q, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads.meta, meta_rows, rtol=1e-9, atol=1e-12)

    expected_w, pi, best = forum_reference_weights(meta_rows.numpy(), grad_q.numpy(), phi)
    w, our_pi = forum_lambda_and_pi(grads, phi)
    np.testing.assert_allclose(our_pi, pi, rtol=1e-12)
    np.testing.assert_allclose(w[:2], expected_w[:2], atol=2e-5)
    rows = np.vstack([meta_rows.numpy(), grad_q.numpy()[None]])
    ours = w @ (rows @ rows.T) @ w - w[2] * phi * (grad_q @ grad_q + 1e-8).item()
    assert ours <= best + 1e-9 * max(1.0, abs(best))

    weights = model.bilevel_step(loop, train, meta, outer_lr=outer_lr, inner_lr=inner_lr, inner_step=inner_step,
                                 FORUM_phi=phi)
    np.testing.assert_allclose(weights, torch.softmax(alpha0, 0).numpy(), rtol=1e-12)
    lam = torch.as_tensor(w[:2])  # epoch 0: the average's rate is 1, so λ is this step's solution
    torch.testing.assert_close(model.forum_lambda, lam, rtol=1e-12, atol=0.0)
    nu = max(float(lam @ torch.as_tensor(pi)), 0.0)
    direction = lam @ meta_rows + nu * grad_q
    # the constraint q decreases along −d at least by φ||∇q||² (first order), the reason for ν
    if nu > 0:
        assert float(grad_q @ direction) >= phi * float(grad_q @ grad_q) * (1 - 1e-6)  # δ = 1e-8 in π
    torch.testing.assert_close(model.forum_logits, adam_first_step(alpha0, direction[:2], outer_lr), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(model_vector(model), ref.theta - lr * direction[2:], rtol=1e-8, atol=1e-11)


def test_forum_dual_weights_are_feasible_and_optimal_against_a_grid():
    rng = np.random.default_rng(1)
    for _ in range(3):
        rows = rng.normal(size=(2, 5))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        q = rng.normal(size=5)
        expected, pi, best = forum_reference_weights(rows, q, 0.1)
        all_rows = np.vstack([rows, q])
        w = forum_dual_weights(all_rows @ all_rows.T, pi, 0.1 * (q @ q + 1e-8))
        assert abs(w[:2].sum() - 1) < 1e-12 and np.all(w >= 0) and w[2] >= pi @ w[:2] - 1e-12
        value = w @ (all_rows @ all_rows.T) @ w - w[2] * 0.1 * (q @ q + 1e-8)
        assert value <= best + 1e-9
        np.testing.assert_allclose(w[:2], expected[:2], atol=2e-5)


# --------------------------------------------------------- the training loop
@pytest.mark.parametrize("arch", ["HPS", "MMoE"])
@pytest.mark.parametrize("weighting", BILEVEL)
def test_two_trainer_steps_move_the_shared_parameters(weighting, arch):
    torch.manual_seed(0)
    trainer = make_image_trainer(arch, weighting)
    before = [p.detach().clone() for p in trainer.model.get_share_params()]
    weights = trainer.train(image_loader(8, False), image_loader(4, False), epochs=1, return_weight=True)
    after = list(trainer.model.get_share_params())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, p) for b, p in zip(before, after))
    assert np.isfinite(weights).all() and not np.allclose(weights, 0.0)
    assert np.isfinite(trainer.model.train_loss_buffer).all()


@pytest.mark.parametrize("weighting", BILEVEL)
def test_multi_input_trains(weighting):
    torch.manual_seed(0)
    trainer = make_image_trainer("HPS", weighting, multi_input=True)
    before = [p.detach().clone() for p in trainer.model.get_share_params()]
    trainer.train(image_loader(8, True), image_loader(4, True), epochs=1)
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.model.get_share_params()))


class Indexed(Dataset):
    """Samples tagged with their index (the input is filled with it)."""

    def __init__(self, size, offset=0):
        self.size, self.offset = size, offset

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        value = float(i + self.offset)
        return torch.full((3, 8, 8), value), {"a": torch.tensor([value]), "b": torch.tensor([-value])}


def capture_batches(trainer):
    seen = []

    def record(loop, train_batch, meta_batch, **kwargs):
        seen.append((train_batch[0][:, 0, 0, 0].tolist(), meta_batch[0][:, 0, 0, 0].tolist()))
        return np.zeros(2)

    trainer.model.bilevel_step = record
    return seen


def test_meta_batches_come_from_the_training_data_one_batch_ahead_by_default():
    trainer = make_image_trainer("HPS", "AutoLambda")
    seen = capture_batches(trainer)
    trainer.train(DataLoader(Indexed(6), batch_size=2), DataLoader(Indexed(2), batch_size=2), epochs=1)
    assert seen == [([0, 1], [2, 3]), ([2, 3], [4, 5]), ([4, 5], [0, 1])]


def test_meta_dataloaders_supply_the_meta_batches():
    trainer = make_image_trainer("HPS", "MOML")
    trainer.meta_dataloaders = DataLoader(Indexed(4, offset=100), batch_size=2)
    seen = capture_batches(trainer)
    trainer.train(DataLoader(Indexed(4), batch_size=2), DataLoader(Indexed(2), batch_size=2), epochs=1)
    assert seen == [([0, 1], [100, 101]), ([2, 3], [102, 103])]


def test_rep_grad_is_refused_at_construction():
    for weighting in BILEVEL:
        with pytest.raises(ValueError, match="cannot run with rep_grad=True"):
            make_image_trainer("HPS", weighting, rep_grad=True)


def test_direct_backward_uses_the_current_weights():
    trainer = make_trainer("MOML")
    trainer.model.moml_logits.copy_(torch.tensor([1.0, 0.0, -1.0]))
    losses = BilevelLoop(trainer, None).losses(batch(("a", "b", "c"), 1))
    weights = trainer.model.backward(losses)
    np.testing.assert_allclose(weights, torch.softmax(torch.tensor([1.0, 0.0, -1.0], dtype=DOUBLE), 0).numpy())


# --------------------------------------------------------------------- flags
def test_flags_have_libmtl_names_defaults_and_ranges():
    parser = make_parser()
    defaults = parser.parse_args([])
    assert (defaults.outer_lr, defaults.inner_lr, defaults.inner_step, defaults.FORUM_phi) == (1e-3, 0.1, 5, 0.1)
    kwargs, _, _ = prepare_args(parser.parse_args(["--weighting", "FORUM", "--inner_step", "2"]), verbose=False)
    assert kwargs["weight_args"] == {"outer_lr": 1e-3, "inner_lr": 0.1, "inner_step": 2, "FORUM_phi": 0.1}
    kwargs, _, _ = prepare_args(parser.parse_args(["--weighting", "MOML"]), verbose=False)
    assert kwargs["weight_args"] == {"outer_lr": 1e-3, "inner_lr": 0.1, "inner_step": 5}
    kwargs, _, _ = prepare_args(parser.parse_args(["--weighting", "AutoLambda"]), verbose=False)
    assert kwargs["weight_args"] == {"outer_lr": 1e-3, "AutoLambda_init": 0.1}
    for bad in (["--inner_step", "0"], ["--outer_lr", "0"], ["--inner_lr", "-1"], ["--FORUM_phi", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


# ------------------------------------------------------- stochastic forward passes
def test_seeded_losses_replay_ltb_branch_samples_and_keep_the_global_state():
    torch.manual_seed(0)
    trainer = make_image_trainer("LTB", "AutoLambda")
    trainer.model.double()
    loop = BilevelLoop(trainer, None)
    x, y = next(iter(image_loader(4, False)))
    data = (x.double(), {t: v.double() for t, v in y.items()})
    state = torch.get_rng_state()
    first, again = loop.losses(data, seed=7), loop.losses(data, seed=7)
    assert torch.equal(first, again) and torch.equal(state, torch.get_rng_state())
    assert any(not torch.equal(first, loop.losses(data, seed=s)) for s in range(8, 20))  # branches are sampled


def test_autolambda_finite_difference_is_exact_on_a_sampled_ltb_network():
    """The three training-batch evaluations replay one branch sample; without that, the finite
    difference would compare two different networks."""
    torch.manual_seed(0)
    trainer = make_image_trainer("LTB", "AutoLambda")
    trainer.model.double()
    loop = BilevelLoop(trainer, None)
    batches = iter(image_loader(8, False))
    train, meta = [(x.double(), {t: v.double() for t, v in y.items()}) for x, y in batches]
    lam0, lr = torch.tensor([0.3, 0.7], dtype=DOUBLE), 0.05

    torch.manual_seed(5)
    seed = loop.new_seed()
    lam = lam0.clone().requires_grad_(True)
    params = [p.detach().clone().requires_grad_(True) for p in loop.parameters()]
    grads = torch.autograd.grad(lam @ loop.losses(train, params, seed=seed), params, create_graph=True)
    stepped = [p - lr * g for p, g in zip(params, grads)]  # Adam: no momentum term
    exact = torch.autograd.grad(loop.losses(meta, stepped).sum(), lam)[0]
    torch.manual_seed(5)
    ours = meta_gradient(loop, train, meta, lam0, lr)
    torch.testing.assert_close(ours, exact, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("weighting", BILEVEL)
def test_task_weight_state_is_checkpointed_and_resumed(weighting, tmp_path):
    torch.manual_seed(0)
    trainer = make_image_trainer("HPS", weighting)
    trainer.save_path = str(tmp_path)
    trainer.train(image_loader(8, False), image_loader(4, False), epochs=1)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items() if "_adam_" in k or k.endswith(("logits", "weights", "lambda"))}
    assert any(k.endswith("_adam_step") and int(v) == 2 for k, v in state.items())  # two steps were taken
    resumed = make_image_trainer("HPS", weighting)
    assert resumed.resume(str(tmp_path)) == 1
    for key, value in state.items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
