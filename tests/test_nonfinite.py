"""Non-finite losses and gradients stop every weighting at the first bad batch, naming the
task, epoch and batch, with the last finished epoch's checkpoints intact; ``nonfinite='skip'``
skips such batches and counts them."""
import math
import re

import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer
from LibMTL_rgb.loss import AbsLoss
from LibMTL_rgb.nonfinite import NonFiniteError
from LibMTL_rgb.registry import WEIGHTINGS

T = 3
BATCHES = 4  # 128 samples / 32


class PoisonedLoader:
    """The synthetic training loader with task ``task``'s labels set to NaN in one batch."""

    def __init__(self, loader, epoch: int, batch: int, task: str = "t1") -> None:
        self.loader, self.target, self.task, self.seen = loader, epoch * BATCHES + batch, task, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            if self.seen == self.target:
                y = dict(y, **{self.task: torch.full_like(y[self.task], math.nan)})
            self.seen += 1
            yield x, y


class ZeroSqrtLoss(AbsLoss):
    """sqrt(0 · MSE): the loss is 0 (finite), its gradient NaN (0 · ∞)."""

    def compute_loss(self, pred, gt):
        return torch.sqrt(((pred - gt) ** 2).mean() * 0)


def make_trainer(weighting, save_path=None, **kwargs):
    torch.manual_seed(0)
    return Trainer(synthetic.task_dict(T), weighting, "HPS", synthetic.encoder_class, synthetic.decoders(T),
                   False, False, {"optim": "adam", "lr": 1e-2}, save_path=save_path, device="cpu", **kwargs)


@pytest.mark.parametrize("weighting", WEIGHTINGS.names())
def test_every_weighting_stops_at_a_nan_loss_and_keeps_the_last_good_checkpoint(weighting, tmp_path):
    trainer = make_trainer(weighting, save_path=str(tmp_path))
    train, test = synthetic.loaders(T)
    # the poisoned loader batch: epoch 1, batch 2 for one batch a step; MoDo/SDMGrad take three
    # batches a step and the bilevel methods a meta batch too, so it comes in another step
    samples = int(getattr(trainer.model, "loss_samples_per_step", 1))
    exact = samples == 1 and not getattr(trainer.model, "bilevel", False)
    bilevel = getattr(trainer.model, "bilevel", False)  # its meta batches: one more pass, one batch ahead
    expected = r"non-finite loss of task 't1' \(nan\) at epoch 1, batch " + ("2" if exact else r"\d+")
    poisoned_pass = samples + 1 if samples > 1 else (3 if bilevel else 1)
    with pytest.raises(NonFiniteError, match=expected):
        trainer.train(PoisonedLoader(train, epoch=poisoned_pass, batch=2), test, epochs=3)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert last["epoch"] == 0
    for name, value in [*last["model"].items(), *torch.load(tmp_path / "best.pt").items()]:
        assert torch.isfinite(value.float()).all(), name
    for value in trainer.model.parameters():  # the bad batch updated nothing
        assert torch.isfinite(value).all()


@pytest.mark.parametrize("weighting, task", [("EW", "t2"), ("DWA", "t2"), ("UW", "t2"), ("RGB", None), ("MGDA", None)])
def test_a_nan_gradient_with_finite_losses_stops_before_the_update(weighting, task):
    """Loss-based weightings: the task whose head gets the NaN is named. Gradient-based ones
    stop in their per-task gradients, where a 0·∞ inside one loss reaches every row (each
    row's backward runs through the stacked losses with a zero cotangent, 0/0 = NaN): they
    name the first task."""
    task_dict = synthetic.task_dict(T)
    task_dict["t2"]["loss_fn"] = ZeroSqrtLoss()
    torch.manual_seed(0)
    trainer = Trainer(task_dict, weighting, "HPS", synthetic.encoder_class, synthetic.decoders(T), False, False,
                      {"optim": "sgd", "lr": 1e-2}, device="cpu")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    train, test = synthetic.loaders(T)
    named = f"'{task}'" if task else "'t[0-2]'"
    with pytest.raises(NonFiniteError, match="non-finite gradient.* at epoch 0, batch 0") as info:
        trainer.train(train, test, epochs=1)
    assert re.search(rf"task {named}", str(info.value))
    for old, new in zip(before, trainer.model.parameters()):
        assert torch.equal(old, new)


@pytest.mark.parametrize("weighting", ["EW", "DWA", "RGB"])
def test_skip_mode_skips_and_counts_the_bad_batches(weighting, capsys):
    trainer = make_trainer(weighting, nonfinite="skip")
    train, test = synthetic.loaders(T)
    trainer.train(PoisonedLoader(train, epoch=0, batch=1), test, epochs=3)
    assert trainer.nonfinite.skipped == 1
    out = capsys.readouterr().out
    assert "epoch 0: skipped 1 batch(es)" in out and "Skipped 1 training batch(es)" in out
    assert np.isfinite(trainer.model.train_loss_buffer).all()  # the skipped batch is not in the averages
    for value in trainer.model.state_dict().values():
        assert torch.isfinite(value.float()).all()


def test_nonfinite_mode_is_checked():
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        make_trainer("EW", nonfinite="ignore")


def test_finite_gradients_whose_sum_overflows_are_not_flagged():
    from LibMTL_rgb.nonfinite import NonFiniteGuard

    model = torch.nn.ModuleDict({"t0": torch.nn.Linear(4, 1)})
    model["t0"].weight.grad = torch.full((1, 4), 3e38)  # each finite, the sum is inf in float32
    model["t0"].bias.grad = torch.zeros(1)
    guard = NonFiniteGuard()
    assert guard.gradients_problem(model, ["t0"]) is None
    model["t0"].bias.grad = torch.tensor([math.inf])
    assert guard.gradients_problem(model, ["t0"]) == "non-finite gradient of task 't0' (parameter t0.bias)"


def test_parameters_that_overflow_stop_the_run_before_their_checkpoint(tmp_path):
    trainer = make_trainer("EW", save_path=str(tmp_path))
    train, test = synthetic.loaders(T)
    trainer.train(train, test, epochs=1)
    with torch.no_grad():  # as if the last optimiser step of epoch 1 overflowed
        trainer.model.decoders["t0"].bias.fill_(math.inf)
    with pytest.raises(NonFiniteError, match=r"parameter decoders.t0.bias is non-finite after epoch 1"):
        trainer._call("on_epoch_end", 1)  # the run directory commits epoch 1
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 0
