"""GLS, MoCo, DB_MTL, STCH, ExcessMTL, MoDo and SDMGrad against literal float64
implementations of their papers' update rules (several consecutive steps where the method
has state), GLS against PyPI LibMTL 1.1.5, and their CLI flags, checkpoints and Trainer use.

The model of ``jacobian_model.py`` has loss ``L_i`` and gradient ``b·G[i]`` for a batch of
``b`` samples, so three batches of sizes 1, 2, 3 give three known, different Jacobians.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.weighting.simplex import project_to_simplex
from jacobian_model import jacobian_model, random_jacobian, set_task, step
from libmtl_oracle import libmtl_model, libmtl_step

T, D = 3, 5
LOSSES = [0.5, 2.0, 4.0]


def jacobians(count: int, seed: int = 0) -> list[torch.Tensor]:
    return [random_jacobian(seed + k) for k in range(count)]


def loss_sets(count: int) -> list[list[float]]:
    return [[0.5 + 0.3 * k, 2.0 - 0.4 * k, 4.0 + k] for k in range(count)]


def set_all(model, G: torch.Tensor, losses: list[float]) -> None:
    for i in range(len(G)):
        set_task(model, i, G[i], losses[i])


def literal_simplex_projection(v: np.ndarray) -> np.ndarray:
    """``argmin_{w ∈ Δ} ‖w − v‖``: bisection on θ in ``Σ_i max(v_i − θ, 0) = 1``."""
    low, high = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = (low + high) / 2
        if np.maximum(v - mid, 0).sum() > 1:
            low = mid
        else:
            high = mid
    return np.maximum(v - (low + high) / 2, 0)


def sample_losses(model, batch_sizes=(1, 2, 3)) -> tuple[torch.Tensor, ...]:
    """One loss vector per batch; batch ``b`` has Jacobian ``b·G``."""
    model.encoder.theta.grad = None
    outputs = [model(torch.zeros(b, 1, dtype=torch.float64)) for b in batch_sizes]
    return tuple(torch.stack([out[t] for t in model.task_name]) for out in outputs)


def shared_grad(model) -> np.ndarray:
    return model.encoder.theta.grad.reshape(-1).numpy().copy()


# ----------------------------------------------------------------------------- simplex
def test_simplex_projection_matches_bisection():
    gen = np.random.default_rng(0)
    for scale in (0.1, 1.0, 30.0):
        v = gen.normal(size=6) * scale
        np.testing.assert_allclose(project_to_simplex(torch.from_numpy(v)).numpy(), literal_simplex_projection(v), atol=1e-12)
    np.testing.assert_allclose(project_to_simplex(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)).numpy(), [0.2, 0.3, 0.5])
    # huge entries: θ = u_1 − 1 still found (float32 rounding hides the first index)
    huge = project_to_simplex(torch.tensor([3e9, -2e9, 1.0], dtype=torch.float32))
    assert torch.isfinite(huge).all() and huge.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- GLS
def test_gls_gradient_is_the_geometric_mean_gradient():
    G = random_jacobian(1)
    weights, grad = step(jacobian_model("GLS", G, LOSSES))
    geometric_mean = math.prod(LOSSES) ** (1 / T)
    expected_weights = [geometric_mean / (T * loss) for loss in LOSSES]
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), np.array(expected_weights) @ G.numpy(), rtol=1e-12)
    _, via_rep = step(jacobian_model("GLS", G, LOSSES, rep_grad=True))
    torch.testing.assert_close(via_rep, grad)


def test_gls_agrees_with_libmtl_1_1_5_and_returns_the_applied_weights():
    for seed, losses in zip(range(3), loss_sets(3)):
        G = random_jacobian(seed)
        ours_weights, ours = step(jacobian_model("GLS", G, losses))
        theirs_weights, theirs = libmtl_step(libmtl_model("GLS", *G.shape), G, losses)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-14)
        # LibMTL 1.1.5 returns L_i / (T Π_j L_j), not the weights its gradient applies.
        np.testing.assert_allclose(theirs_weights, np.array(losses) / (T * math.prod(losses)), rtol=1e-12)
        assert not np.allclose(theirs_weights, ours_weights)


def test_gls_refuses_non_positive_losses():
    with pytest.raises(ValueError, match="positive"):
        step(jacobian_model("GLS", random_jacobian(0), [1.0, 0.0, 2.0]))


# ---------------------------------------------------------------------------------- MoCo
def moco_reference(Gs, Ls, beta, beta_sigma, gamma, gamma_sigma, rho, libmtl_variant):
    """MoCo, Algorithm 1, one row at a time (LibMTL's variant: L_i g_i/‖g_i‖, softmax)."""
    y = np.zeros((T, D))
    lam = np.full(T, 1.0 / T)
    out = []
    for t, (G, L) in enumerate(zip(Gs, Ls), start=1):
        H = G.numpy().copy()
        if libmtl_variant:
            H = np.array([H[i] / (np.linalg.norm(H[i]) + 1e-8) * L[i] for i in range(T)])
        beta_t, gamma_t = beta / t**beta_sigma, gamma / t**gamma_sigma
        y = np.array([[y[i, d] - beta_t * (y[i, d] - H[i, d]) for d in range(D)] for i in range(T)])
        M = np.array([[sum(y[i, d] * y[j, d] for d in range(D)) + (rho if i == j else 0.0) for j in range(T)] for i in range(T)])
        v = np.array([lam[i] - gamma_t * sum(M[i, j] * lam[j] for j in range(T)) for i in range(T)])
        lam = np.exp(v) / np.exp(v).sum() if libmtl_variant else literal_simplex_projection(v)
        out.append((lam.copy(), np.array([sum(lam[i] * y[i, d] for i in range(T)) for d in range(D)])))
    return out


@pytest.mark.parametrize("libmtl_variant", [False, True], ids=["paper", "libmtl"])
def test_moco_follows_algorithm_1_over_steps(libmtl_variant):
    Gs, Ls = jacobians(4, seed=10), loss_sets(4)
    args = dict(MoCo_beta=0.5, MoCo_beta_sigma=0.5, MoCo_gamma=0.3, MoCo_gamma_sigma=0.5, MoCo_rho=0.1)
    if libmtl_variant:
        args.update(MoCo_lambda_update="softmax", MoCo_grad_scaling="loss")
    expected = moco_reference(Gs, Ls, 0.5, 0.5, 0.3, 0.5, 0.1, libmtl_variant)
    model = jacobian_model("MoCo", Gs[0], Ls[0])
    for (G, L), (lam, direction) in zip(zip(Gs, Ls), expected):
        set_all(model, G, L)
        weights, grad = step(model, **args)
        np.testing.assert_allclose(weights, lam, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad.numpy(), direction, rtol=1e-10, atol=1e-12)
    assert int(model.moco_step) == 4
    if not libmtl_variant:
        assert (weights == 0).any() or weights.min() < 0.3  # the projection moved λ off uniform


def test_moco_refuses_rep_grad():
    with pytest.raises(ValueError, match="cannot run with rep_grad=True"):
        jacobian_model("MoCo", random_jacobian(0), rep_grad=True)


# -------------------------------------------------------------------------------- DB_MTL
def db_mtl_reference(Gs, Ls, beta, beta_sigma):
    """DB-MTL per step: EMA of ∇log(L_i + ε), then α_i = max_j ‖ĝ_j‖ / (‖ĝ_i‖ + ε)."""
    ema = np.zeros((T, D))
    out = []
    for t, (G, L) in enumerate(zip(Gs, Ls), start=1):
        beta_t = beta / t**beta_sigma
        log_grads = np.array([G[i].numpy() / (L[i] + 1e-8) for i in range(T)])
        ema = beta_t * ema + (1 - beta_t) * log_grads
        norms = [math.sqrt(sum(x * x for x in row)) for row in ema]
        alpha = np.array([max(norms) / (n + 1e-8) for n in norms])
        out.append((alpha, alpha @ ema, ema.copy(), max(norms)))
    return out


def test_db_mtl_balances_ema_log_loss_gradients_over_steps():
    Gs, Ls = jacobians(3, seed=20), loss_sets(3)
    model = jacobian_model("DB_MTL", Gs[0], Ls[0])
    for G, L, (alpha, direction, ema, largest) in zip(Gs, Ls, db_mtl_reference(Gs, Ls, 0.9, 0.5)):
        set_all(model, G, L)
        weights, grad = step(model, DB_beta=0.9, DB_beta_sigma=0.5)
        np.testing.assert_allclose(weights, alpha, rtol=1e-12)
        np.testing.assert_allclose(grad.numpy(), direction, rtol=1e-10, atol=1e-12)
        scaled_norms = np.linalg.norm(alpha[:, None] * ema, axis=1)
        np.testing.assert_allclose(scaled_norms, largest, rtol=1e-6)  # every task at the largest norm (up to ε = 1e-8)


# ---------------------------------------------------------------------------------- STCH
def test_stch_warmup_nadir_and_smooth_tchebycheff_gradient():
    G = random_jacobian(30)
    model = jacobian_model("STCH", G, LOSSES)
    args = dict(STCH_mu=0.5, STCH_warmup_epoch=1)
    model.epoch = 0  # warm-up: Σ log L_i
    weights, grad = step(model, **args)
    np.testing.assert_allclose(weights, [1 / loss for loss in LOSSES], rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), (1 / np.array(LOSSES)) @ G.numpy(), rtol=1e-12)
    assert int(model.stch_nadir_count) == 0
    model.epoch = 1  # nadir epoch: two steps with different losses
    nadir_losses = [[1.0, 2.0, 3.0], [2.0, 4.0, 1.0]]
    for losses in nadir_losses:
        set_all(model, G, losses)
        step(model, **args)
    nadir = np.mean(nadir_losses, axis=0)
    model.epoch = 2
    losses = [0.7, 3.5, 1.5]
    set_all(model, G, losses)
    weights, grad = step(model, **args)
    f = [math.log(losses[i] / nadir[i]) for i in range(T)]
    softmax = [math.exp(fi / 0.5) / sum(math.exp(fj / 0.5) for fj in f) for fi in f]
    expected = [T * softmax[i] / losses[i] for i in range(T)]  # ∂(T μ log Σ e^{f/μ}) / ∂L_i
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), np.array(expected) @ G.numpy(), rtol=1e-12)


def test_stch_needs_the_epoch_and_a_nadir_point():
    model = jacobian_model("STCH", random_jacobian(0), LOSSES)
    with pytest.raises(ValueError, match="epoch"):
        step(model)
    model.epoch = 5
    with pytest.raises(ValueError, match="nadir"):
        step(model, STCH_warmup_epoch=1)


# ----------------------------------------------------------------------------- ExcessMTL
def excess_mtl_reference(Gs, step_size):
    """ExcessMTL per step: AdaGrad-curvature excess risks, normalised by the first step's,
    exponentiated-gradient weights on the simplex (kept on the first step)."""
    squared = np.zeros((T, D))
    w = np.full(T, 1.0 / T)
    baseline = None
    out = []
    for G in Gs:
        g = G.numpy()
        squared += g**2
        excess = np.array([sum(g[i, d] ** 2 / math.sqrt(squared[i, d] + 1e-7) for d in range(D)) for i in range(T)])
        if baseline is None:
            baseline = excess
        else:
            w = w * np.exp(step_size * excess / baseline)
            w = w / w.sum()
        out.append((w.copy(), w @ g))
    return out


@pytest.mark.parametrize("rep_grad", [False, True], ids=["param_grad", "rep_grad"])
def test_excess_mtl_exponentiated_weights_over_steps(rep_grad):
    Gs, Ls = jacobians(4, seed=40), loss_sets(4)
    model = jacobian_model("ExcessMTL", Gs[0], Ls[0], rep_grad=rep_grad)
    expected = excess_mtl_reference(Gs, 0.5)
    returned = []
    for G, L, (w, direction) in zip(Gs, Ls, expected):
        set_all(model, G, L)
        weights, grad = step(model, robust_step_size=0.5)
        returned.append(weights)
        np.testing.assert_allclose(grad.numpy(), direction, rtol=1e-10, atol=1e-12)
    # checked after all steps: the returned weights are copies, not views of the state
    np.testing.assert_allclose(np.stack(returned), np.stack([w for w, _ in expected]), rtol=1e-12)
    assert not np.allclose(returned[-1], 1.0 / T)


def test_excess_mtl_refuses_non_finite_weights():
    G = random_jacobian(41)
    model = jacobian_model("ExcessMTL", torch.cat([G[:2], torch.zeros(1, D, dtype=torch.float64)]), LOSSES)
    step(model)  # task 2 has no gradient: its baseline excess risk is 0
    set_task(model, 2, G[2])
    with pytest.raises(FloatingPointError, match="non-finite"):
        step(model)


# ------------------------------------------------------------------------ MoDo, SDMGrad
def modo_reference(Gs, gamma, rho):
    """MoDo per step with batches of Jacobians G, 2G, 3G: λ ← Π_Δ(λ − γ(G_1 G_2ᵀ λ + ρλ)), update G_3ᵀ λ."""
    lam = np.full(T, 1.0 / T)
    out = []
    for G in Gs:
        g1, g2, g3 = (b * G.numpy() for b in (1, 2, 3))
        products = np.array([[sum(g1[i, d] * g2[j, d] for d in range(D)) for j in range(T)] for i in range(T)])
        lam = literal_simplex_projection(lam - gamma * (products @ lam + rho * lam))
        out.append((lam.copy(), lam @ g3))
    return out


def follow_three_batch_reference(name: str, Gs, reference, rtol: float, **weight_args) -> list:
    """Step ``name`` over the Jacobians ``Gs`` and assert each step's weights and shared
    gradient equal ``reference``'s ``(weights, direction)``; returns the weights."""
    model = jacobian_model(name, Gs[0], LOSSES)
    seen = []
    for G, (weights_ref, direction) in zip(Gs, reference):
        set_all(model, G, LOSSES)
        weights = model.backward(sample_losses(model), **weight_args)
        np.testing.assert_allclose(weights, np.asarray(weights_ref), rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(shared_grad(model), np.asarray(direction), rtol=rtol, atol=1e-12)
        seen.append(weights)
    return seen


def test_modo_double_sampling_over_steps():
    Gs = jacobians(3, seed=50)
    follow_three_batch_reference("MoDo", Gs, modo_reference(Gs, 0.05, 0.1), 1e-10, MoDo_gamma=0.05, MoDo_rho=0.1)
    lam = modo_reference(Gs, 0.05, 0.1)[-1][0]
    assert not np.allclose(lam, 1.0 / T)


def sdmgrad_reference(Gs, lamda, niter):
    """SDMGrad as the authors' code runs it: torch.optim.SGD(lr=5, momentum=0.5) on w,
    restarted every step, projected after every iteration."""
    w = torch.full((T,), 1.0 / T, dtype=torch.float64)
    out = []
    for G in Gs:
        g1, g2, g3 = (b * G for b in (1, 2, 3))
        A = g1 @ g2.T
        scale = torch.sqrt(torch.clamp(torch.diag(A), min=0)).mean()
        A = A / (scale**2 + 1e-8)
        w = w.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([w], lr=5, momentum=0.5)
        for _ in range(niter):
            optimizer.zero_grad()
            w.grad = A @ w.detach() + lamda * A.mean(dim=1)
            optimizer.step()
            with torch.no_grad():
                w.copy_(torch.from_numpy(literal_simplex_projection(w.detach().numpy())))
        w = w.detach()
        direction = (g3.T @ w + lamda * g3.mean(dim=0)) / (1 + lamda)
        out.append(((w + lamda / T) / (1 + lamda), direction))
    return out


def test_sdmgrad_inner_solver_and_direction_over_steps():
    Gs = jacobians(3, seed=60)
    seen = follow_three_batch_reference("SDMGrad", Gs, sdmgrad_reference(Gs, 0.3, 7), 1e-9,
                                        SDMGrad_lamda=0.3, SDMGrad_niter=7)
    for weights in seen:
        assert weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["MoDo", "SDMGrad"])
def test_multi_sample_inputs(name):
    """A stacked [3, T] tensor (LibMTL's Trainer) gives what a tuple gives; one [T] batch
    plays all three roles; the task-specific parameters get the mean of the batches."""
    G = random_jacobian(70)
    results = []
    for form in ("tuple", "stacked"):
        model = jacobian_model(name, G, LOSSES)
        losses = sample_losses(model)
        results.append((model.backward(torch.stack(losses) if form == "stacked" else losses), shared_grad(model)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)
    single, triple = jacobian_model(name, G, LOSSES), jacobian_model(name, G, LOSSES)
    np.testing.assert_allclose(single.backward(sample_losses(single, (2,))[0]), triple.backward(sample_losses(triple, (2, 2, 2))))
    with pytest.raises(ValueError, match="3 batches"):
        single.backward(sample_losses(single, (1, 2)))


def test_multi_sample_task_specific_gradients_are_the_batch_mean():
    import torch.nn as nn

    from LibMTL_rgb.trainer import build_mtl_model

    torch.manual_seed(0)
    decoders = nn.ModuleDict({t: nn.Linear(4, 1).double() for t in ("a", "b")})
    model = build_mtl_model("MoDo", "HPS", ["a", "b"], lambda: nn.Linear(3, 4).double(), decoders, False, False, torch.device("cpu"))
    batches = [torch.randn(2 + k, 3, dtype=torch.float64) for k in range(3)]
    losses = tuple(torch.stack([model(x)[t].pow(2).mean() for t in ("a", "b")]) for x in batches)
    expected = []
    for t in ("a", "b"):
        grads = [torch.autograd.grad(loss[i], list(model.decoders[t].parameters()), retain_graph=True)
                 for loss in losses for i, name in enumerate(("a", "b")) if name == t]
        expected.append([sum(g[k] for g in grads) / 3 for k in range(2)])
    model.backward(losses)
    for t, (weight, bias) in zip(("a", "b"), expected):
        torch.testing.assert_close(model.decoders[t].weight.grad, weight)
        torch.testing.assert_close(model.decoders[t].bias.grad, bias)


def test_trainer_feeds_three_batches_per_step_to_modo():
    from test_arch_weighting_matrix import loader, make_trainer

    trainer = make_trainer("HPS", "MoDo")
    seen = []
    original = trainer.model.backward

    def recording_backward(losses, **kwargs):
        seen.append(losses)
        return original(losses, **kwargs)

    trainer.model.backward = recording_backward
    trainer.train(loader(8, False), loader(4, False), epochs=1)
    assert len(seen) == 2 and all(isinstance(s, tuple) and len(s) == 3 for s in seen)
    first = seen[0]
    assert not torch.allclose(first[0], first[1])  # different batches


# ------------------------------------------------------------------- state and the CLI
@pytest.mark.parametrize("name, args", [
    ("MoCo", {"MoCo_gamma": 0.3}), ("DB_MTL", {"DB_beta": 0.5}), ("ExcessMTL", {"robust_step_size": 0.5}),
    ("MoDo", {"MoDo_gamma": 0.05}), ("SDMGrad", {}),
])
def test_state_survives_a_checkpoint(name, args):
    Gs = jacobians(3, seed=80)
    multi = name in ("MoDo", "SDMGrad")

    def run(model, G):
        set_all(model, G, LOSSES)
        if multi:
            return model.backward(sample_losses(model), **args), shared_grad(model)
        weights, grad = step(model, **args)
        return weights, grad.numpy()

    original = jacobian_model(name, Gs[0], LOSSES)
    for G in Gs[:2]:
        run(original, G)
    restored = jacobian_model(name, Gs[0], LOSSES)
    restored.load_state_dict(original.state_dict())
    for got, want in zip(run(restored, Gs[2]), run(original, Gs[2])):
        np.testing.assert_allclose(got, want, rtol=1e-12)


LIBMTL_FLAGS = {
    "MoCo": {"MoCo_beta": 0.5, "MoCo_beta_sigma": 0.5, "MoCo_gamma": 0.1, "MoCo_gamma_sigma": 0.5, "MoCo_rho": 0.0},
    "DB_MTL": {"DB_beta": 0.9, "DB_beta_sigma": 0.0},
    "STCH": {"STCH_mu": 1.0, "STCH_warmup_epoch": 4},
    "ExcessMTL": {"robust_step_size": 1e-2},
    "MoDo": {"MoDo_gamma": 1e-3, "MoDo_rho": 0.1},
    "SDMGrad": {"SDMGrad_lamda": 0.3, "SDMGrad_niter": 20},
    "GLS": {},
}


@pytest.mark.parametrize("name", sorted(LIBMTL_FLAGS))
def test_libmtl_flags_and_defaults(name):
    kwargs, _, _ = prepare_args(make_parser().parse_args(["--weighting", name]), verbose=False)
    args = kwargs["weight_args"]
    assert {k: args[k] for k in LIBMTL_FLAGS[name]} == LIBMTL_FLAGS[name]


@pytest.mark.parametrize("argv", [
    ["--MoCo_gamma", "0"], ["--MoCo_beta", "1.5"], ["--DB_beta", "-0.1"], ["--STCH_mu", "0"],
    ["--robust_step_size", "0"], ["--MoDo_gamma", "-1"], ["--SDMGrad_niter", "0"], ["--SDMGrad_lamda", "-0.3"],
    ["--MoCo_lambda_update", "clip"], ["--GradVac_group_type", "3"], ["--IMTL_mode", "both"],
])
def test_out_of_range_flags_are_refused(argv):
    with pytest.raises(SystemExit):
        make_parser().parse_args(argv)
