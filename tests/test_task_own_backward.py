"""Per-task gradients differentiate each task's own loss (issue 23): on MTAN and PLE, where every
task's branch reaches the shared parameters, task t's backward pass must not run through the
other tasks' branches, and the [T, D] matrix must equal the rows-of-the-stack gradients."""
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from LibMTL_rgb.model import resnet_encoder
from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting import abstract_weighting
from LibMTL_rgb.weighting.abstract_weighting import _looped_task_grads, task_loss_outputs

TASKS = ["a", "b", "c", "d"]


class ConvBackwardCounter(TorchDispatchMode):
    """Counts ``aten.convolution_backward`` calls made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten.convolution_backward:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def conv_decoders() -> nn.ModuleDict:
    """One conv per task head, so a pass through a task's branch shows as a convolution_backward."""
    return nn.ModuleDict({t: nn.Sequential(nn.Conv2d(32, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()) for t in TASKS})


def model_and_losses(arch: str, weighting: str = "EW"):
    torch.manual_seed(0)
    options = {"img_size": [3, 16, 16]}
    if arch == "PLE":
        options["num_experts"] = [1] + [1] * len(TASKS)
    model = build_mtl_model(weighting, arch, TASKS, lambda: resnet_encoder(18, width=4), conv_decoders(), False, False,
                            "cpu", options).double()
    out = model(torch.randn(2, 3, 16, 16, dtype=torch.float64))
    losses = torch.stack([out[t].pow(2).mean() * (i + 1) for i, t in enumerate(TASKS)])
    params = [p for p in model.get_share_params() if p.requires_grad]
    return model, losses, params


def conv_backwards(output, params, cotangent=None) -> int:
    with ConvBackwardCounter() as counter:
        torch.autograd.grad(output, params, cotangent, retain_graph=True, allow_unused=True)
    return counter.calls


def test_each_task_gradient_runs_only_through_its_own_branch_on_mtan_and_ple():
    for arch in ("MTAN", "PLE"):
        _, losses, params = model_and_losses(arch)
        own = [conv_backwards(output, params, cotangent) for output, cotangent in task_loss_outputs(losses)]
        rows = [conv_backwards(losses[t], params) for t in range(len(TASKS))]
        assert len(set(own)) == 1, (arch, own)  # the same work for every task
        # a row of the stack also back-propagates zeros through the other T-1 branches
        assert all(o < r for o, r in zip(own, rows)), (arch, own, rows)
        # T own passes cost what the rows cost minus the (T-1) foreign branches each row entered
        branch = (rows[0] - own[0]) // (len(TASKS) - 1)
        assert branch > 0 and all(r == o + (len(TASKS) - 1) * branch for o, r in zip(own, rows)), (arch, own, rows)


def test_the_gradient_matrix_is_the_rows_of_the_stack_exactly():
    for arch in ("MTAN", "PLE"):
        _, losses, params = model_and_losses(arch)
        grads, reached = _looped_task_grads(losses, params)
        expected = torch.stack([
            torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(
                torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True), params)])
            for t in range(len(TASKS))])
        assert grads.dtype == torch.float64 and all(reached)
        assert (grads - expected).abs().max().item() <= 1e-15, arch


def shared_update(arch: str, weighting: str) -> torch.Tensor:
    model, losses, params = model_and_losses(arch, weighting)
    model.grad_method = "loop"
    model.backward(losses)
    return torch.cat([p.grad.reshape(-1) for p in params])


def test_the_shared_update_of_a_loop_step_is_unchanged(monkeypatch):
    for arch in ("MTAN", "PLE"):
        for weighting in ("MGDA", "CAGrad"):
            ours = shared_update(arch, weighting)
            with monkeypatch.context() as patch:  # before issue 23: the rows of the stacked vector
                patch.setattr(abstract_weighting, "task_loss_outputs", lambda losses: [(row, None) for row in losses])
                before = shared_update(arch, weighting)
            assert ours.abs().max().item() > 0
            assert (ours - before).abs().max().item() <= 1e-15, (arch, weighting)


def test_other_loss_vectors_fall_back_to_their_rows():
    x = torch.randn(3, requires_grad=True)
    losses = x.pow(2)  # not a stack: its rows are the outputs
    outputs = task_loss_outputs(losses)
    assert [cotangent for _, cotangent in outputs] == [None, None, None]
    grads, _ = _looped_task_grads(losses, [x])
    assert torch.equal(grads, torch.diag(2 * x.detach()))
    constant = torch.stack([x.sum(), torch.zeros(())])  # a task whose loss does not depend on θ
    grads, _ = _looped_task_grads(constant, [x])
    assert torch.equal(grads, torch.stack([torch.ones(3), torch.zeros(3)]))


def test_a_cast_stack_is_looked_through():
    x = torch.randn(3, requires_grad=True)
    per_task = [x[0] * 2, x[1].pow(2), x.sum()]
    losses = torch.stack([loss.to(torch.bfloat16) for loss in per_task]).to(torch.float32)  # as under amp
    outputs = task_loss_outputs(losses)
    assert all(cotangent is not None for _, cotangent in outputs)  # the stack's input edges
    grads, _ = _looped_task_grads(losses, [x])
    expected = torch.stack([torch.autograd.grad(loss, x, retain_graph=True)[0] for loss in per_task])
    assert torch.equal(grads, expected)
