"""RGB math (LibMTL_rgb.rgb) against the literal reference of Algorithm 1, in float64."""

import math

import pytest
import torch

from LibMTL_rgb.rgb import (
    DEFAULT_INNER_LR,
    adaptive_num_steps,
    normalized_gram,
    projected_gradient_norm,
    rgb_step,
    rotation_geometry,
    rotation_grad_matrix,
    rotation_inner_products,
    rotation_objective,
    rotation_objective_grad,
    solve_rotation_angles,
    solve_rotation_angles_exact,
)

try:
    import rgb_reference as ref
except ImportError:  # tests/ imported as a package
    from tests import rgb_reference as ref

F64 = torch.float64
HALF_PI = math.pi / 2


def make_grads(T, D, seed, shared=0.5):
    """Per-task gradients with a shared component, varied scales and some conflict."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(D, generator=gen, dtype=F64)
    noise = torch.randn(T, D, generator=gen, dtype=F64)
    scales = 0.1 + 3.0 * torch.rand(T, 1, generator=gen, dtype=F64)
    return (shared * base + noise) * scales


def geometry_from_reference(G, d, eps=1e-8):
    """Geometry built from explicit vectors (not via rgb_step), plus the vectors."""
    gbars = [ref.normalise(G[i], eps) for i in range(G.shape[0])]
    ws = [ref.orthogonal_state(g, d, eps) for g in gbars]
    Gb = torch.stack(gbars)
    geom = rotation_geometry(Gb @ Gb.T, Gb @ d, d @ d, eps)
    return geom, gbars, ws


def random_geometry(T, D, seed, eps=1e-8):
    gen = torch.Generator().manual_seed(seed + 1000)
    G = make_grads(T, D, seed)
    d = torch.randn(D, generator=gen, dtype=F64) * 0.3 + G.mean(0) / G.mean(0).norm() * 0.5
    return geometry_from_reference(G, d, eps)


# --------------------------------------------------------------------------- rgb_step vs reference

SCHEDULES = {0.0: [True, False, True, True], 1.0: [False, True, True, False, True]}


@pytest.mark.parametrize("T,D", [(2, 50), (3, 80), (5, 120), (11, 200), (40, 300)])
@pytest.mark.parametrize("lam", [0.0, 1.0])
@pytest.mark.parametrize("lr", [DEFAULT_INNER_LR, 5.0])
def test_rgb_step_matches_literal_reference(T, D, lam, lr):
    reference = ref.ReferenceRGB(mu=0.9, lam=lam, eps=1e-8, steps=5, lr=lr)
    ema = None
    moved = False
    for t, rotate in enumerate(SCHEDULES[lam]):
        G = make_grads(T, D, seed=100 * T + 10 * t + int(lam))
        out = reference.step(G, rotate)
        res = rgb_step(G, ema, mu=0.9, lam=lam, steps=5, lr=lr, eps=1e-8, rotate=rotate)
        ema = res.ema
        torch.testing.assert_close(res.direction, out["v"], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.ema, out["d"], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.angles, out["alpha"], rtol=0, atol=1e-10)
        assert res.rotated is rotate
        assert res.steps == (5 if rotate else 0)
        # the reported pieces are consistent with the explicit vectors
        Rv = torch.stack(out["rs"])
        Gb = torch.stack(out["gbars"])
        torch.testing.assert_close(res.gram, Gb @ Gb.T, rtol=0, atol=1e-12)
        torch.testing.assert_close(res.rotated_gram, Rv @ Rv.T, rtol=0, atol=1e-12)
        torch.testing.assert_close(res.rotated_cross, (Rv * Gb).sum(1), rtol=0, atol=1e-12)
        rebuilt = res.task_coefficients @ G + res.ema_coefficient * res.ema
        torch.testing.assert_close(rebuilt, res.direction, rtol=0, atol=1e-12)
        if rotate:
            moved = moved or bool(res.angles.abs().max() > 1e-4)
        else:
            assert torch.all(res.angles == 0)
            assert float(res.ema_coefficient) == 0.0
    assert moved, "test data never rotated anything"


def test_rgb_step_hits_both_bounds_and_matches_reference():
    # a huge inner lr makes alpha bounce between the ends of [0, pi/2]
    T, D, lam, lr = 4, 60, 1.0, 200.0
    reference = ref.ReferenceRGB(lam=lam, lr=lr)
    ema = None
    seen_top = seen_bottom = False
    for t in range(4):
        G = make_grads(T, D, seed=7 + t, shared=0.2)
        reference.steps = 6 + t % 2
        out = reference.step(G, True)
        res = rgb_step(G, ema, lam=lam, steps=6 + t % 2, lr=lr)
        ema = res.ema
        torch.testing.assert_close(res.direction, out["v"], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.angles, out["alpha"], rtol=0, atol=1e-10)
        assert torch.all(res.angles >= 0) and torch.all(res.angles <= HALF_PI)
        seen_top |= bool((res.angles == HALF_PI).any())
        seen_bottom |= bool((res.angles == 0).any())
    assert seen_top and seen_bottom


def test_single_task_matches_reference():
    G = make_grads(1, 40, seed=3)
    reference = ref.ReferenceRGB(lam=1.0, lr=2.0)
    ema = None
    for t in range(3):
        out = reference.step(G * (t + 1), True)
        res = rgb_step(G * (t + 1), ema, lam=1.0, lr=2.0)
        ema = res.ema
        torch.testing.assert_close(res.direction, out["v"], rtol=0, atol=1e-12)
        torch.testing.assert_close(res.angles, out["alpha"], rtol=0, atol=1e-12)


def test_zero_gradient_task_is_finite_and_matches_reference():
    G = make_grads(4, 70, seed=11)
    G[2] = 0.0
    reference = ref.ReferenceRGB(lam=1.0, lr=3.0)
    ema = None
    for t in range(3):
        out = reference.step(G, True)
        res = rgb_step(G, ema, lam=1.0, lr=3.0)
        ema = res.ema
        for x in (res.direction, res.ema, res.angles, res.rotated_gram, res.task_coefficients):
            assert torch.isfinite(x).all()
        assert res.gram[2].abs().max() == 0
        torch.testing.assert_close(res.direction, out["v"], rtol=0, atol=1e-10)


def test_all_zero_gradients_from_empty_state():
    G = torch.zeros(3, 20, dtype=F64)
    for rotate in (True, False):
        res = rgb_step(G, None, rotate=rotate, lam=1.0)
        assert torch.isfinite(res.direction).all() and torch.isfinite(res.ema).all()
        assert res.direction.abs().max() == 0 and res.ema.abs().max() == 0
        assert torch.isfinite(res.angles).all()


def test_ema_updated_on_non_rotation_steps():
    G = make_grads(3, 30, seed=5)
    d0 = torch.randn(30, dtype=F64)
    res = rgb_step(G, d0, rotate=False, mu=0.8)
    y = torch.stack([ref.normalise(g, 1e-8) for g in G]).mean(0)
    expected = 0.8 * d0 + 0.2 * y / (y.norm() + 1e-8)
    torch.testing.assert_close(res.ema, expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(res.direction, y, rtol=0, atol=1e-13)


def test_normalized_gram():
    G = make_grads(5, 40, seed=2)
    G[1] = 0.0
    P, n = normalized_gram(G, 1e-8)
    torch.testing.assert_close(n, G.norm(dim=1), rtol=0, atol=1e-12)
    Gb = torch.stack([ref.normalise(g, 1e-8) for g in G])
    torch.testing.assert_close(P, Gb @ Gb.T, rtol=0, atol=1e-13)


def test_dtypes_and_compute_dtype():
    G64 = make_grads(5, 100, seed=4)
    r64 = rgb_step(G64, None, lam=1.0, lr=2.0)
    G32 = G64.float()
    r32 = rgb_step(G32, None, lam=1.0, lr=2.0)
    assert r32.direction.dtype == torch.float32 and r32.ema.dtype == torch.float32
    assert r32.angles.dtype == torch.float32
    torch.testing.assert_close(r32.direction.double(), r64.direction, rtol=0, atol=1e-5)
    r32c = rgb_step(G32, None, lam=1.0, lr=2.0, compute_dtype=F64)
    assert r32c.angles.dtype == F64 and r32c.direction.dtype == torch.float32
    torch.testing.assert_close(r32c.angles, r64.angles, rtol=0, atol=1e-6)
    # half precision gradients: direction in bf16, EMA kept in float32, state carries
    Gb = G64.bfloat16()
    rb = rgb_step(Gb, None)
    rb2 = rgb_step(Gb, rb.ema)
    assert rb2.direction.dtype == torch.bfloat16 and rb2.ema.dtype == torch.float32
    assert torch.isfinite(rb2.direction.float()).all()
    torch.testing.assert_close(rb.direction.double(), rgb_step(G64, None).direction, rtol=0, atol=3e-2)


def test_bad_inputs_raise():
    G = make_grads(3, 10, seed=1)
    with pytest.raises(ValueError):
        rgb_step(G[0], None)
    with pytest.raises(ValueError):
        rgb_step(G, torch.zeros(11, dtype=F64))
    with pytest.raises(ValueError):
        rgb_step(G, None, solver="adam")


# --------------------------------------------------------------------------- Eq. 1 and its gradient


@pytest.mark.parametrize("T", [1, 2, 3, 7])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_objective_and_analytic_grad_match_autograd(T, lam):
    geom, gbars, ws = random_geometry(T, 60, seed=T)
    gen = torch.Generator().manual_seed(T + 17)
    for _ in range(3):
        alpha = torch.rand(T, generator=gen, dtype=F64) * HALF_PI
        val = rotation_objective(alpha, geom, lam)
        torch.testing.assert_close(val, ref.objective(alpha, gbars, ws, lam), rtol=0, atol=1e-13)
        grad = rotation_objective_grad(alpha, geom, lam)
        torch.testing.assert_close(grad, ref.objective_grad(alpha, gbars, ws, lam), rtol=0, atol=1e-13)
    # gradient at the start point of the solver is not trivially zero
    assert rotation_objective_grad(torch.zeros(T, dtype=F64), geom, 1.0).abs().max() > 0 or T == 1


def test_proposition_a1_rotation_operator():
    G = make_grads(4, 50, seed=8)
    d = make_grads(1, 50, seed=9)[0]
    geom, gbars, ws = geometry_from_reference(G, d)
    Gb, Wv = torch.stack(gbars), torch.stack(ws)
    # r(0) = gbar, r(pi/2) = w (explicit vectors and Gram form)
    for i in range(4):
        torch.testing.assert_close(ref.rotate(torch.tensor(0.0, dtype=F64), gbars[i], ws[i]), gbars[i])
        torch.testing.assert_close(ref.rotate(torch.tensor(HALF_PI, dtype=F64), gbars[i], ws[i]), ws[i],
                                   rtol=0, atol=1e-15)
    RR0, _, _ = rotation_inner_products(torch.zeros(4, dtype=F64), geom)
    RR1, X1, _ = rotation_inner_products(torch.full((4,), HALF_PI, dtype=F64), geom)
    torch.testing.assert_close(RR0, Gb @ Gb.T, rtol=0, atol=1e-14)
    torch.testing.assert_close(RR1, Wv @ Wv.T, rtol=0, atol=1e-14)
    torch.testing.assert_close(X1, Gb @ Wv.T, rtol=0, atol=1e-14)
    # w_i is a unit vector orthogonal to gbar_i; r_i(alpha) stays unit length
    torch.testing.assert_close(torch.diagonal(geom.W), torch.ones(4, dtype=F64), rtol=0, atol=1e-7)
    # gbar_i . w_i is 0 up to the epsilon in ||g_i|| + eps (gbar_i is not exactly unit)
    torch.testing.assert_close(torch.diagonal(geom.B), (Gb * Wv).sum(1), rtol=0, atol=1e-15)
    assert torch.diagonal(geom.B).abs().max() < 1e-7
    alpha = torch.tensor([0.1, 0.7, 1.2, 1.5], dtype=F64)
    RR, _, _ = rotation_inner_products(alpha, geom)
    torch.testing.assert_close(torch.diagonal(RR), torch.ones(4, dtype=F64), rtol=0, atol=1e-7)
    # after the final normalisation r / (||r|| + eps), ||r_i|| = 1 up to eps
    res = rgb_step(G, rgb_step(G, None).ema, lam=0.0, lr=3.0)
    torch.testing.assert_close(torch.diagonal(res.rotated_gram), torch.ones(4, dtype=F64), rtol=0, atol=1e-7)
    assert float(res.angles.min()) > 0.05  # really rotated


@pytest.mark.parametrize("lam", [0.0, 1.0, 3.0])
def test_objective_bounds(lam):
    gen = torch.Generator().manual_seed(21)
    for seed, T in enumerate([2, 3, 6, 12]):
        geom, _, _ = random_geometry(T, 40, seed=seed + 30)
        # also a geometry with strongly opposed tasks
        G = make_grads(T, 40, seed=seed)
        G[::2] *= -1
        geom2, _, _ = geometry_from_reference(G, G[0] / G[0].norm())
        for g in (geom, geom2):
            corners = [torch.zeros(T, dtype=F64), torch.full((T,), HALF_PI, dtype=F64)]
            for alpha in corners + [torch.rand(T, generator=gen, dtype=F64) * HALF_PI for _ in range(20)]:
                val = float(rotation_objective(alpha, g, lam))
                assert -1e-12 <= val <= 1 + lam / 2 + 1e-12  # sharper than the bound 1 + lam


@pytest.mark.parametrize("T", [2, 3, 5, 11])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_inner_steps_never_increase_objective(T, lam):
    geom, _, _ = random_geometry(T, 80, seed=40 + T)
    alpha = torch.zeros(T, dtype=F64)
    vals = [float(rotation_objective(alpha, geom, lam))]
    for k in range(1, 40):
        alpha_k = solve_rotation_angles(geom, lam, steps=k, lr=0.1)
        vals.append(float(rotation_objective(alpha_k, geom, lam)))
    diffs = [b - a for a, b in zip(vals, vals[1:])]
    assert max(diffs) <= 1e-15
    assert vals[-1] < vals[0] - 1e-6


def test_angles_stay_in_box_for_any_lr():
    geom, _, _ = random_geometry(6, 50, seed=50)
    for lr in (1e-3, 0.1, 10.0, 1e4):
        for lam in (0.0, 2.0):
            alpha = solve_rotation_angles(geom, lam, steps=25, lr=lr)
            assert torch.all(alpha >= 0) and torch.all(alpha <= HALF_PI)


@pytest.mark.parametrize("T", [1, 2, 3, 7])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_grad_matrix_matches_analytic_grad_and_autograd(T, lam):
    geom, gbars, ws = random_geometry(T, 60, seed=T + 90)
    gen = torch.Generator().manual_seed(T + 91)
    for scale in (1.0, 0.3):
        grad_matrix = rotation_grad_matrix(geom, lam, scale=scale)
        assert grad_matrix.matrix.shape == (2 * T, 2 * T) and grad_matrix.offset.shape == (2 * T,)
        for alpha in (torch.zeros(T, dtype=F64), torch.rand(T, generator=gen, dtype=F64) * HALF_PI):
            fast = grad_matrix.scaled_grad(alpha)
            torch.testing.assert_close(fast, scale * rotation_objective_grad(alpha, geom, lam), rtol=0, atol=1e-14)
            torch.testing.assert_close(fast, scale * ref.objective_grad(alpha, gbars, ws, lam), rtol=0, atol=1e-13)


def plain_projected_gradient(geom, lam, steps, lr):
    """The K-step solver written with the T x T analytic gradient, one formula per step."""
    alpha = torch.zeros(geom.num_tasks, dtype=F64)
    for _ in range(steps):
        alpha = torch.clamp(alpha - lr * rotation_objective_grad(alpha, geom, lam), 0.0, HALF_PI)
    return alpha


@pytest.mark.parametrize("T", [1, 2, 5, 11, 40])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_solver_equals_plain_projected_gradient(T, lam):
    geom, _, _ = random_geometry(T, 120, seed=T + 95)
    for steps, lr in ((0, 0.1), (5, DEFAULT_INNER_LR), (50, 1.0), (7, 200.0)):
        alpha = solve_rotation_angles(geom, lam, steps, lr)
        torch.testing.assert_close(alpha, plain_projected_gradient(geom, lam, steps, lr), rtol=0, atol=1e-12)
        assert torch.all(alpha >= 0) and torch.all(alpha <= HALF_PI)
    assert solve_rotation_angles(geom, lam, 50, 1.0).abs().max() > 1e-3 or T == 1  # T = 1 never moves


def test_solver_accepts_geometry_that_requires_grad():
    geom, _, _ = random_geometry(4, 30, seed=97)
    geom.P.requires_grad_(True)
    alpha = solve_rotation_angles(rotation_geometry(geom.P, geom.q, geom.dd), 1.0, 5, 2.0)
    torch.testing.assert_close(alpha, solve_rotation_angles(geom, 1.0, 5, 2.0), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- carried ||d||^2, inner device


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_carried_ema_sq_norm_matches_reference(lam):
    T, D = 5, 90
    reference = ref.ReferenceRGB(lam=lam, lr=3.0)
    ema = sq = None
    plain_ema = None
    for t, rotate in enumerate(SCHEDULES[lam]):
        G = make_grads(T, D, seed=300 + t)
        out = reference.step(G, rotate)
        res = rgb_step(G, ema, lam=lam, lr=3.0, rotate=rotate, ema_sq_norm=sq)
        plain = rgb_step(G, plain_ema, lam=lam, lr=3.0, rotate=rotate)
        ema, sq, plain_ema = res.ema, res.ema_sq_norm, plain.ema
        torch.testing.assert_close(res.direction, out["v"], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.ema, out["d"], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.angles, out["alpha"], rtol=0, atol=1e-10)
        torch.testing.assert_close(res.direction, plain.direction, rtol=0, atol=1e-12)
        # the closed form is the squared norm of the returned EMA
        assert sq.shape == () and sq.dtype == F64
        torch.testing.assert_close(sq, out["d"] @ out["d"], rtol=0, atol=1e-12)
        torch.testing.assert_close(plain.ema_sq_norm, sq, rtol=0, atol=1e-12)


def test_ema_sq_norm_is_used_and_checked():
    G = make_grads(3, 40, seed=12)
    d = rgb_step(G, None).ema
    right = rgb_step(G, d, lam=1.0, lr=3.0, ema_sq_norm=float(d @ d))
    torch.testing.assert_close(right.direction, rgb_step(G, d, lam=1.0, lr=3.0).direction, rtol=0, atol=1e-12)
    # a wrong carried value changes the step: it is really used instead of a dot product
    wrong = rgb_step(G, d, lam=1.0, lr=3.0, ema_sq_norm=4.0 * float(d @ d))
    assert (wrong.ema_sq_norm - right.ema_sq_norm).abs() > 1e-3
    # ignored without an EMA (d_0 = 0)
    assert torch.equal(rgb_step(G, None, ema_sq_norm=5.0).direction, rgb_step(G, None).direction)
    with pytest.raises(ValueError, match="ema_sq_norm"):
        rgb_step(G, d, ema_sq_norm=torch.ones(2, dtype=F64))


def test_inner_device_option_on_cpu():
    G = make_grads(4, 50, seed=13)
    d = rgb_step(G, None).ema
    same = rgb_step(G, d, lam=1.0, lr=2.0)
    for inner in ("cpu", torch.device("cpu")):
        res = rgb_step(G, d, lam=1.0, lr=2.0, inner_device=inner)
        assert torch.equal(res.direction, same.direction) and torch.equal(res.angles, same.angles)
    with pytest.raises(ValueError, match="inner_device"):
        rgb_step(G, d, inner_device="no-such-device")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", ["pgd", "exact"])
def test_inner_device_cpu_for_cuda_grads_matches_reference(solver):
    reference = ref.ReferenceRGB(lam=1.0, lr=3.0)
    ema = sq = None
    for t in range(3):
        G = make_grads(6, 80, seed=400 + t)
        out = reference.step(G, True) if solver == "pgd" else None
        on_device = rgb_step(G.cuda(), ema, lam=1.0, lr=3.0, solver=solver, ema_sq_norm=sq)
        res = rgb_step(G.cuda(), ema, lam=1.0, lr=3.0, solver=solver, ema_sq_norm=sq, inner_device="cpu")
        ema, sq = res.ema, res.ema_sq_norm
        for x in (res.direction, res.ema, res.angles, res.gram, res.rotated_gram, res.ema_sq_norm):
            assert x.device.type == "cuda"
        torch.testing.assert_close(res.direction, on_device.direction, rtol=0, atol=1e-10)
        torch.testing.assert_close(res.angles, on_device.angles, rtol=0, atol=1e-10)
        if out is not None:
            torch.testing.assert_close(res.direction.cpu(), out["v"], rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- exact solver


@pytest.mark.parametrize("T", [2, 3, 5, 11, 40])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_exact_solver_is_stationary_and_not_worse(T, lam):
    geom, _, _ = random_geometry(T, 200, seed=60 + T)
    alpha_star = solve_rotation_angles_exact(geom, lam, tol=1e-10, max_iter=10000)
    assert torch.all(alpha_star >= 0) and torch.all(alpha_star <= HALF_PI)
    assert float(projected_gradient_norm(alpha_star, geom, lam)) < 1e-9
    f_star = float(rotation_objective(alpha_star, geom, lam))
    for steps, lr in ((5, DEFAULT_INNER_LR), (50, 1.0), (5, 5.0)):
        f_k = float(rotation_objective(solve_rotation_angles(geom, lam, steps, lr), geom, lam))
        assert f_star <= f_k + 1e-12
    # deterministic
    assert torch.equal(alpha_star, solve_rotation_angles_exact(geom, lam, tol=1e-10, max_iter=10000))


def test_rgb_step_exact_solver():
    G = make_grads(5, 90, seed=70)
    d = rgb_step(G, None).ema
    res = rgb_step(G, d, lam=0.5, solver="exact")
    pgd = rgb_step(G, d, lam=0.5, steps=5)
    torch.testing.assert_close(res.ema, pgd.ema)  # EMA independent of the solver
    # rebuild the geometry from explicit vectors and compare angles
    geom, _, _ = geometry_from_reference(G, res.ema)
    torch.testing.assert_close(res.angles, solve_rotation_angles_exact(geom, 0.5), rtol=0, atol=1e-8)
    assert res.steps > 0 and res.rotated
    assert float(projected_gradient_norm(res.angles, geom, 0.5)) < 1e-9
    assert float(rotation_objective(res.angles, geom, 0.5)) <= float(rotation_objective(pgd.angles, geom, 0.5))


# --------------------------------------------------------------------------- Eq. 2


def test_adaptive_steps_first_step_and_equal_losses():
    assert adaptive_num_steps([1.0, 2.0], None, 3, 30, 0.1) == 3
    assert adaptive_num_steps([1.0, 2.0, 0.5], [1.0, 2.0, 0.5], 3, 30, 0.1) == 3
    # equal relative changes: std 0 -> min
    assert adaptive_num_steps([2.0, 4.0], [1.0, 2.0], 3, 30, 0.1, eps=0.0) == 3
    # one task: std defined as 0
    assert adaptive_num_steps([5.0], [1.0], 3, 30, 0.1) == 3


def test_adaptive_steps_hand_computed():
    # delta = (1, 0, -1): unbiased std = 1 (biased would be 0.816)
    # K = 0 + 5 * 1/(1+1) = 2.5 -> 3 with round-half-up (2 with half-even or biased std)
    assert adaptive_num_steps(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0]), 0, 5, 1.0, eps=0.0) == 3
    # k_std = 3: K = 2 + 8 * 1/4 = 4
    assert adaptive_num_steps([2.0, 1.0, 0.0], [1.0, 1.0, 1.0], 2, 10, 3.0, eps=0.0) == 4
    # delta = (0.5, -0.5): std = sqrt(0.5) = 0.7071; k = 0.7071 -> K = 1 + 9 * 0.5 = 5.5 -> 6
    s = math.sqrt(0.5)
    k = adaptive_num_steps([3.0, 1.0], [2.0, 2.0], 1, 10, s * (1 + 1e-9), eps=0.0)
    assert k == 5  # 5.4999999... rounds down
    assert adaptive_num_steps([3.0, 1.0], [2.0, 2.0], 1, 10, s * (1 - 1e-9), eps=0.0) == 6


def test_adaptive_steps_extremes():
    assert adaptive_num_steps([1e6, 1.0, 0.0], [1.0, 1.0, 1.0], 5, 50, 0.1) == 50
    k = adaptive_num_steps([1e3, 1.0, 0.0], [1.0, 1.0, 1.0], 5, 50, 0.1)
    assert 49 <= k <= 50
    assert adaptive_num_steps([float("nan"), 1.0], [1.0, 1.0], 5, 50, 0.1) == 5
    assert adaptive_num_steps([float("inf"), 1.0], [1.0, 1.0], 5, 50, 0.1) == 5
    with pytest.raises(ValueError):
        adaptive_num_steps([1.0], [1.0], 5, 50, 0.0)
    with pytest.raises(ValueError):
        adaptive_num_steps([1.0], [1.0], 5, 4, 1.0)


def test_autocast_does_not_lower_precision():
    G = make_grads(5, 120, seed=80).float()
    plain = rgb_step(G, None, lam=1.0, lr=2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # sanity: autocast is active for a plain float32 matmul here
        assert (G @ G.T).dtype == torch.bfloat16
        inside = rgb_step(G, None, lam=1.0, lr=2.0)
    assert inside.direction.dtype == torch.float32
    torch.testing.assert_close(inside.direction, plain.direction, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ema_parallel_to_a_task_gradient_gives_a_bounded_direction(dtype):
    """d_t (anti-)parallel to gbar_i makes w_i undefined (m_i is round-off): the step must stay
    a mean of unit-norm vectors (|v| <= 1), not blow up through 1/(m_i + eps)."""
    cases = [  # states captured from the toy problem just before a float32 blow-up
        ([[0.049577496945858, 6.759597454220057e-05], [3.2945175170898438, -0.011239650659263134]],
         [0.9353846311569214, 0.0015065332408994436]),
        ([[-0.006636395584791899, -0.00958928931504488], [5.591370427282527e-05, 9.682101249694824]],
         [0.42549586296081543, 0.4285608232021332]),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [1.0, 0.0, 0.0]),  # d exactly along gbar_1
    ]
    for grads, ema in cases:
        for lr, steps in [(0.1, 5), (1.0, 50)]:
            r = rgb_step(torch.tensor(grads, dtype=dtype), torch.tensor(ema, dtype=dtype), steps=steps, lr=lr)
            assert torch.isfinite(r.direction).all()
            assert float(r.direction.norm()) <= 1.0 + 1e-5
            assert ((r.angles >= 0) & (r.angles <= math.pi / 2)).all()
