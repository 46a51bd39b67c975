"""The torchjd-wrapped weightings: on a model whose per-task gradients are exactly a chosen
Jacobian ``G``, the shared gradient our adapter writes equals torchjd's aggregator output on
``G`` (float64), and the returned task weights are torchjd's weights."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torchjd import aggregation as tjd
from torchjd.linalg import QuadprogProjector

from LibMTL_rgb.weighting.min_norm import min_norm_weights
from LibMTL_rgb.weighting.torchjd_methods import MinNormWeighting, _cagrad_weighting_class
from jacobian_model import D, T, jacobian_model, random_jacobian, set_task, step


# name -> (weight_args, torchjd aggregator with the same options, exposes weights)
CASES = {
    "MGDA": ({}, lambda: tjd.GramianWeightedAggregator(MinNormWeighting()), True),
    "PCGrad": ({}, lambda: tjd.PCGrad(), True),
    "GradVac": ({"GradVac_beta": 0.3}, lambda: tjd.GradVac(beta=0.3), True),
    # CAGrad: our scale-free solver (``cagrad_solver.py``) in torchjd's Gramian aggregator; its
    # agreement with the paper's primal problem is tested in test_cagrad.py
    "CAGrad": ({"calpha": 0.4, "rescale": 0}, lambda: tjd.GramianWeightedAggregator(_cagrad_weighting_class()(0.4)), True),
    "IMTL": ({}, lambda: tjd.IMTLG(), True),
    "FairGrad": ({"FairGrad_alpha": 2.0}, lambda: tjd.FairGrad(alpha=2.0), True),
    "Aligned_MTL": ({}, lambda: tjd.AlignedMTL(pref_vector=torch.ones(T, dtype=torch.float64)), True),
    "UPGrad": ({"UPGrad_norm_eps": 1e-3}, lambda: tjd.UPGrad(projector=QuadprogProjector(norm_eps=1e-3, reg_eps=1e-4)), True),
    "DualProj": ({}, lambda: tjd.DualProj(), True),
    "GradDrop": ({"leak": 0.25}, lambda: tjd.GradDrop(leak=torch.full((T,), 0.25, dtype=torch.float64)), False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_matches_torchjd_aggregator(name):
    weight_args, make_reference, exposes_weights = CASES[name]
    G = random_jacobian(0)
    model = jacobian_model(name, G)
    torch.manual_seed(7)
    weights, grad = step(model, **weight_args)
    reference = make_reference()
    torch.manual_seed(7)
    expected = reference(G)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    if exposes_weights:
        torch.manual_seed(7)
        expected_weights = make_reference().weighting(G)
        np.testing.assert_allclose(weights, expected_weights.numpy(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(torch.from_numpy(weights) @ G, grad, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_array_equal(weights, np.ones(T))


def test_adapter_gradient_has_shape_and_is_not_the_plain_sum():
    G = random_jacobian(3)
    _, grad = step(jacobian_model("MGDA", G))
    assert grad.shape == (D,)
    assert not torch.allclose(grad, G.sum(0))


def test_cagrad_rescale_divides_the_direction():
    G = random_jacobian(1)
    c = 0.5
    _, reference = step(jacobian_model("CAGrad", G), calpha=c, rescale=0)
    assert torch.allclose(reference, tjd.CAGrad(c=c)(G), rtol=1e-6)  # torchjd's cvxpy solution, to its accuracy
    for rescale, divisor in ((1, 1.0 + c**2), (2, 1.0 + c)):
        _, grad = step(jacobian_model("CAGrad", G), calpha=c, rescale=rescale)
        torch.testing.assert_close(grad, reference / divisor, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["l2", "loss", "loss+"])
def test_mgda_gradient_normalisation(kind):
    G = random_jacobian(2)
    offsets = [0.5, 2.0, 4.0]
    losses = torch.tensor(offsets, dtype=torch.float64)
    norms = G.norm(dim=1)
    scales = {"l2": norms, "loss": losses, "loss+": losses * norms}[kind]
    normalised = G / scales.unsqueeze(1)
    inner = min_norm_weights(normalised @ normalised.T)
    weights, grad = step(jacobian_model("MGDA", G, offsets), mgda_gn=kind)
    # the authors' code: weights found on the normalised gradients scale the raw losses
    np.testing.assert_allclose(weights, inner.numpy(), rtol=1e-10)
    torch.testing.assert_close(grad, inner @ G, rtol=1e-10, atol=1e-12)


# Nash_MTL (weights from the Gramian, its own cvxpy problem): tests/test_nash_mtl.py
@pytest.mark.parametrize("name", ["GradVac"])
def test_stateful_methods_follow_torchjd_across_steps(name):
    weight_args, make_reference, _ = CASES[name]
    G1, G2 = random_jacobian(4), random_jacobian(5)
    model, reference = jacobian_model(name, G1), make_reference()
    for seed, G in ((11, G1), (12, G2)):
        for i in range(T):
            set_task(model, i, grad=G[i])
        torch.manual_seed(seed)
        _, grad = step(model, **weight_args)
        torch.manual_seed(seed)
        torch.testing.assert_close(grad, reference(G), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["GradVac"])
def test_stateful_methods_resume_from_state_dict(name):
    weight_args = CASES[name][0]
    G1, G2 = random_jacobian(6), random_jacobian(7)
    first = jacobian_model(name, G1)
    torch.manual_seed(0)
    step(first, **weight_args)
    resumed = jacobian_model(name, G1)
    resumed.load_state_dict(first.state_dict())
    results = []
    for model in (first, resumed):
        for i in range(T):
            set_task(model, i, grad=G2[i])
        torch.manual_seed(1)
        results.append(step(model, **weight_args))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1])
    fresh = jacobian_model(name, G2)
    torch.manual_seed(1)
    assert not torch.allclose(step(fresh, **weight_args)[1], results[1][1])  # the state matters


def test_mgda_ub_applies_representation_weights():
    G = random_jacobian(8)
    weights, grad = step(jacobian_model("MGDA", G, rep_grad=True))
    expected = min_norm_weights(G @ G.T)
    np.testing.assert_allclose(weights, expected.numpy(), rtol=1e-10)
    torch.testing.assert_close(grad, expected @ G, rtol=1e-10, atol=1e-12)


def test_graddrop_runs_on_representation_gradients():
    """With one sample and a positive representation equal to θ, GradDrop at the representation
    and on the parameters draw the same U and give the same update (tests/test_graddrop.py
    checks the representation rule on batches)."""
    G = random_jacobian(0)
    updates = []
    for rep_grad in (False, True):
        model = jacobian_model("GradDrop", G, rep_grad=rep_grad)
        model.encoder.theta.data.fill_(1.0)
        torch.manual_seed(11)
        updates.append(step(model, leak=0.25)[1])
    torch.testing.assert_close(updates[1], updates[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, bad", [("GradDrop", {"leak": 1.5}), ("CAGrad", {"rescale": 3}), ("MGDA", {"mgda_gn": "max"})])
def test_bad_options_raise(name, bad):
    with pytest.raises(ValueError):
        step(jacobian_model(name, random_jacobian(0)), **bad)
