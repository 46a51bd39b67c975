"""The per-task gradient plumbing of ``AbsWeighting``: the batched backward, the loop, the
automatic fallback, and LibMTL's semantics (``[T, D]`` matrix; with ``mode='backward'`` the
task-specific parameters hold the sum of their tasks' gradients, as after T backward passes)."""
import warnings

import pytest
import torch
import torch.nn as nn

import synthetic
from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting.abstract_weighting import BatchedGradFallbackWarning

NUM_TASKS = 3


class FiniteCheck(torch.autograd.Function):
    """Identity whose backward checks its incoming gradient with ``.item()``: a data-dependent
    operation that ``torch.vmap`` cannot batch, so the batched path must fall back."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        if not torch.isfinite(grad.sum()).item():
            raise FloatingPointError("non-finite gradient")
        return grad


class CheckedEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = synthetic.encoder_class()

    def forward(self, x):
        return FiniteCheck.apply(self.body(x))


class EncoderWithIdleLayer(nn.Module):
    """A shared encoder with a parameter no task uses (its gradient must stay ``None``)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = synthetic.encoder_class()
        self.idle = nn.Linear(2, 2)

    def forward(self, x):
        return self.body(x)


def make_model(encoder_class=synthetic.encoder_class, grad_method="auto", seed=0):
    torch.manual_seed(seed)
    model = build_mtl_model("EW", "HPS", [f"t{i}" for i in range(NUM_TASKS)], encoder_class,
                            synthetic.decoders(NUM_TASKS), False, False, torch.device("cpu")).to(torch.float64)
    model.grad_method = grad_method
    return model


def losses_of(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, synthetic.IN_DIM, generator=gen, dtype=torch.float64)
    y = torch.randn(12, NUM_TASKS, generator=gen, dtype=torch.float64)
    out = model(x)
    return torch.stack([((out[f"t{i}"].squeeze(1) - y[:, i]) ** 2).mean() for i in range(NUM_TASKS)])


def reference(model, seed=0):
    """LibMTL's way, written out: T backward passes; the shared gradients copied into rows."""
    model.zero_grad(set_to_none=True)
    losses = losses_of(model, seed)
    shared = list(model.get_share_params())
    rows = []
    for loss in losses:
        loss.backward(retain_graph=True)
        rows.append(torch.cat([torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1) for p in shared]))
        for p in shared:
            p.grad = None
    specific = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return torch.stack(rows), specific


def plumbed(model, seed=0, mode="backward"):
    model.zero_grad(set_to_none=True)
    grads = model._get_grads(losses_of(model, seed), mode=mode)
    specific = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return grads, specific


def assert_same_grads(actual, expected):
    (grads, specific), (ref_grads, ref_specific) = actual, expected
    assert grads.shape == (NUM_TASKS, sum(p.numel() for p in synthetic.encoder_class().parameters()))
    assert grads.dtype == torch.float64
    torch.testing.assert_close(grads, ref_grads, rtol=0, atol=1e-13)
    assert specific.keys() == ref_specific.keys()
    assert all(name.startswith("decoders.") for name in specific)
    for name, value in ref_specific.items():
        torch.testing.assert_close(specific[name], value, rtol=0, atol=1e-13)


@pytest.mark.parametrize("grad_method", ["auto", "batched", "loop"])
def test_every_path_matches_t_backward_passes_on_an_mlp(grad_method):
    model = make_model(grad_method=grad_method)
    expected = reference(model, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchedGradFallbackWarning)
        assert_same_grads(plumbed(model, seed=1), expected)
    assert not getattr(model, "_batched_grads_failed", False)
    assert all(p.grad is None for p in model.get_share_params())


def test_autograd_mode_leaves_grad_alone_and_keeps_the_graph():
    model = make_model(grad_method="batched")
    expected, _ = reference(model, seed=2)
    losses = losses_of(model, seed=2)
    grads = model._get_grads(losses, mode="autograd")
    torch.testing.assert_close(grads, expected, rtol=0, atol=1e-13)
    assert all(p.grad is None for p in model.parameters())
    losses.sum().backward()  # the graph is still there
    assert all(p.grad is not None for p in model.decoders.parameters())


def test_fallback_model_matches_the_loop_and_warns_once():
    model = make_model(CheckedEncoder, grad_method="auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            assert_same_grads(plumbed(model, seed=seed), reference(model, seed=seed))
    fallbacks = [w for w in caught if issubclass(w.category, BatchedGradFallbackWarning)]
    assert len(fallbacks) == 1
    assert ".item()" in str(fallbacks[0].message)
    assert model._batched_grads_failed


def test_forced_batched_path_raises_where_it_cannot_batch():
    model = make_model(CheckedEncoder, grad_method="batched")
    with pytest.raises(RuntimeError, match="item"):
        model._get_grads(losses_of(model))


@pytest.mark.parametrize("grad_method", ["batched", "loop"])
def test_unreached_shared_parameter_keeps_no_gradient(grad_method):
    model = make_model(EncoderWithIdleLayer, grad_method=grad_method)
    grads = model._get_grads(losses_of(model))
    idle = [k for k, p in enumerate(model._share_param_list()) if p is model.encoder.idle.weight][0]
    beg, end = model.grad_offsets[idle], model.grad_offsets[idle + 1]
    assert torch.count_nonzero(grads[:, beg:end]) == 0
    assert model._had_grad[idle] is False and model._had_grad[0] is True
    model._reset_grad(grads.sum(0))
    assert model.encoder.idle.weight.grad is None
    torch.testing.assert_close(model.encoder.body[0].weight.grad.reshape(-1), grads.sum(0)[: model.grad_offsets[1]])


def test_bad_grad_method_and_losses_are_refused():
    model = make_model(grad_method="fast")
    with pytest.raises(ValueError, match="grad_method"):
        model._get_grads(losses_of(model))
    model.grad_method = "auto"
    with pytest.raises(ValueError, match="require grad"):
        model._get_grads(losses_of(model).detach())
