"""The runs that ``test_distributed.py`` compares: tiny float64 Trainer runs, once in the test
process (no process group: the single-process reference on the whole batch) and once in each
of 2 gloo processes (``spawn``), each on half of every batch.

Shard layout: one process trains with ``bs=8``; two processes with ``bs=4`` each and the
Trainer's ``DistributedSampler`` (no shuffle), so rank ``r`` gets samples ``2i + r`` and
step ``k`` of both ranks together covers exactly the 8 samples of the single-process step
``k``. The evaluation set (18 samples, batches of 4: the last one holds 2) is dealt by
batches, 3 to rank 0 and 2 to rank 1.

Each process also records what it averaged as per-task gradients (shapes and bytes): the
Gramian path's chunks of ``G`` and combined rows against the matrix path's ``[T, D]``.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from LibMTL_rgb import Trainer, distributed
from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import AbsMetric, L1Metric
from LibMTL_rgb.weighting import AbsWeighting, task_gramian

TASKS = ("a", "b", "c")
IN_FEATURES = 5
TRAIN_SIZE, TEST_SIZE = 24, 18
SINGLE_BS, WORLD = 8, 2
EVAL_BS = 4
EPOCHS = 4  # DWA's weights differ from ones from the third epoch on
SEED = 3


class GradsThenLoss(AbsWeighting):
    """A LibMTL-style custom weighting (not registered): weights from the per-task gradients
    (``_get_grads``), then one backward pass of the weighted loss instead of ``_reset_grad``."""

    def backward(self, losses, **kwargs):
        grads = self._get_grads(losses, mode="autograd")
        weights = torch.softmax(-grads.norm(dim=1), dim=0).detach()
        (weights * losses).sum().backward()
        return weights.numpy()


@dataclass(frozen=True)
class Case:
    weighting: "str | type"
    arch: str = "HPS"
    weight_args: dict = field(default_factory=dict)
    rep_grad: bool = False
    multi_input: bool = False
    #: ``"gramian"``: the Gramian path (G Gᵀ from parameter chunks of G averaged over the processes)
    grad_method: str = "loop"
    grad_memory_budget: Optional[int] = None

    @property
    def name(self) -> str:
        options = "-".join(f"{k}={v}" for k, v in sorted(self.weight_args.items()))
        return (f"{getattr(self.weighting, '__name__', self.weighting)}-{self.arch}" + (f"-{options}" if options else "")
                + ("-rep" if self.rep_grad else "") + ("-multi" if self.multi_input else "")
                + ("" if self.grad_method == "loop" else f"-{self.grad_method}")
                + ("" if self.grad_memory_budget is None else f"-budget={self.grad_memory_budget}"))


REQUIRED = [
    Case("EW"), Case("RGB", weight_args={"rgb_steps": 5}),
    Case("RGB", weight_args={"rgb_adaptive": True, "rgb_min_steps": 2, "rgb_max_steps": 9}),
    Case("MGDA"), Case("PCGrad"), Case("DWA"), Case("FAMO"),
]
CASES = REQUIRED + [Case(c.weighting, "MMoE", c.weight_args) for c in REQUIRED] + [
    Case("UW"), Case("CAGrad"), Case("RLW"), Case("GradVac"), Case("GradNorm"),
    Case("EW", rep_grad=True), Case("MGDA", rep_grad=True), Case("FAMO", "MMoE", rep_grad=True),
    Case(GradsThenLoss), Case("RGB", multi_input=True), Case("FAMO", multi_input=True),
]
#: The Gramian path: ``G Gᵀ`` and RGB's ``G d`` of the global batch from ``[T, D_c]`` chunks of
#: ``G`` averaged over the processes (a budget of 1 byte: one chunk per shared parameter), the
#: combined rows averaged; the single-process references use the autogram engine instead.
GRAMIAN_CASES = [
    Case("RGB", weight_args={"rgb_steps": 5}, grad_method="gramian"),
    Case("RGB", weight_args={"rgb_steps": 5}, grad_method="gramian", grad_memory_budget=1),
    Case("UPGrad", grad_method="gramian"), Case("MGDA", "MMoE", grad_method="gramian", grad_memory_budget=1),
    Case("RGB", multi_input=True, grad_method="gramian"),
]
CASES += GRAMIAN_CASES
#: The case whose checkpoints the resume/cross-loading tests use.
CHECKPOINT_CASE = CASES[2]
#: RGB with the default memory budget (``grad_method='auto'``) where rank 0 finds the [T, D]
#: matrix over its budget and rank 1 does not (``unequal_budgets_case``).
UNEQUAL_BUDGETS_CASE = Case("RGB", weight_args={"rgb_steps": 5}, grad_method="auto")


class RegressionData(Dataset):
    """Three related linear-plus-tanh targets of 5 features (in the default dtype)."""

    def __init__(self, size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(size, IN_FEATURES, generator=gen, dtype=torch.float64)
        coef = torch.randn(IN_FEATURES, len(TASKS), generator=gen, dtype=torch.float64)
        y = torch.tanh(x @ coef) + 0.1 * torch.randn(size, len(TASKS), generator=gen, dtype=torch.float64)
        self.x, self.y = x.to(torch.get_default_dtype()), y.to(torch.get_default_dtype())

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], {t: self.y[i, k:k + 1] for k, t in enumerate(TASKS)}


class RecordL1Metric(AbsMetric):
    """A LibMTL-style metric: per-batch records in Python lists (``record``, ``bs``)."""

    def __init__(self) -> None:
        super().__init__()
        self.record: list[float] = []

    def update_fun(self, pred, gt) -> None:
        self.record.append(float((pred.detach() - gt).abs().mean()))
        self.bs.append(pred.shape[0])

    def score_fun(self) -> list[float]:
        return [float(np.dot(self.record, self.bs) / np.sum(self.bs)), float(self.record[-1])]

    def reinit(self) -> None:
        super().reinit()
        self.record = []


class TaskView(Dataset):
    """One task's (input, target) pairs (``multi_input``: one loader per task)."""

    def __init__(self, data: RegressionData, task: str) -> None:
        self.data, self.task = data, task

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x, y = self.data[i]
        return x, y[self.task]


def task_dict() -> dict:
    tasks = {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in TASKS}
    # the last task also reports LibMTL-style list records (mean, and the last batch's value)
    tasks["c"] = {"metrics": ["mae", "last_batch"], "metrics_fn": RecordL1Metric(), "loss_fn": MSELoss(), "weight": [0, 0]}
    return tasks


def encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(IN_FEATURES, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh())


def build(case: Case, save_path: Optional[str] = None, trainer_class: type = Trainer, device: str = "cpu",
          **extra) -> Trainer:
    """A float64 Trainer for ``case`` (same initial weights for the same seed)."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    extra.setdefault("seed", SEED)  # weightings' draws from the stream every rank shares (RLW, PCGrad...)
    arch_args = {"img_size": [IN_FEATURES], "num_experts": [2]} if case.arch == "MMoE" else {}
    decoders = nn.ModuleDict({t: nn.Linear(6, 1) for t in TASKS})
    return trainer_class(
        task_dict(), case.weighting, case.arch, encoder, decoders, case.rep_grad, case.multi_input,
        {"optim": "sgd", "lr": 0.05}, save_path=save_path, device=device, grad_method=case.grad_method,
        grad_memory_budget=case.grad_memory_budget, weight_args=dict(case.weight_args), arch_args=arch_args, **extra,
    )


def loaders(batch_size: int, multi_input: bool = False):
    train_data, test_data = RegressionData(TRAIN_SIZE, 0), RegressionData(TEST_SIZE, 1)
    if multi_input:
        return ({t: DataLoader(TaskView(train_data, t), batch_size=batch_size, shuffle=False) for t in TASKS},
                {t: DataLoader(TaskView(test_data, t), batch_size=EVAL_BS, shuffle=False) for t in TASKS})
    train = DataLoader(train_data, batch_size=batch_size, shuffle=False)
    test = DataLoader(test_data, batch_size=EVAL_BS, shuffle=False)
    return train, test


def outcome(trainer: Trainer) -> dict[str, Any]:
    """What must agree between runs: parameters, buffers (weighting state), the loss buffer,
    the task weights of every step and every row of the history without its timings."""
    history = [{k: v for k, v in row.items() if k != "time"} for row in trainer.meter.history]
    return {
        "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "train_loss_buffer": np.array(trainer.model.train_loss_buffer),
        "batch_weight": np.array(trainer.batch_weight),
        "history": history,
    }


def train_case(case: Case, batch_size: int, save_path: Optional[str] = None, **extra) -> dict[str, Any]:
    trainer = build(case, save_path, **extra)
    train, test = loaders(batch_size, case.multi_input)
    trainer.train(train, test, EPOCHS, return_weight=True)
    return outcome(trainer)


class Interrupted(Exception):
    """Raised on every rank after epoch 1 is saved (a crash between epochs)."""


class InterruptAfterEpoch1(Callback):
    """Raises :class:`Interrupted` at the end of epoch 1 (after the run directory saved it)."""

    def on_epoch_end(self, trainer, epoch: int) -> None:
        if epoch == 1:
            raise Interrupted


def resumed_case(case: Case, batch_size: int, save_path: str) -> dict[str, Any]:
    """Train ``case`` until it is interrupted after epoch 1, then resume from ``last.pt`` in a
    new Trainer and finish."""
    train, test = loaders(batch_size)
    try:
        build(case, save_path, callbacks=[InterruptAfterEpoch1()]).train(train, test, EPOCHS)
    except Interrupted:
        pass
    trainer = build(case)
    trainer.resume(save_path)
    trainer.train(train, test, EPOCHS, return_weight=True)
    return outcome(trainer)


def worker(rank: int, world: int, init_file: str, out_dir: str, reference_checkpoint: str) -> None:
    """One of the ``world`` processes: every case, the resume paths and the debug check."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    # a collective mismatch (a regression) fails the test in minutes, not after gloo's 30
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    try:
        results: dict[str, Any] = {"messages": {}, "task_grad_bytes": {}, "largest_task_grad_message": {}}
        for case in CASES:
            save = os.path.join(out_dir, "run-" + case.name) if case == CHECKPOINT_CASE else None
            distributed.COUNTER.reset()
            with recorded_task_grad_messages() as shapes:
                results[case.name] = train_case(case, SINGLE_BS // world, save)
            results["messages"][case.name] = shapes
            results["task_grad_bytes"][case.name] = distributed.COUNTER.task_grad_bytes
            results["largest_task_grad_message"][case.name] = distributed.COUNTER.largest_task_grad_message
        results["unequal_budgets"] = unequal_budgets_case(rank)
        results["resumed"] = resumed_case(CHECKPOINT_CASE, SINGLE_BS // world, os.path.join(out_dir, "interrupted"))
        # a single-process checkpoint loaded by every process
        trainer = build(CHECKPOINT_CASE)
        trainer.resume(reference_checkpoint)
        results["loaded_single"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        results["check_same"] = _check_outcome(trainer)
        with torch.no_grad():
            if rank == 1:
                next(trainer.model.parameters()).add_(1e-12)
        results["check_perturbed"] = _check_outcome(trainer)
        try:
            build(Case("EW"), sync_bn=True)
            results["sync_bn_cpu"] = "accepted"
        except ValueError as err:
            results["sync_bn_cpu"] = str(err)
        results["amp"] = amp_case(world)
        results["partly_reached"] = {weighting: partly_reached_case(weighting) for weighting in ("MGDA", "EW")}
        results["partly_reached"]["RGB-gramian"] = partly_reached_case("RGB", "gramian")
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def recorded_task_grad_messages() -> Iterator[list[tuple[int, ...]]]:
    """The shapes of the tensors averaged by ``distributed.start_task_grad_mean`` meanwhile
    (the matrix path's [T, D]; the Gramian path's [T, D_c] chunks and [k, D] rows)."""
    shapes: list[tuple[int, ...]] = []
    original = distributed.start_task_grad_mean

    def recording(model, grads):
        shapes.append(tuple(grads.shape))
        return original(model, grads)

    distributed.start_task_grad_mean = recording
    try:
        yield shapes
    finally:
        distributed.start_task_grad_mean = original


def unequal_budgets_case(rank: int) -> dict[str, Any]:
    """``UNEQUAL_BUDGETS_CASE`` with the default budget (a share of the free memory, read by
    each process) 1 byte on rank 0 and 1 TB on rank 1: the processes must still take the same
    gradient path and cut the same parameter chunks (their all-reduces must match)."""
    original = task_gramian.default_memory_budget
    task_gramian.default_memory_budget = lambda device: 1 if rank == 0 else 1 << 40
    try:
        trainer = build(UNEQUAL_BUDGETS_CASE)
        train, test = loaders(SINGLE_BS // WORLD)
        with recorded_task_grad_messages() as shapes:
            trainer.train(train, test, EPOCHS, return_weight=True)
        return {**outcome(trainer), "path": trainer.model.gradient_path(), "messages": shapes}
    finally:
        task_gramian.default_memory_budget = original


class RankZeroBranch(nn.Module):
    """An encoder with a shared layer that only rank 0's forward passes reach (as a
    data-dependent branch or a mixture-of-experts route reaches it on some ranks only)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = encoder()
        self.branch = nn.Linear(6, 6)

    def forward(self, x):
        h = self.body(x)
        return h + self.branch(h) if distributed.rank() == 0 else h


def partly_reached_case(weighting: str, grad_method: str = "loop") -> str:
    """Two epochs with the replicas compared after every step: 'identical' or the difference."""
    torch.manual_seed(SEED)
    trainer = Trainer(task_dict(), weighting, "HPS", RankZeroBranch, nn.ModuleDict({t: nn.Linear(6, 1) for t in TASKS}),
                      False, False, {"optim": "adam", "lr": 0.05}, device="cpu", grad_method=grad_method,
                      distributed_check=True, seed=SEED)
    train, test = loaders(SINGLE_BS // 2)
    before = trainer.model.encoder.branch.weight.detach().clone()
    try:
        trainer.train(train, test, 2)
    except RuntimeError as err:
        return str(err)
    return "identical" if not torch.equal(before, trainer.model.encoder.branch.weight) else "branch not trained"


AMP_CASE = Case("RGB", weight_args={"rgb_steps": 5})


def amp_case(world: int) -> dict[str, Any]:
    """float32 model, bfloat16 autocast, replicas compared after every step (``distributed_check``)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        return train_case(AMP_CASE, SINGLE_BS // world, amp=True, distributed_check=True)
    finally:
        torch.set_default_dtype(previous)


def nccl_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    """World size 1 on CUDA with NCCL: the checkpoint case, float64, and one SyncBatchNorm step."""
    torch.set_default_dtype(torch.float64)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        trainer = build(CHECKPOINT_CASE, device=f"cuda:{rank}")
        train, test = loaders(SINGLE_BS)
        trainer.train(train, test, EPOCHS, return_weight=True)
        result = outcome(trainer)
        result["state"] = {k: v.cpu() for k, v in result["state"].items()}
        # the Gramian path on NCCL: chunks of G and rows all-reduced on the GPU, the agreed
        # default budget (min_over_processes) read from CUDA's free memory
        gramian = build(GRAMIAN_CASES[0], device=f"cuda:{rank}")
        gramian.train(train, test, EPOCHS, return_weight=True)
        result["gramian"] = outcome(gramian)
        result["gramian"]["state"] = {k: v.cpu() for k, v in result["gramian"]["state"].items()}
        with_bn = Trainer(task_dict(), "RGB", "HPS", lambda: nn.Sequential(nn.Linear(IN_FEATURES, 6), nn.BatchNorm1d(6), nn.Tanh()),
                          nn.ModuleDict({t: nn.Linear(6, 1) for t in TASKS}), False, False, {"optim": "sgd", "lr": 0.05},
                          device=f"cuda:{rank}", sync_bn=True)
        with_bn.train(train, test, 1)
        result["sync_bn_layers"] = sum(isinstance(m, nn.SyncBatchNorm) for m in with_bn.model.modules())
        torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


def _check_outcome(trainer: Trainer) -> str:
    try:
        distributed.check_replicas(trainer.model)
    except RuntimeError as err:
        return str(err)
    return "identical"
