"""A weighting's declared ``Hyperparameter``s are the one place its option defaults are written:
``backward(self, losses, **kwargs)`` fills them with ``method_options`` (no defaults in the
signature), refuses unknown keys with a suggestion, and still runs with no options at all."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from LibMTL_rgb.registry import WEIGHTINGS, hyperparameters_of
from LibMTL_rgb.weighting import AbsWeighting
from jacobian_model import jacobian_model, random_jacobian, step


@pytest.mark.parametrize("name", sorted(WEIGHTINGS.names()))
def test_backward_signature_writes_no_default(name):
    klass = WEIGHTINGS.get(name)
    for owner in klass.__mro__:
        if "backward" in vars(owner) and issubclass(owner, AbsWeighting):
            parameters = inspect.signature(vars(owner)["backward"]).parameters
            assert [p.name for p in parameters.values()] == ["self", "losses", "kwargs"], owner
    assert klass.method_hyperparameters() == hyperparameters_of(klass)  # the flags prepare_args builds


def test_method_options_fill_defaults_and_keep_values():
    model = jacobian_model("CAGrad", random_jacobian(0))
    assert model.method_options({}) == {"calpha": 0.5, "rescale": 1}
    assert model.method_options({"calpha": 0.2}) == {"calpha": 0.2, "rescale": 1}


def test_unknown_option_is_refused_with_a_suggestion():
    with pytest.raises(TypeError, match=r"unknown option 'calpa' \(did you mean 'calpha'\?\)"):
        step(jacobian_model("CAGrad", random_jacobian(0)), calpa=0.3)
    with pytest.raises(TypeError, match="unknown option 'rgb_step'"):
        step(jacobian_model("RGB", random_jacobian(0)), rgb_step=3)


def test_architecture_options_are_not_weighting_options():
    model = jacobian_model("EW", random_jacobian(0))
    assert model.method_options({}) == {}


def test_custom_libmtl_style_weighting_keeps_its_own_signature():
    """A LibMTL-derived weighting with its own keyword defaults (LibMTL's contract) still runs."""

    class HalfWeights(AbsWeighting):
        def backward(self, losses, scale=0.5, **kwargs):
            grads = self._get_grads(losses, mode="backward")
            weights = np.full(len(losses), scale)
            self._reset_grad(torch.as_tensor(weights) @ grads)
            return weights

    G = random_jacobian(1)
    model = jacobian_model(HalfWeights, G)
    weights, grad = step(model)
    np.testing.assert_array_equal(weights, [0.5] * len(G))
    torch.testing.assert_close(grad, 0.5 * G.sum(0))
    weights, _ = step(model, scale=0.25)
    np.testing.assert_array_equal(weights, [0.25] * len(G))
