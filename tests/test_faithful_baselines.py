"""The three baselines that used to differ from their authors: MGDA's min-norm point solved
exactly, Aligned-MTL's summed aligned gradients, GradNorm's weights kept positive. Each is
checked in float64 against a literal, slow form of the paper's formula."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchjd.aggregation import MGDA as TorchJDMGDA

from LibMTL_rgb.weighting.gradnorm import MIN_WEIGHT
from LibMTL_rgb.weighting.min_norm import min_norm_gap, min_norm_weights
from jacobian_model import jacobian_model, random_jacobian, set_task, step


def brute_force_min_norm(G: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Every support S: the affine minimiser of S (KKT system); keep the feasible one of least
    norm. Exponential in T: a reference only."""
    T = G.shape[0]
    K = G @ G.T
    best = (float("inf"), None)
    for size in range(1, T + 1):
        for support in itertools.combinations(range(T), size):
            idx = list(support)
            system = torch.zeros(size + 1, size + 1, dtype=torch.float64)
            system[:size, :size] = K[idx][:, idx]
            system[:size, size] = system[size, :size] = 1.0
            rhs = torch.zeros(size + 1, dtype=torch.float64)
            rhs[size] = 1.0
            try:
                mu = torch.linalg.solve(system, rhs)[:size]
            except RuntimeError:  # singular: affinely dependent support
                continue
            if bool((mu < -1e-12).any()):
                continue
            w = torch.zeros(T, dtype=torch.float64)
            w[idx] = mu
            value = float(w @ K @ w)
            if value < best[0]:
                best = (value, w)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_min_norm_point_matches_brute_force(seed):
    T, D = (2, 3, 4, 5, 6)[seed % 5], (3, 6, 10)[seed % 3]
    G = random_jacobian(seed, T, D)
    if seed % 4 == 0:
        G[1] = 2.0 * G[0]  # collinear rows: a singular Gram matrix
    value, reference = brute_force_min_norm(G)
    w = min_norm_weights(G @ G.T)
    assert bool((w >= 0).all()) and float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(w @ G @ G.T @ w) == pytest.approx(value, abs=1e-12 * float((G * G).sum(1).max()))
    torch.testing.assert_close(w @ G, reference @ G, rtol=0, atol=1e-9)


def test_min_norm_fixes_torchjd_frank_wolfe_gap():
    """The issue's case: a random 3×6 Jacobian, torchjd's Frank-Wolfe (ε = 1e-3) vs exact."""
    G = random_jacobian(0, 3, 6)
    K = G @ G.T
    exact = min_norm_weights(K)
    _, reference = brute_force_min_norm(G)
    frank_wolfe = TorchJDMGDA().weighting(G)
    assert float((exact @ G - reference @ G).norm()) < 1e-12
    assert float((frank_wolfe @ G - reference @ G).norm()) > 1e-2  # what the old solver left
    assert min_norm_gap(K, exact) < 1e-12 * float(K.diagonal().max())


def test_min_norm_many_tasks_meets_optimality_conditions():
    """T = 40 (CelebA): KKT — every (Kw)_i ≥ wᵀKw, with equality on the support."""
    G = random_jacobian(1, 40, 60) + 0.3
    K = G @ G.T
    w = min_norm_weights(K)
    Kw, value = K @ w, float(w @ K @ w)
    scale = float(K.diagonal().max())
    assert bool((Kw >= value - 1e-10 * scale).all())
    assert torch.allclose(Kw[w > 1e-12], torch.full_like(Kw[w > 1e-12], value), atol=1e-9 * scale)


def test_min_norm_keeps_dtype_and_handles_degenerate_inputs():
    K = torch.zeros(3, 3, dtype=torch.float32)
    w = min_norm_weights(K)
    assert w.dtype == torch.float32 and torch.allclose(w, torch.full((3,), 1 / 3))
    one = min_norm_weights(torch.tensor([[4.0]], dtype=torch.float64))
    assert one.tolist() == [1.0]
    with pytest.raises(ValueError, match="square"):
        min_norm_weights(torch.zeros(2, 3))


def test_mgda_uses_the_exact_min_norm_point():
    G = random_jacobian(0, 3, 5)
    _, reference = brute_force_min_norm(G)
    weights, grad = step(jacobian_model("MGDA", G))
    torch.testing.assert_close(grad, reference @ G, rtol=0, atol=1e-10)
    np.testing.assert_allclose(weights @ G.numpy(), (reference @ G).numpy(), atol=1e-10)


def aligned_mtl_reference(G: torch.Tensor) -> torch.Tensor:
    """Senushkin et al. (CVPR 2023), Algorithm 1 as in the authors' code: eigen-decompose
    M = G Gᵀ = V Λ Vᵀ, B = √λ_min V Λ^{-1/2} Vᵀ, weights α = B·1 (aligned gradients summed)."""
    eigenvalues, V = torch.linalg.eigh(G @ G.T)
    B = eigenvalues.min().sqrt() * V @ torch.diag(eigenvalues.rsqrt()) @ V.T
    return B.sum(0)


def test_aligned_mtl_sums_the_aligned_gradients_like_the_authors():
    G = torch.tensor([[1.0, 0.0, 2.0], [0.0, -3.0, 1.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    weights, grad = step(jacobian_model("Aligned_MTL", G))
    alpha = aligned_mtl_reference(G)
    np.testing.assert_allclose(weights, alpha.numpy(), rtol=1e-10)
    torch.testing.assert_close(grad, alpha @ G, rtol=1e-10, atol=1e-12)
    # Orthogonal gradients of equal norm are already aligned: B = I, the update is Σ g_i.
    E = 2.0 * torch.eye(3, dtype=torch.float64)
    weights, grad = step(jacobian_model("Aligned_MTL", E))
    np.testing.assert_allclose(weights, np.ones(3), rtol=1e-12)


def test_gradnorm_weights_stay_positive_and_sum_to_T():
    """The issue's case: T = 2, lr 0.1 drove a weight to −6.7 before; now every step starts
    from positive weights summing to T, and the shared update keeps both tasks' signs."""
    G = torch.tensor([[10.0, 0.0], [0.0, 0.1]], dtype=torch.float64)
    model = jacobian_model("GradNorm", G, [1.0, 1.0])
    optimizer = torch.optim.SGD([model.gradnorm_weights], lr=0.1)
    overshoots = 0
    for k in range(6):
        optimizer.zero_grad()
        for i, loss in enumerate([1.0, 1.0 + 0.5 * k]):
            set_task(model, i, loss=loss)
        weights, grad = step(model, alpha=1.5)
        assert bool((torch.from_numpy(weights) > 0).all()), weights
        assert weights.sum() == pytest.approx(2.0)
        torch.testing.assert_close(grad, torch.from_numpy(weights) @ G)
        optimizer.step()
        overshoots += int(float(model.gradnorm_weights.detach().min()) < 0)
    assert overshoots > 0  # the optimizer did push a weight below zero; the next step clipped it


def test_gradnorm_renormalisation_is_clip_then_rescale():
    G = random_jacobian(2, 3, 4)
    model = jacobian_model("GradNorm", G)
    with torch.no_grad():
        model.gradnorm_weights.copy_(torch.tensor([-1.0, 1.0, 3.0]))
    weights, _ = step(model, alpha=1.5)
    clipped = np.array([MIN_WEIGHT, 1.0, 3.0])
    np.testing.assert_allclose(weights, 3.0 * clipped / clipped.sum(), rtol=1e-6)


# ------------------------------------------- the other methods' sub-problems, solved to tolerance
def cagrad_objective(G: torch.Tensor, w: np.ndarray, c: float) -> float:
    """CAGrad's inner problem (Liu et al. 2021, Eq. 4's dual): ``F(w) = G_wᵀ g_0 + c‖g_0‖ ‖G_w‖``."""
    g0 = G.mean(0)
    gw = torch.from_numpy(np.asarray(w, dtype=np.float64)) @ G
    return float(gw @ g0 + c * g0.norm() * gw.norm())


@pytest.mark.parametrize("seed", range(4))
def test_cagrad_inner_problem_is_solved_to_tolerance(seed):
    """The simplex weights behind our CAGrad direction reach the minimum of F found by a tight
    multi-start SLSQP (ftol 1e-15) to 1e-8 relative."""
    from scipy.optimize import minimize

    c, T = 0.5, 3
    G = random_jacobian(seed, T, 6)
    weights, _ = step(jacobian_model("CAGrad", G), calpha=c, rescale=0)
    inner = weights - 1.0 / T  # = c‖g_0‖/‖G_w‖ · w
    inner = inner / inner.sum()
    starts = 0.8 * np.eye(T) + 0.2 / T
    simplex = [{"type": "eq", "fun": lambda x: x.sum() - 1.0}]
    best = min(
        (minimize(lambda x: cagrad_objective(G, x, c), x0, method="SLSQP", bounds=[(0.0, 1.0)] * T,
                  constraints=simplex, options={"ftol": 1e-15, "maxiter": 1000}) for x0 in starts),
        key=lambda result: result.fun,
    )
    ours_value = cagrad_objective(G, inner, c)
    assert ours_value == pytest.approx(best.fun, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_imtl_g_projections_are_equal(seed):
    """IMTL-G's defining condition (Liu et al. 2021, Eq. 6): the update has the same projection
    on every unit task gradient, and the weights sum to 1; closed form, exact to rounding."""
    G = random_jacobian(seed, 4, 7)
    weights, grad = step(jacobian_model("IMTL", G))
    projections = (G / G.norm(dim=1, keepdim=True)) @ grad
    torch.testing.assert_close(projections, projections.mean().expand(4), rtol=1e-12, atol=1e-12)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_nash_mtl_bargaining_equation_to_the_authors_tolerance(seed):
    """Nash-MTL (Navon et al. 2022, Eq. 5): ``Gᵀ G α = 1/α``, i.e. ``α ⊙ Kα = 1``. torchjd runs
    the authors' sequential convex program (ECOS on K/‖K‖_F, stop when ``‖Kα − 1/α‖ < 1e-3``);
    the residual reached on these cases is far below that. (On ``random_jacobian(2)`` the
    program fails at its first iterate and torchjd keeps the previous α = 1.)"""
    G = random_jacobian(seed, 3, 6)
    weights, _ = step(jacobian_model("Nash_MTL", G), max_norm=0.0)
    alpha = torch.from_numpy(weights)
    residual = (alpha * ((G @ G.T) @ alpha) - 1.0).abs().max()
    assert float(residual) < 1e-6


# ----------------------------------- methods LibMTL 1.1.5 lacks, on hand-checkable cases
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_alpha_fair_weights_on_orthogonal_gradients(alpha):
    """FairGrad (Ban & Ji, ICML 2024, Eq. 8): ``G Gᵀ w = w^{−1/α}``. For orthogonal gradients
    of norms n_i this is ``n_i² w_i = w_i^{−1/α}``, so ``w_i = n_i^{−2α/(α+1)}`` (α = 1: 1/n_i)."""
    norms = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    G = torch.diag(norms)
    weights, grad = step(jacobian_model("FairGrad", G), FairGrad_alpha=alpha)
    expected = norms ** (-2 * alpha / (alpha + 1))
    np.testing.assert_allclose(weights, expected.numpy(), rtol=1e-5)
    torch.testing.assert_close(grad, torch.from_numpy(weights) @ G)


def test_fairgrad_solves_its_equation_on_a_random_case():
    G = random_jacobian(3, 3, 6)
    weights, _ = step(jacobian_model("FairGrad", G), FairGrad_alpha=2.0)
    w = torch.from_numpy(weights)
    torch.testing.assert_close((G @ G.T) @ w, w ** (-1 / 2.0), rtol=1e-5, atol=1e-6)


# g1 = (1, 0), g2 = (−2, 1) conflict (g1·g2 = −2). Projections onto the dual cone
# {x : g1·x ≥ 0, g2·x ≥ 0}, by hand: g1 → g1 + (2/5) g2 = (0.2, 0.4); g2 → g2 + 2 g1 = (0, 1);
# the mean (−0.5, 0.5) → (0, 0.5).
CONFLICT = torch.tensor([[1.0, 0.0], [-2.0, 1.0]], dtype=torch.float64)
TINY_EPS = {"norm_eps": 1e-12, "reg_eps": 1e-12}


def test_upgrad_is_the_mean_of_the_projected_gradients():
    """UPGrad (Quinton & Rey 2024, Def. 3): the mean of each gradient projected onto the dual
    cone of all gradients; with non-conflicting gradients, the plain mean."""
    options = {f"UPGrad_{k}": v for k, v in TINY_EPS.items()}
    _, grad = step(jacobian_model("UPGrad", CONFLICT), **options)
    torch.testing.assert_close(grad, torch.tensor([0.1, 0.7], dtype=torch.float64), rtol=1e-6, atol=1e-8)
    aligned = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    _, grad = step(jacobian_model("UPGrad", aligned), **options)
    torch.testing.assert_close(grad, aligned.mean(0), rtol=1e-6, atol=1e-8)


def test_dualproj_projects_the_mean_gradient_onto_the_dual_cone():
    """DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual cone."""
    options = {f"DualProj_{k}": v for k, v in TINY_EPS.items()}
    _, grad = step(jacobian_model("DualProj", CONFLICT), **options)
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.5], dtype=torch.float64), rtol=1e-6, atol=1e-8)
