"""GradDrop at the representation (``--rep_grad``) against a literal float64 transcription of
the paper's equations (Chen et al. 2020, Eq. 1-3 with leak), on a batch with mixed input signs
and a fixed random draw U."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.trainer import build_mtl_model

TASKS = ("a", "b", "c")
BATCH, IN_DIM, FEATURES = 4, 3, 6


def make_model(rep_grad: bool = True):
    torch.manual_seed(0)
    decoders = nn.ModuleDict({t: nn.Sequential(nn.Linear(FEATURES, 2), nn.Tanh(), nn.Linear(2, 1)) for t in TASKS})
    return build_mtl_model("GradDrop", "HPS", list(TASKS), lambda: nn.Linear(IN_DIM, FEATURES), decoders,
                           rep_grad, False, torch.device("cpu")).double()


def literal_graddrop_rep_grad(per_sample: np.ndarray, activations: np.ndarray, draw: np.ndarray, leak: float) -> np.ndarray:
    """``per_sample[i, b, f] = ∂L_i/∂A[b, f]``; returns ``∂L/∂A`` after GradDrop, feature by
    feature, written as the paper states it."""
    tasks, batch, features = per_sample.shape
    out = np.zeros((batch, features))
    for f in range(features):
        signed = [sum(np.sign(activations[b, f]) * per_sample[i, b, f] for b in range(batch)) for i in range(tasks)]
        magnitude = sum(abs(s) for s in signed)
        purity = 0.5 * (1.0 + sum(signed) / magnitude) if magnitude > 0 else 0.5
        for i in range(tasks):
            keep = (purity > draw[f] and signed[i] > 0) or (purity < draw[f] and signed[i] < 0)
            out[:, f] += (leak + (1.0 - leak) * float(keep)) * per_sample[i, :, f]
    return out


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("seed", range(3))
def test_graddrop_matches_the_papers_equations(seed, leak):
    model = make_model()
    x = torch.randn(BATCH, IN_DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out = model(x)
    losses = torch.stack([out[t].pow(2).mean() for t in TASKS])
    rep = model.rep
    per_sample = np.stack([torch.autograd.grad(losses[i], model.rep_tasks[t], retain_graph=True)[0].numpy()
                           for i, t in enumerate(TASKS)])
    torch.manual_seed(100 + seed)
    draw = torch.rand(FEATURES, dtype=torch.float64).numpy()
    expected_rep_grad = torch.from_numpy(literal_graddrop_rep_grad(per_sample, rep.detach().numpy(), draw, leak))
    expected = torch.autograd.grad(rep, list(model.encoder.parameters()), expected_rep_grad, retain_graph=True)
    heads = list(model.decoders.parameters())
    expected_heads = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    plain = torch.autograd.grad(rep, list(model.encoder.parameters()), torch.from_numpy(per_sample.sum(0)), retain_graph=True)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(100 + seed)
    weights = model.backward(losses, leak=leak)
    np.testing.assert_array_equal(weights, np.ones(len(TASKS)))
    for param, value in zip(model.encoder.parameters(), expected):
        torch.testing.assert_close(param.grad, value, rtol=1e-12, atol=1e-14)
    for param, value in zip(heads, expected_heads):
        torch.testing.assert_close(param.grad, value, rtol=1e-12, atol=1e-14)
    if leak == 0.0:  # the mask dropped something, so this is not the plain sum
        assert not all(torch.allclose(param.grad, value) for param, value in zip(model.encoder.parameters(), plain))
