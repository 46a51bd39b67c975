"""The chunked matrix path (``chunked_matrix.py``) and the refusal of methods that need the whole matrix.

With a ``grad_memory_budget`` far below the ``[T, D]`` matrix, GradDrop (coordinate-separable)
and GradVac per layer / per tensor (group-separable) take ``G`` in several chunks of
parameters and train the same float64 model on the same batches as on the whole matrix, to
1e-12 over three steps (GradVac's targets included). Methods with a ``[T, D]`` state are
refused when the Trainer is built, with a message naming the memory, the budget and the ways
out; a method that declares nothing is refused when it asks for the matrix, before it exists.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb import Trainer
from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.abstract_weighting import GRADIENT_PATHS, AbsWeighting, MatrixMemoryError
from LibMTL_rgb.weighting.chunked_matrix import group_chunks, parameter_chunks
from LibMTL_rgb.weighting.gradvac_groups import parameter_groups
from test_arch_weighting_matrix import TASKS, TinyConvEncoder, decoders, loader, task_dict
from test_architectures import arch_args

IMG = (3, 8, 8)
STEPS = 3
#: Bytes: the [2, 1140] float64 matrix of TinyConvEncoder takes 18240; this budget gives chunks
#: of several parameters (or layers) and chunks of one parameter larger than the budget.
BUDGET = 4500


pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def make_trainer(weighting: str, budget=None, arch: str = "HPS", grad_method: str = "loop", **weight_args) -> Trainer:
    torch.manual_seed(0)
    return Trainer(task_dict(), weighting, arch, TinyConvEncoder, decoders(), False, False,
                   {"optim": "sgd", "lr": 0.1}, device="cpu", arch_args=arch_args(arch, TASKS, IMG),
                   grad_method=grad_method, grad_memory_budget=budget, weight_args=weight_args)


def run_steps(trainer: Trainer, weight_args: dict, seed: int = 1) -> list[torch.Tensor]:
    model = trainer.model
    model.train()
    torch.manual_seed(seed)  # the same random draws (GradDrop's U, GradVac's task orders) in both runs
    for x, y in list(loader(4 * STEPS, False))[:STEPS]:
        trainer.optimizer.zero_grad(set_to_none=True)
        out = model(x.double())
        losses = torch.stack([nn.functional.mse_loss(out[t], y[t].double()) for t in TASKS])
        np.testing.assert_array_equal(model.backward(losses, **weight_args), np.ones(len(TASKS)))
        trainer.optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def record_slices(model) -> list[int]:
    """Wrap ``_task_grad_slice`` to record each chunk's width; forbid the whole matrix."""
    widths: list[int] = []
    original = model._task_grad_slice

    def recorded(losses, params):
        block, reached = original(losses, params)
        widths.append(block.shape[1])
        return block, reached

    def whole_matrix(*args, **kwargs):
        raise AssertionError("the chunked path formed the [T, D] matrix")

    model._task_grad_slice = recorded
    model._get_grads = whole_matrix
    model._compute_grad = whole_matrix
    return widths


def assert_chunked_matches_matrix(weighting: str, arch: str = "HPS", grad_method: str = "loop", budget: int = BUDGET,
                                  **weight_args) -> None:
    matrix = make_trainer(weighting, None, arch, **weight_args)
    chunked = make_trainer(weighting, budget, arch, grad_method, **weight_args)
    assert matrix.model.gradient_path() == "matrix"
    widths = record_slices(chunked.model)
    expected = run_steps(matrix, weight_args)
    found = run_steps(chunked, weight_args)
    assert len(widths) >= 3 * STEPS, f"{len(widths)} chunks in {STEPS} steps: the budget did not split G"
    assert sum(widths) == STEPS * chunked.model.grad_dim
    for a, b in zip(expected, found):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 1e-12, f"{weighting} on {arch}: the chunked path differs by {float((a - b).abs().max()):.3g}"
    moved = max(float((a - p0.detach()).abs().max()) for a, p0 in zip(expected, make_trainer(weighting, None, arch).model.parameters()))
    assert moved > 1e-4, "the steps did not move the parameters"
    if weighting == "GradVac":
        torch.testing.assert_close(chunked.model.gradvac_group_targets, matrix.model.gradvac_group_targets, rtol=0, atol=1e-12)
        assert bool(matrix.model.gradvac_group_targets.abs().sum() > 0)


@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_in_chunks_equals_graddrop_on_the_matrix(leak, capsys):
    trainer = make_trainer("GradDrop", BUDGET)
    assert "Gradient path: chunked matrix (the [2, 1140] matrix would take" in capsys.readouterr().out
    assert trainer.model.gradient_path() == "chunked" and "chunks" in trainer.model.gradient_path_reason
    assert_chunked_matches_matrix("GradDrop", leak=leak)


def test_graddrop_chunks_depend_on_the_draws():
    """Another seed gives other masks: the agreement above is the draws', not a trivial one."""
    first = run_steps(make_trainer("GradDrop", BUDGET), {}, seed=1)
    second = run_steps(make_trainer("GradDrop", BUDGET), {}, seed=2)
    assert max(float((a - b).abs().max()) for a, b in zip(first, second)) > 1e-6


@pytest.mark.parametrize("group_type", [1, 2])
def test_grouped_gradvac_in_chunks_equals_the_matrix_path(group_type):
    assert_chunked_matches_matrix("GradVac", GradVac_group_type=group_type)


def test_grouped_gradvac_with_grad_method_gramian_takes_the_chunks():
    """Formerly refused: on the Gramian path each group's columns come in chunks, exactly."""
    assert_chunked_matches_matrix("GradVac", grad_method="gramian", GradVac_group_type=1)


@pytest.mark.parametrize("weighting,weight_args", [("GradDrop", {}), ("GradVac", {"GradVac_group_type": 1})])
def test_chunked_path_on_cross_stitch(weighting, weight_args):
    """Shared parameters outside a module (the stitching units) are chunks like the others."""
    assert_chunked_matches_matrix(weighting, arch="Cross_stitch", budget=2000, **weight_args)  # D = 524 shared


def test_group_chunks_hold_whole_groups_within_the_budget():
    model = make_trainer("GradVac", BUDGET).model
    params = model._share_param_list()
    for group_type in (1, 2):
        groups = parameter_groups(model, params, group_type)
        chunks, members = group_chunks(model, groups)
        assert [p for chunk in chunks for p in chunk] == params
        assert [i for span in members for i in span] == list(range(len(groups)))
        for chunk, span in zip(chunks, members):
            width = sum(p.numel() for p in chunk)
            assert width == groups[span.stop - 1][1] - groups[span.start][0]  # whole groups, nothing else
            assert len(span) == 1 or 2 * width * 8 <= BUDGET  # several groups only within the budget
        assert len(chunks) >= 3
    chunks = parameter_chunks(model)
    assert [p for chunk in chunks for p in chunk] == params
    assert all(len(chunk) == 1 or 2 * sum(p.numel() for p in chunk) * 8 <= BUDGET for chunk in chunks)


@pytest.mark.parametrize("weighting,state", [("DB_MTL", "EMA gradients"), ("MoCo", "tracked gradients"),
                                             ("ExcessMTL", "squared gradients"), ("MoDo", "three batches")])
def test_a_method_that_needs_the_whole_matrix_is_refused_when_the_trainer_is_built(weighting, state):
    with pytest.raises(MatrixMemoryError) as error:
        make_trainer(weighting, BUDGET)
    message = str(error.value)
    for part in (weighting, "[2, 1140]", "18.24 kB", "4.50 kB", state, "grad_memory_budget", "smaller model",
                 "Gramian path (", "RGB", "UPGrad", "chunked matrix path (GradDrop)"):
        assert part in message, f"{part!r} missing from: {message}"
    make_trainer(weighting, 18240)  # a budget the matrix fits: accepted


def test_an_undeclared_method_is_refused_before_the_matrix_exists():
    """A LibMTL-style custom weighting (no declaration) that calls ``_get_grads`` beyond the budget."""

    class PlainSum(AbsWeighting):
        def backward(self, losses, **kwargs):
            grads = self._get_grads(losses, mode="backward")
            self._backward_new_grads(np.ones(self.task_num), grads=grads)
            return np.ones(self.task_num)

    trainer = make_trainer(PlainSum, BUDGET)  # built: whether it forms G is known only when it asks
    assert trainer.model.gradient_path() == "matrix"

    def whole_matrix(*args, **kwargs):
        raise AssertionError("the matrix was computed")

    trainer.model._compute_grad = whole_matrix
    with pytest.raises(MatrixMemoryError, match=r"PlainSum\] needs the whole \[2, 1140\] matrix"):
        run_steps(trainer, {})
    run_steps(make_trainer(PlainSum, None), {})  # within the budget: trains


def test_methods_without_the_matrix_and_gramian_methods_are_unaffected():
    assert GRADIENT_PATHS == ("matrix", "gramian", "chunked")
    run_steps(make_trainer("EW", 1), {})  # never forms G: any budget
    for name in ("UPGrad", "PCGrad", "RGB"):
        assert make_trainer(name, BUDGET).model.gradient_path() == "gramian"
    assert make_trainer("GradVac", BUDGET).model.gradient_path() == "gramian"  # group type 0 on the Gramian
    chunked = [n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).supports_chunked_matrix]
    assert chunked == ["GradDrop"]
    torch.manual_seed(0)
    rep = Trainer(task_dict(), "GradDrop", "HPS", TinyConvEncoder, decoders(), True, False, {"optim": "sgd", "lr": 0.1},
                  device="cpu", arch_args=arch_args("HPS", TASKS, IMG), grad_memory_budget=1)
    assert rep.model.gradient_path() == "matrix"  # rep_grad: the small representation gradients


def test_a_non_finite_chunk_raises_and_leaves_gradvac_targets_alone():
    """As the matrix path checks G before any update: a later chunk with NaN raises
    ``FloatingPointError`` (the Trainer's non-finite guard then skips or stops) and the
    targets of the groups already processed are not kept."""
    trainer = make_trainer("GradVac", BUDGET, GradVac_group_type=2)
    model = trainer.model
    run_steps(trainer, {"GradVac_group_type": 2})
    before = model.gradvac_group_targets.clone()
    original, calls = model._task_grad_slice, []

    def second_chunk_nan(losses, params):
        block, reached = original(losses, params)
        calls.append(1)
        return (block * float("nan") if len(calls) == 2 else block), reached

    model._task_grad_slice = second_chunk_nan
    x, y = next(iter(loader(4, False)))
    out = model(x.double())
    losses = torch.stack([nn.functional.mse_loss(out[t], y[t].double()) for t in TASKS])
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        model.backward(losses, GradVac_group_type=2)
    assert len(calls) == 2
    torch.testing.assert_close(model.gradvac_group_targets, before, rtol=0, atol=0)


def test_diagnostics_on_the_chunked_path_form_no_matrix(monkeypatch):
    """``--diagnostics`` with a method on the chunked matrix path: the raw MER statistics come
    from the Gramian of parameter chunks; the whole [T, D] matrix is never formed."""
    from LibMTL_rgb.gradient_diagnostics import GradientDiagnostics

    trainer = make_trainer("GradDrop", BUDGET)
    model = trainer.model
    assert model.gradient_path() == "chunked"
    monkeypatch.setattr(AbsWeighting, "_compute_grad", lambda *a, **k: (_ for _ in ()).throw(AssertionError("G formed")))
    diagnostics = GradientDiagnostics(model, {}, every=1)
    x, y = next(iter(loader(4, False)))
    model.train()
    out = model(x.double())
    losses = torch.stack([nn.functional.mse_loss(out[t], y[t].double()) for t in TASKS])
    diagnostics.before_backward(losses)
    model.backward(losses)
    row = diagnostics.after_backward()
    assert row is not None and row["source"] == "raw" and np.isfinite(row["raw_conflict"])
