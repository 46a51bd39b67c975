"""CAGrad against the paper's primal problem (Liu et al. 2021, Eq. 4), and its positive
homogeneity: scaling every loss by s scales the update by s, down to tiny losses (torchjd's
``norm_eps=1e-4`` returned an exactly zero update once Σ‖g_i‖² < 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from jacobian_model import jacobian_model, random_jacobian, step


def literal_cagrad_direction(G: np.ndarray, c: float) -> np.ndarray:
    """The paper's primal, as written: ``max_d min_i g_iᵀ d`` s.t. ``‖d − g_0‖ ≤ c‖g_0‖``,
    over ``(d, t)``: maximise t with ``g_iᵀ d ≥ t`` (SLSQP, ftol 1e-16, from d = g_0)."""
    g0 = G.mean(axis=0)
    radius_sq = c**2 * float(g0 @ g0)
    dim = G.shape[1]
    constraints = [{"type": "ineq", "fun": lambda x, g=g: float(g @ x[:dim] - x[dim])} for g in G]
    constraints.append({"type": "ineq", "fun": lambda x: radius_sq - float((x[:dim] - g0) @ (x[:dim] - g0))})
    start = np.append(g0, float((G @ g0).min()))
    result = minimize(lambda x: -x[dim], start, method="SLSQP", constraints=constraints,
                      options={"ftol": 1e-16, "maxiter": 2000})
    return result.x[:dim]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
def test_cagrad_matches_the_papers_primal_problem(seed, c):
    G = random_jacobian(seed)
    _, ours = step(jacobian_model("CAGrad", G), calpha=c, rescale=0)
    expected = literal_cagrad_direction(G.numpy(), c)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
    # and the worst improvement is the primal's optimum
    assert float((G @ ours).min()) == pytest.approx(float((G.numpy() @ expected).min()), rel=1e-8)


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_cagrad_is_positively_homogeneous_over_loss_scales(rescale):
    G = random_jacobian(5)
    _, unit = step(jacobian_model("CAGrad", G), calpha=0.5, rescale=rescale)
    for scale in (1e-6, 1e-4, 1e-2, 1.0, 1e2):
        _, scaled = step(jacobian_model("CAGrad", scale * G), calpha=0.5, rescale=rescale)
        assert float(scaled.norm()) > 0.0
        torch.testing.assert_close(scaled, scale * unit, rtol=1e-9, atol=0.0)
