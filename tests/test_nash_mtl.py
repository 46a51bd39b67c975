"""Nash-MTL's weights from the Gramian (``nash_mtl.py``) against torchjd's ``NashMTL`` (the port
of the authors' cvxpy code, whose problem cvxpy compiles at every solve), float64, over
several steps so that the warm start and the step counter matter."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torchjd import aggregation as tjd

from LibMTL_rgb.weighting.nash_mtl import BargainingProblem, NashState, bargaining_problem, nash_weights
from jacobian_model import jacobian_model, random_jacobian, set_task, step

TASKS, DIM, STEPS = 5, 9, 6


def jacobians(seed: int) -> list[torch.Tensor]:
    """Slowly drifting Jacobians (a common part plus noise), as along a training run."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(TASKS, DIM, generator=generator, dtype=torch.float64) + 0.5
    return [base + 0.3 * torch.randn(TASKS, DIM, generator=generator, dtype=torch.float64) for _ in range(STEPS)]


def torchjd_weights(matrices: list[torch.Tensor], every: int, niter: int) -> list[np.ndarray]:
    reference = tjd.NashMTL(n_tasks=TASKS, max_norm=0.0, update_weights_every=every, optim_niter=niter).weighting
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "not DPP", the reason for nash_mtl.py
        return [reference(G).numpy() for G in matrices]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("every, niter", [(1, 20), (2, 20), (1, 3)])
def test_weights_from_the_gramian_match_torchjd_over_steps(seed, every, niter):
    matrices = jacobians(seed)
    expected = torchjd_weights(matrices, every, niter)
    state = NashState.initial(TASKS)
    options = {"update_weights_every": every, "optim_niter": niter}
    for G, reference in zip(matrices, expected):
        weights = nash_weights(G @ G.T, state, options)
        assert weights.dtype == torch.float64
        np.testing.assert_allclose(weights.numpy(), reference, rtol=0, atol=1e-6)
    assert state.step == STEPS
    assert not np.allclose(expected[-1], 1.0)  # the solver moved α from its start


def test_the_result_solves_the_bargaining_equation():
    """``α ⊙ Kα = 1`` (Navon et al., Eq. 5; the constraint ``ν α_i (Kα/ν)_i ≥ 1`` is active)."""
    G = jacobians(3)[0]
    gram = (G @ G.T).numpy()
    scale = float(np.linalg.norm(gram))
    alpha = BargainingProblem(TASKS).solve(gram / scale, scale, np.ones(TASKS), 20)
    assert np.abs(alpha * (gram @ alpha) - 1).max() < 1e-6
    assert np.abs(gram @ np.ones(TASKS) - 1).max() > 1e-1  # the start did not


def test_a_failed_solve_keeps_the_previous_weights_as_torchjd():
    """On this 3×6 case ECOS fails at the first iterate; the authors' code (and torchjd) keep α."""
    G = random_jacobian(2, 3, 6)
    reference = tjd.NashMTL(n_tasks=3, max_norm=0.0).weighting
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(G).numpy()
    weights = nash_weights(G @ G.T, NashState.initial(3), {"update_weights_every": 1, "optim_niter": 20})
    np.testing.assert_allclose(weights.numpy(), expected, rtol=0, atol=1e-6)


def test_the_problem_is_compiled_once():
    """DPP: cvxpy reuses the compiled problem for new parameter values (the authors' is not)."""
    assert bargaining_problem(TASKS).problem.is_dpp()
    G = jacobians(4)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cvxpy warns when a parametrised problem is not DPP
        nash_weights(G @ G.T, NashState.initial(TASKS), {"update_weights_every": 1, "optim_niter": 20})


@pytest.mark.parametrize("every", [1, 2])
def test_nash_mtl_weighting_follows_torchjd_over_steps_and_resumes(every):
    """The registered ``Nash_MTL`` (weights from its Gramian, state in its buffers) against
    torchjd's ``NashMTL`` on a model whose per-task gradients are the chosen Jacobians; at step
    3 a fresh model loaded from the ``state_dict`` carries on (one that is not loaded differs
    when the step counter matters; with ``every = 1`` the solution, all constraints active,
    does not depend on the warm start)."""
    matrices = jacobians(5)
    expected = torchjd_weights(matrices, every, 20)
    model = jacobian_model("Nash_MTL", matrices[0])
    for k, (G, reference) in enumerate(zip(matrices, expected)):
        if k == 3:
            resumed, fresh = jacobian_model("Nash_MTL", G), jacobian_model("Nash_MTL", G)
            resumed.load_state_dict(model.state_dict())
            model = resumed
            if every == 2:  # step 3 reuses step 2's α, a fresh start solves on step 3's Gramian
                assert not np.allclose(step(fresh, max_norm=0.0, update_weights_every=every)[0], reference, atol=1e-3)
        for i in range(TASKS):
            set_task(model, i, grad=G[i])
        weights, grad = step(model, max_norm=0.0, update_weights_every=every)
        np.testing.assert_allclose(weights, reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(grad, torch.from_numpy(weights) @ G, rtol=1e-10, atol=1e-12)
    assert int(model.nash_step) == STEPS
