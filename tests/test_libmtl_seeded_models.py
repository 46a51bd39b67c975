"""Same seed, same run: every LibMTL model factory here draws the random numbers LibMTL
1.1.5's does, so after the same ``torch.manual_seed`` the weights and the random stream that
follows (layers built next, data order, dropout) are LibMTL's (issue 18)."""
from __future__ import annotations

import pytest
import torch

import LibMTL_rgb.model as ours
from LibMTL_rgb.model import LIBMTL_MODEL_NAMES
from tests.libmtl_oracle import libmtl_available

pytestmark = pytest.mark.skipif(not libmtl_available(), reason="LibMTL 1.1.5 (the oracle) is not installed")


def _libmtl_model():
    from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

    ensure_torchvision_models_utils()
    import LibMTL.model

    return LibMTL.model


def _built(module, name: str, **kwargs):
    torch.manual_seed(0)
    factory = getattr(module, name)
    model = factory("resnet18", pretrained=False, **kwargs) if name == "resnet_dilated" else factory(**kwargs)
    return model.state_dict(), torch.rand(4)


@pytest.mark.parametrize("name", LIBMTL_MODEL_NAMES)
def test_same_seed_same_weights_and_random_stream(name):
    theirs, after_theirs = _built(_libmtl_model(), name)
    mine, after_mine = _built(ours, name)
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(mine[key], value), key
    assert torch.equal(after_mine, after_theirs)


def test_zero_init_residual_as_libmtl():
    theirs, after_theirs = _built(_libmtl_model(), "resnet50", zero_init_residual=True)
    mine, after_mine = _built(ours, "resnet50", zero_init_residual=True)
    assert all(torch.equal(mine[k], v) for k, v in theirs.items()) and torch.equal(after_mine, after_theirs)
    assert not mine["layer1.0.bn3.weight"].any()
