"""The Gramian path (``grad_method='gramian'``: no ``[T, D]`` matrix) against the matrix path.

Every method with ``supports_gramian`` trains the same float64 model on the same batches for
three steps on both paths (stateful methods carry their state across the steps); the
parameters (shared and task-specific) and the returned weights agree to 1e-10. Architectures
with shared parameters outside a module (Cross-stitch, LTB) and modules called once per task
(PLE, MTAN) are among them.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb import Trainer
from LibMTL_rgb.registry import WEIGHTINGS
from test_arch_weighting_matrix import TASKS, TinyConvEncoder, decoders, loader, task_dict
from test_architectures import arch_args

GRAMIAN_METHODS = [name for name in WEIGHTINGS.names() if WEIGHTINGS.get(name).supports_gramian]
IMG = (3, 8, 8)
STEPS = 3
#: Nash-MTL's weights come from an iterative cvxpy/ECOS solve (tolerance ~1e-8): two Gramians
#: equal to rounding give weights equal to the solver's tolerance, not to 1e-10.
TOLERANCE = {"Nash_MTL": 1e-7}


pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def make_trainer(arch: str, weighting: str, grad_method: str, computer: str = "engine", **weight_args) -> Trainer:
    torch.manual_seed(0)
    return Trainer(task_dict(), weighting, arch, TinyConvEncoder, decoders(), False, False,
                   {"optim": "sgd", "lr": 0.1}, device="cpu", arch_args=arch_args(arch, TASKS, IMG),
                   grad_method=grad_method, gramian_computer=computer, weight_args=weight_args)


def run_steps(trainer: Trainer, weighting_kwargs: dict) -> tuple[list, list]:
    model = trainer.model
    model.train()
    torch.manual_seed(1)  # the same draws in both runs (LTB samples its branching in the forward pass)
    trainer.initial_params = [p.detach().clone() for p in model.parameters()]
    weights = []
    for x, y in list(loader(4 * STEPS, False))[:STEPS]:
        trainer.optimizer.zero_grad(set_to_none=True)
        out = model(x.double())
        losses = torch.stack([nn.functional.mse_loss(out[t], y[t].double()) for t in TASKS])
        weights.append(np.asarray(model.backward(losses, **weighting_kwargs), dtype=np.float64))
        trainer.optimizer.step()
    return weights, [p.detach().clone() for p in model.parameters()]


def assert_paths_agree(arch: str, weighting: str, **weight_args) -> None:
    matrix = make_trainer(arch, weighting, "loop", **weight_args)
    gramian = make_trainer(arch, weighting, "gramian", **weight_args)
    assert gramian.model.gradient_path() == "gramian" and matrix.model.gradient_path() == "matrix"
    weights_m, params_m = run_steps(matrix, weight_args)
    weights_g, params_g = run_steps(gramian, weight_args)
    for step, (a, b) in enumerate(zip(weights_m, weights_g)):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOLERANCE.get(weighting, 1e-10), err_msg=f"{weighting} on {arch}: weights of step {step}")
    worst = max(float((a - b).abs().max()) for a, b in zip(params_m, params_g))
    moved = max(float((a - b).abs().max()) for a, b in zip(params_m, matrix.initial_params))
    assert moved > 1e-4, "the steps did not move the parameters"
    assert worst < TOLERANCE.get(weighting, 1e-10), f"{weighting} on {arch}: parameters differ by {worst:.3g} after {STEPS} steps"


@pytest.mark.parametrize("weighting", GRAMIAN_METHODS)
def test_every_gramian_method_matches_the_matrix_path_on_hps(weighting):
    assert_paths_agree("HPS", weighting)


@pytest.mark.parametrize("arch", ["MTAN", "PLE", "Cross_stitch", "LTB", "MMoE", "CGC", "DSelect_k"])
@pytest.mark.parametrize("weighting", ["RGB", "UPGrad"])
def test_gramian_path_matches_on_every_architecture(arch, weighting):
    assert_paths_agree(arch, weighting)


def test_multi_input_and_a_step_without_backward_stay_exact():
    """Per-task forward passes (``multi_input``) arm once per step, and a forward pass that never
    reached ``backward`` (a step the non-finite guard skipped) leaves nothing behind: no
    fallback warning, the same parameters as the matrix path."""
    import warnings

    from LibMTL_rgb.weighting.abstract_weighting import GramianFallbackWarning

    results = []
    for grad_method in ("loop", "gramian"):
        torch.manual_seed(0)
        trainer = Trainer(task_dict(), "RGB", "HPS", TinyConvEncoder, decoders(), False, True, {"optim": "sgd", "lr": 0.1},
                          device="cpu", arch_args=arch_args("HPS", TASKS, IMG), grad_method=grad_method)
        model = trainer.model
        model.train()
        batches = {t: list(batch) for t, batch in loader(12, True).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("error", GramianFallbackWarning)
            for step in range(3):
                trainer.optimizer.zero_grad(set_to_none=True)
                losses = []
                for t in TASKS:
                    x, y = batches[t][step]
                    losses.append(nn.functional.mse_loss(model(x.double(), t)[t], y.double()))
                if step == 1:
                    continue  # skipped: no backward for this step's forward passes
                model.backward(torch.stack(losses))
                trainer.optimizer.step()
        results.append([p.detach().clone() for p in model.parameters()])
    worst = max(float((a - b).abs().max()) for a, b in zip(*results))
    assert worst < 1e-10


def test_a_matrix_over_the_budget_switches_gramian_methods_and_says_so(capsys):
    trainer = Trainer(task_dict(), "RGB", "HPS", TinyConvEncoder, decoders(), False, False, {"optim": "sgd", "lr": 0.1},
                      device="cpu", arch_args=arch_args("HPS", TASKS, IMG), grad_memory_budget=100)
    assert trainer.model.gradient_path() == "gramian"
    printed = capsys.readouterr().out
    assert "Gradient path: gramian" in printed and "over the budget" in printed
    roomy = Trainer(task_dict(), "RGB", "HPS", TinyConvEncoder, decoders(), False, False, {"optim": "sgd", "lr": 0.1},
                    device="cpu", arch_args=arch_args("HPS", TASKS, IMG), grad_memory_budget=10**9)
    assert roomy.model.gradient_path() == "matrix"


def test_gramian_for_a_method_that_needs_the_matrix_is_refused_before_any_work():
    with pytest.raises(ValueError, match="needs the per-task gradients themselves"):
        make_trainer("HPS", "GradDrop", "gramian")


@pytest.mark.parametrize("weighting", ["MGDA", "UPGrad"])
def test_rep_grad_keeps_its_small_matrix_on_every_grad_method(weighting):
    """With ``rep_grad`` the method runs on the [T, rep] representation gradients, which are
    small: ``grad_method='gramian'`` keeps that path, with the same results."""
    runs = []
    for grad_method in ("loop", "gramian"):
        torch.manual_seed(0)
        trainer = Trainer(task_dict(), weighting, "HPS", TinyConvEncoder, decoders(), True, False, {"optim": "sgd", "lr": 0.1},
                          device="cpu", arch_args=arch_args("HPS", TASKS, IMG), grad_method=grad_method)
        assert trainer.model.gradient_path() == "matrix"
        runs.append(run_steps(trainer, {}))
    (weights_a, params_a), (weights_b, params_b) = runs
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


def test_amp_runs_on_the_gramian_path():
    """bfloat16 autocast (``amp``): the Gramian path follows the cast losses, as the matrix path;
    they differ by bfloat16 rounding (the weighted backward pass rounds ``Σ w_t ∇L_t`` in
    bfloat16, the matrix path rounds each ``∇L_t``), about 1e-3 of a step here."""
    torch.set_default_dtype(torch.float32)  # autocast casts float32 to bfloat16
    runs = []
    for grad_method in ("loop", "gramian"):
        torch.manual_seed(0)
        trainer = Trainer(task_dict(), "RGB", "HPS", TinyConvEncoder, decoders(), False, False, {"optim": "sgd", "lr": 0.1},
                          device="cpu", arch_args=arch_args("HPS", TASKS, IMG), grad_method=grad_method, amp=True)
        trainer.train(loader(8, False), loader(4, False), epochs=1)
        runs.append([p.detach().clone() for p in trainer.model.parameters()])
    worst = max(float((a - b).abs().max()) for a, b in zip(*runs))
    assert runs[0][0].dtype == torch.float32 and worst < 5e-3, worst


def test_parameter_chunks_give_the_same_steps_where_the_engine_cannot_follow(monkeypatch):
    """Where the engine cannot follow a forward pass, ``G Gᵀ`` and RGB's ``G d`` come from slices
    of ``G`` within the memory budget (several chunks here): the same steps, with a warning."""
    from LibMTL_rgb.weighting import task_gramian
    from LibMTL_rgb.weighting.abstract_weighting import GramianFallbackWarning

    matrix = make_trainer("MTAN", "RGB", "loop")
    weights_m, params_m = run_steps(matrix, {})

    def cannot_follow(self, losses, vector=None):
        raise RuntimeError("a module's forward pass without a backward pass")

    monkeypatch.setattr(task_gramian.GramianEngine, "gramian", cannot_follow)
    gramian = make_trainer("MTAN", "RGB", "gramian")
    gramian.model.gramian_computer = "engine"
    gramian.model.grad_memory_budget = 2 * 8 * 300  # [2, 300] float64: several chunks
    chunks = task_gramian.parameter_chunks(gramian.model._share_param_list(), 2, torch.float64, gramian.model.grad_memory_budget)
    assert len(chunks) > 3
    with pytest.warns(GramianFallbackWarning):
        weights_g, params_g = run_steps(gramian, {})
    assert max(float((a - b).abs().max()) for a, b in zip(params_m, params_g)) < 1e-10


def test_no_hooks_stay_behind_a_step_and_a_model_copies():
    """The engine's module hooks live from a step's forward pass to its backward: afterwards the
    model is as before (no hooks, nothing kept alive), and it deep-copies."""
    import copy

    trainer = make_trainer("HPS", "RGB", "gramian")
    run_steps(trainer, {})
    model = trainer.model
    assert all(len(module._forward_hooks) == 0 for module in model.encoder.modules())
    x, _ = next(iter(loader(4, False)))
    model(x.double())
    assert any(len(module._forward_hooks) > 0 for module in model.encoder.modules())  # armed for this step
    model.eval()
    with torch.no_grad():
        model(x.double())
    clone = copy.deepcopy(model)
    assert not clone._gramian_engine().armed
    assert all(torch.equal(a, b) for a, b in zip(clone.parameters(), model.parameters()))


@pytest.mark.parametrize("arch", ["HPS", "Cross_stitch", "MTAN"])
def test_parameter_chunks_within_the_budget_are_exact(arch):
    """``gramian_computer='auto'`` (chunks): ``G Gᵀ`` and ``G d`` from parameter chunks of G within
    the budget, no engine hooks, the same steps as the matrix path."""
    import warnings

    from LibMTL_rgb.weighting.abstract_weighting import GramianFallbackWarning

    weights_m, params_m = run_steps(make_trainer(arch, "RGB", "loop"), {})
    gramian = make_trainer(arch, "RGB", "gramian", computer="auto")
    gramian.model.grad_memory_budget = 2 * 8 * 100
    assert gramian.model.gramian_computer_choice() == "chunks"
    with warnings.catch_warnings():
        warnings.simplefilter("error", GramianFallbackWarning)
        weights_g, params_g = run_steps(gramian, {})
    assert not gramian.model._gramian_engine().armed
    assert all(len(module._forward_hooks) == 0 for module in gramian.model.modules())
    assert max(float((a - b).abs().max()) for a, b in zip(params_m, params_g)) < 1e-10
