"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``) that is exact
for every weighting.

Plain ``DistributedDataParallel`` all-reduces the *summed* gradient during ``backward()``; a
gradient-balancing method needs the per-task gradients of the *global* batch. Here every
process

1. replaces its local task losses by their mean over the processes (the value a weighting sees
   is the global-batch loss for equal shards; the gradient still flows to the local losses);
2. computes its local ``[T, D]`` per-task gradients of the shared parameters, which
   :func:`start_task_grad_mean` averages over the processes (a bucketed asynchronous
   all-reduce that overlaps with the task-specific backward pass) *before* the weighting runs;
3. runs the same aggregation on the same numbers, so the shared parameters' new ``.grad`` is
   identical everywhere without another message;
4. averages every other gradient (decoders, gates, a loss weighting's shared gradient, UW's
   log-variances...) with :func:`average_remaining_grads`;
5. reduces the epoch's loss/metric accumulators (:func:`reduce_accumulator`) so that
   ``train_loss_buffer`` (DWA) and the evaluation equal a single-process run.

Randomness a weighting draws (PCGrad's order, RLW's weights, GradDrop's mask) comes from rank
0's generator state, broadcast before each step (:func:`share_rng_state`). Nothing here acts
when ``torch.distributed`` is not initialised: a single process behaves exactly as before.
``docs/distributed.md`` has the commands, the cost model and the limits.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
from itertools import islice
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from LibMTL_rgb.utils import resolve_device

#: Size of one all-reduce message (PyTorch DDP's default bucket size).
BUCKET_BYTES = 25 * 1024 * 1024
#: Environment variables ``torchrun`` sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class CommunicationCounter:
    """Payload bytes this process sent through the all-reduces of this module (benchmarks)."""

    def __init__(self) -> None:
        self.task_grad_bytes = 0
        self.other_bytes = 0

    def reset(self) -> None:
        self.task_grad_bytes = 0
        self.other_bytes = 0

    @property
    def total(self) -> int:
        return self.task_grad_bytes + self.other_bytes


#: Module-wide counter (``benchmarks/distributed.py`` reads it).
COUNTER = CommunicationCounter()


# ------------------------------------------------------------------ process group
def is_active() -> bool:
    """Whether a process group is initialised (then the Trainer trains data-parallel)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def is_main_process() -> bool:
    """Rank 0, or a single process: the one that writes files and prints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_from_env(device: "str | torch.device | None" = None) -> torch.device:
    """This process's device. Under ``torchrun``, also join the process group (NCCL on CUDA,
    gloo on CPU); the device is then ``cuda:LOCAL_RANK`` unless ``device`` says CPU. Otherwise
    ``resolve_device(device)`` and nothing else happens."""
    if not launched_by_torchrun() or is_active():
        return resolve_device(device)
    local_rank = int(os.environ["LOCAL_RANK"])
    wanted = None if device is None else torch.device(device)
    use_cuda = torch.cuda.is_available() and (wanted is None or wanted.type == "cuda")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return device


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    """The ``distributed`` flags of the examples (the launch itself is ``torchrun``'s)."""
    group = parser.add_argument_group("distributed (torchrun; docs/distributed.md)")
    group.add_argument("--sync_bn", action="store_true", default=False,
                       help="convert BatchNorm layers to SyncBatchNorm (statistics over all processes; CUDA only)")
    group.add_argument("--distributed_check", action="store_true", default=False,
                       help="debug: after every step, compare checksums of the parameters, buffers (weighting "
                            "state) and train_loss_buffer across processes and stop at the first difference")


def distributed_kwargs(params: argparse.Namespace) -> dict[str, Any]:
    """The Trainer kwargs of :func:`add_distributed_args`' flags."""
    return {"sync_bn": bool(getattr(params, "sync_bn", False)),
            "distributed_check": bool(getattr(params, "distributed_check", False))}


def teardown() -> None:
    """Leave the process group (no-op when none)."""
    if is_active():
        dist.barrier()
        dist.destroy_process_group()


def silence_non_main_stdout() -> None:
    """Make ``print`` a no-op on ranks other than 0 (``print(..., force=True)`` still prints),
    so a ``torchrun`` log shows each line once."""
    if is_main_process():
        return
    import builtins

    original = builtins.print

    def rank_print(*args: Any, force: bool = False, **kwargs: Any) -> None:
        if force:
            original(*args, **kwargs)

    builtins.print = rank_print


def describe() -> str:
    """``"world size N (backend)"`` for logs."""
    if not is_active():
        return "world size 1 (no process group)"
    return f"world size {world_size()} ({dist.get_backend()})"


# ------------------------------------------------------------------ all-reduce
class PendingMean:
    """Asynchronous all-reduces of the slices of one tensor; :meth:`wait` leaves the mean."""

    def __init__(self, tensor: Optional[Tensor], handles: Sequence[Any] = ()) -> None:
        self.tensor = tensor
        self.handles = list(handles)

    def wait(self) -> Optional[Tensor]:
        for handle in self.handles:
            handle.wait()
        if self.handles:
            self.tensor.div_(world_size())
        self.handles = []
        return self.tensor


def start_mean(tensor: Tensor, task_grads: bool = False) -> PendingMean:
    """Start averaging ``tensor`` in place over the processes, in messages of at most
    ``BUCKET_BYTES`` (several in flight at once); nothing happens without a process group."""
    if not is_active() or tensor.numel() == 0:
        return PendingMean(tensor)
    flat = tensor.view(-1)  # the [T, D] matrix and our flat buffers are contiguous
    step = max(1, BUCKET_BYTES // flat.element_size())
    handles = [dist.all_reduce(flat[begin:begin + step], async_op=True) for begin in range(0, flat.numel(), step)]
    sent = flat.numel() * flat.element_size()
    if task_grads:
        COUNTER.task_grad_bytes += sent
    else:
        COUNTER.other_bytes += sent
    return PendingMean(tensor, handles)


def start_task_grad_mean(model: nn.Module, grads: Tensor) -> PendingMean:
    """Average the ``[T, D]`` per-task gradients of the shared parameters over the processes
    (asynchronously: call ``.wait()`` before using them). Remembered for this step: when the
    weighting then writes the shared ``.grad`` from them (:func:`mark_shared_grads_written`),
    that gradient is the same on every process and is not averaged again."""
    if not is_active():
        return PendingMean(grads)
    model._distributed_task_grads_reduced = True
    return start_mean(grads, task_grads=True)


def mark_shared_grads_written(model: nn.Module) -> None:
    """``AbsWeighting._reset_grad`` wrote the shared ``.grad``: from averaged per-task
    gradients this step, it is identical everywhere (a method that instead backpropagates a
    weighted loss leaves local gradients, which :func:`average_remaining_grads` averages)."""
    if getattr(model, "_distributed_task_grads_reduced", False):
        model._distributed_shared_synced = True


def mean_task_grads(grads: "Tensor | Sequence[Tensor]") -> "Tensor | list[Tensor]":
    """The mean over processes of (a list of) summed representation gradients (``rep_grad``):
    weights computed from them are identical everywhere; the per-sample gradients stay local
    and reach the shared parameters' ``.grad``, which :func:`average_remaining_grads` averages."""
    if not is_active():
        return grads
    if isinstance(grads, Tensor):
        return start_mean(grads.contiguous(), task_grads=True).wait()
    return [start_mean(g.contiguous(), task_grads=True).wait() for g in grads]


def global_losses(losses: Tensor) -> Tensor:
    """``losses`` ([T], local shard) with the value of their mean over the processes and the
    gradient of the local losses. For equal shards and mean losses, the mean of the shards'
    losses is the global-batch loss, and the mean of the local gradients is its gradient."""
    if not is_active():
        return losses
    reduced = start_mean(losses.detach().clone()).wait()
    # (l - l) + g is exactly g in IEEE arithmetic for finite l; d/dl = 1
    return (losses - losses.detach()) + reduced


def average_remaining_grads(model: nn.Module) -> None:
    """Average every trainable parameter's ``.grad`` over the processes, except the shared
    parameters when their per-task gradients were averaged this step (their ``.grad`` is
    already identical). A parameter with a gradient on some process and none on another gets
    zeros where it had none; one without a gradient anywhere keeps ``None``."""
    synced = getattr(model, "_distributed_shared_synced", False)
    model._distributed_shared_synced = model._distributed_task_grads_reduced = False
    if not is_active():
        return
    skip = {id(p) for p in model._share_param_list()} if synced and hasattr(model, "_share_param_list") else set()
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in skip]
    if not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=params[0].device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    COUNTER.other_bytes += has_grad.numel()
    needed = [p for p, flag in zip(params, has_grad.tolist()) if flag]
    for param in needed:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    pending = []
    for bucket in _buckets(needed):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        pending.append((bucket, start_mean(flat)))
    for bucket, mean in pending:
        flat = mean.wait()
        offset = 0
        for param in bucket:
            param.grad.copy_(flat[offset:offset + param.numel()].view_as(param.grad))
            offset += param.numel()


def _buckets(params: Sequence[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    """Consecutive groups of parameters of one dtype and device, about ``BUCKET_BYTES`` each."""
    bucket: list[nn.Parameter] = []
    size = 0
    for param in params:
        nbytes = param.numel() * param.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or param.dtype != bucket[0].dtype or param.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(param)
        size += nbytes
    if bucket:
        yield bucket


def average_norm_statistics(model: nn.Module) -> None:
    """Average the running means and variances of the BatchNorm layers that each process
    updated from its own shard (not SyncBatchNorm, whose statistics are already global), so
    replicas and checkpoints stay identical (DDP instead copies rank 0's buffers)."""
    if not is_active() or world_size() == 1:
        return
    stats = [buffer for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
             for buffer in (module.running_mean, module.running_var) if buffer is not None]
    if not stats:
        return
    with torch.no_grad():
        for bucket in _buckets(stats):
            flat = start_mean(torch.cat([b.reshape(-1) for b in bucket])).wait()
            offset = 0
            for buffer in bucket:
                buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
                offset += buffer.numel()


def broadcast_model(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (replicas start identical)."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def share_rng_state(device: torch.device) -> None:
    """Give every process rank 0's CPU (and current CUDA) generator state, so a weighting's
    random draws (PCGrad's order, RLW's weights, GradDrop's mask) are identical everywhere."""
    if not is_active() or world_size() == 1:
        return
    states = [torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None]
    dist.broadcast_object_list(states, src=0, device=device if dist.get_backend() == "nccl" else None)
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


# ------------------------------------------------------------------ replica checks
def state_digests(model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
    """SHA-1 of the bytes of every parameter, buffer (weighting state included: RGB's EMA and
    step counter, FAMO's logits...) and of ``extra`` arrays (e.g. DWA's ``train_loss_buffer``)."""
    digests = {}
    items = list(model.state_dict().items()) + list((extra or {}).items())
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        else:
            data = np.ascontiguousarray(value).tobytes()
        digests[name] = hashlib.sha1(data).hexdigest()
    return digests


def check_replicas(model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> None:
    """Raise ``RuntimeError`` naming the first tensor whose bytes differ between processes
    (the ``--distributed_check`` debug option; one host copy of the model per call)."""
    if not is_active() or world_size() == 1:
        return
    local = state_digests(model, extra)
    gathered: list[Optional[dict[str, str]]] = [None] * world_size()
    dist.all_gather_object(gathered, local)
    for name, digest in local.items():
        differing = [r for r, other in enumerate(gathered) if other.get(name) != digest]
        if differing:
            raise RuntimeError(f"distributed replicas diverged: {name!r} differs between rank {rank()} and rank(s) {differing}")


# ------------------------------------------------------------------ data
class StridedBatches(Sampler):
    """The batches ``rank, rank + W, rank + 2W, ...`` of a single-process batch sampler: each
    evaluation batch is exactly one batch of the single-process run, none duplicated or dropped
    (ranks may get one batch fewer)."""

    def __init__(self, batch_sampler: Sampler, rank_: int, world: int) -> None:
        self.batch_sampler = batch_sampler
        self.rank = rank_
        self.world = world

    def __iter__(self):
        return islice(iter(self.batch_sampler), self.rank, None, self.world)

    def __len__(self) -> int:
        return max(0, math.ceil((len(self.batch_sampler) - self.rank) / self.world))


def shard_loader(loader: DataLoader, train: bool, seed: int = 0) -> DataLoader:
    """This process's part of ``loader``: for training, a ``DistributedSampler`` (shuffled when
    ``loader`` was; ``--bs`` is per process) with ``drop_last`` as ``loader`` has it; for
    evaluation, :class:`StridedBatches`. Loaders already sharded, and everything without a
    process group, are returned unchanged."""
    if not is_active() or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError("distributed training needs map-style datasets: an IterableDataset cannot be split "
                         "across processes by the Trainer (split it yourself per rank)")
    if isinstance(loader.sampler, DistributedSampler) or isinstance(loader.batch_sampler, StridedBatches):
        return loader
    common = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                  timeout=loader.timeout, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                  multiprocessing_context=loader.multiprocessing_context, persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        common["prefetch_factor"] = loader.prefetch_factor
    if train and loader.batch_size is not None:
        sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler),
                                     seed=seed, drop_last=loader.drop_last)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last, **common)
    batches = loader.batch_sampler if loader.batch_sampler is not None else BatchSampler(loader.sampler, 1, False)
    return DataLoader(loader.dataset, batch_sampler=StridedBatches(batches, rank(), world_size()), **common)


def shard_loaders(dataloaders: Any, train: bool, seed: int = 0) -> Any:
    """:func:`shard_loader` on a loader or on each value of a dict of loaders (``multi_input``)."""
    if isinstance(dataloaders, Mapping):
        return {task: shard_loader(loader, train, seed) for task, loader in dataloaders.items()}
    return shard_loader(dataloaders, train, seed)


def set_epoch(dataloaders: Any, epoch: int) -> None:
    """``DistributedSampler.set_epoch`` on every sharded training loader (a new shuffle each epoch)."""
    loaders = dataloaders.values() if isinstance(dataloaders, Mapping) else [dataloaders]
    for loader in loaders:
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)


def shared_seed() -> int:
    """Rank 0's ``torch.initial_seed()`` (the seed of the training shuffles), on every process."""
    value = [torch.initial_seed() % (2**31)]
    if is_active():
        dist.broadcast_object_list(value, src=0, device=_object_device())
    return int(value[0])


def _object_device() -> Optional[torch.device]:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


# ------------------------------------------------------------------ metrics and losses
def reduce_accumulator(obj: Any, device: Optional[torch.device] = None) -> None:
    """Turn this process's epoch accumulators in a metric or loss object into the global ones,
    in place, on every process.

    The accumulators are the attributes that the object's ``reinit()`` (metrics) or
    ``_reinit()`` (losses) assigns. Lists (LibMTL's ``record`` / ``bs``, per-batch tensors)
    are gathered and put back in single-process batch order (rank ``k mod W`` holds batch
    ``k``, as :class:`StridedBatches` and ``DistributedSampler`` deal them; in rank order when
    the lengths do not fit that layout); numbers and tensors (sums, counts, confusion
    matrices) are summed (``None`` counts as nothing). Cost: one gather per object per epoch."""
    if not is_active():
        return
    names = _accumulator_names(obj)
    local = {name: _to_cpu(getattr(obj, name)) for name in names}
    gathered: list[Optional[dict[str, Any]]] = [None] * world_size()
    dist.all_gather_object(gathered, local)
    for name in names:
        values = [states[name] for states in gathered]
        current = getattr(obj, name)
        target = _device_of(current, device)
        if isinstance(current, list):
            merged = interleave_batches(values)
        else:
            merged = _sum_values(values)
        setattr(obj, name, _to_device(merged, target))


def reduce_meter(meter: Any, device: Optional[torch.device] = None) -> None:
    """:func:`reduce_accumulator` on each task's loss and metric object of a ``PerformanceMeter``
    (each object once, even when tasks share one)."""
    if not is_active():
        return
    seen: set[int] = set()
    for task in meter.task_name:
        for obj in (meter.losses[task], meter.metrics[task]):
            if id(obj) not in seen:
                seen.add(id(obj))
                reduce_accumulator(obj, device)


def interleave_batches(per_rank: Sequence[list]) -> list:
    """Per-rank lists of per-batch records → one list in global batch order (batch ``k`` on
    rank ``k mod W`` at position ``k // W``); concatenated in rank order otherwise."""
    world = len(per_rank)
    total = sum(len(values) for values in per_rank)
    fits = all(len(values) == math.ceil((total - r) / world) for r, values in enumerate(per_rank))
    if not fits:
        return [value for values in per_rank for value in values]
    return [per_rank[k % world][k // world] for k in range(total)]


def _accumulator_names(obj: Any) -> list[str]:
    """Attributes that ``obj``'s ``reinit``/``_reinit`` assigns (or empties), found by running
    it on a shallow copy that records assignments."""
    reset_name = "reinit" if callable(getattr(obj, "reinit", None)) else "_reinit"
    if not callable(getattr(obj, reset_name, None)):
        return []
    assigned: list[str] = []

    class Recorder(type(obj)):  # type: ignore[misc, valid-type]
        def __setattr__(self, name: str, value: Any) -> None:
            if name not in assigned:
                assigned.append(name)
            object.__setattr__(self, name, value)

    probe = object.__new__(Recorder)
    object.__setattr__(probe, "__dict__", {k: list(v) if isinstance(v, list) else v for k, v in vars(obj).items()})
    getattr(Recorder, reset_name)(probe)
    emptied = [k for k, v in vars(obj).items() if isinstance(v, list) and v and not vars(probe).get(k, v)]
    return [name for name in dict.fromkeys(assigned + emptied) if name in vars(obj)]


def _sum_values(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    total = present[0]
    for value in present[1:]:
        total = total + value
    return total


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _to_device(value: Any, device: Optional[torch.device]) -> Any:
    if isinstance(value, Tensor) and device is not None:
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def _device_of(value: Any, default: Optional[torch.device]) -> Optional[torch.device]:
    if isinstance(value, Tensor):
        return value.device
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Tensor):
                return item.device
    return default


# ------------------------------------------------------------------ model
def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``--sync_bn``: BatchNorm → SyncBatchNorm (statistics over the global batch). PyTorch's
    SyncBatchNorm synchronises on GPUs only, so a multi-process CPU run refuses it."""
    if is_active() and world_size() > 1 and device.type == "cpu":
        raise ValueError("--sync_bn needs CUDA: PyTorch's SyncBatchNorm does not synchronise CPU tensors; "
                         "drop --sync_bn on CPU (each process then normalises with its own shard's statistics)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class DistributedRun:
    """What the ``Trainer`` calls at each point of its loop; every method is a no-op (or the
    identity) in a single process. Options (Trainer kwargs / flags): ``sync_bn``,
    ``distributed_check`` (compare replica checksums after every step)."""

    def __init__(self, device: torch.device, sync_bn: bool = False, check: bool = False) -> None:
        self.device = device
        self.sync_bn = sync_bn
        self.check = check
        self.active = is_active()
        self.is_main = is_main_process()
        self._seed: Optional[int] = None

    @classmethod
    def from_kwargs(cls, kwargs: dict, device: torch.device) -> "DistributedRun":
        """Pop ``sync_bn`` and ``distributed_check`` from the Trainer's kwargs."""
        return cls(device, bool(kwargs.pop("sync_bn", False)), bool(kwargs.pop("distributed_check", False)))

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm when asked; rank 0's weights everywhere; one log line with the world size."""
        if self.sync_bn:
            model = convert_sync_batchnorm(model, self.device)
        if self.active:
            broadcast_model(model)
            if self.is_main:
                print(f"Distributed data parallel: {describe()}; per-task gradients averaged before the weighting",
                      flush=True)
        return model

    def shard(self, dataloaders: Any, train: bool) -> Any:
        if not self.active:
            return dataloaders
        if train and self._seed is None:
            self._seed = shared_seed()
        return shard_loaders(dataloaders, train, self._seed or 0)

    def begin_epoch(self, dataloaders: Any, epoch: int) -> None:
        if self.active:
            set_epoch(dataloaders, epoch)

    def before_backward(self, losses: Tensor) -> Tensor:
        """Global loss values for the weighting; rank 0's generator state everywhere."""
        if not self.active:
            return losses
        share_rng_state(self.device)
        return global_losses(losses)

    def after_backward(self, model: nn.Module) -> None:
        if self.active:
            average_remaining_grads(model)

    def after_step(self, model: nn.Module) -> None:
        if self.active:
            average_norm_statistics(model)
        if self.active and self.check:
            check_replicas(model, {"train_loss_buffer": getattr(model, "train_loss_buffer", None)})

    def reduce_meter(self, meter: Any) -> None:
        if self.active:
            reduce_meter(meter, self.device)
