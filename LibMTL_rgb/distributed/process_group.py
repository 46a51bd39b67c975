"""Joining and leaving the process group (``torchrun``), the rank, the world size, the
examples' flags, and printing on rank 0 only."""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Optional

import torch
import torch.distributed as dist

from LibMTL_rgb.utils import resolve_device


#: Environment variables ``torchrun`` sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_active() -> bool:
    """Whether a process group is initialised (then the Trainer trains data-parallel)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the run (1 without an initialised process group)."""
    return dist.get_world_size() if is_active() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
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
    """The ``distributed`` flags of the examples (the launch itself is ``torchrun``'s). Under
    ``torchrun``, a usage error is printed by rank 0 only (every rank exits with status 2)."""
    print_usage_once(parser)
    group = parser.add_argument_group("distributed (torchrun; docs/distributed.md)")
    group.add_argument("--sync_bn", action="store_true", default=False,
                       help="convert BatchNorm layers to SyncBatchNorm (statistics over all processes; CUDA only)")
    group.add_argument("--distributed_check", action="store_true", default=False,
                       help="debug: after every step, compare checksums of the parameters, buffers (weighting "
                            "state) and train_loss_buffer across processes and stop at the first difference")


#: Seconds a rank other than 0 waits before leaving on a usage error: torchrun ends every rank
#: (SIGTERM) as soon as one exits, which could otherwise stop rank 0 before it prints the error.
USAGE_ERROR_GRACE_S = 5.0


def print_usage_once(parser: argparse.ArgumentParser) -> None:
    """Make ``parser.error`` silent on the ranks other than 0 of a ``torchrun`` launch (the
    process group does not exist yet when flags are parsed: the rank is ``torchrun``'s ``RANK``);
    they leave :data:`USAGE_ERROR_GRACE_S` later, so rank 0 has printed the error by then."""
    original = parser.error

    def error(message: str):
        if launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
            time.sleep(USAGE_ERROR_GRACE_S)
            parser.exit(2)
        original(message)

    parser.error = error  # type: ignore[method-assign]


def distributed_kwargs(params: argparse.Namespace) -> dict[str, Any]:
    """The Trainer kwargs of :func:`add_distributed_args`' flags, and ``seed`` (``--seed``: every
    epoch's random streams derived from it, so one process and ``torchrun`` draw alike)."""
    kwargs: dict[str, Any] = {"sync_bn": bool(getattr(params, "sync_bn", False)),
                              "distributed_check": bool(getattr(params, "distributed_check", False))}
    if getattr(params, "seed", None) is not None:
        kwargs["seed"] = int(params.seed)
    return kwargs


def teardown(failed: bool = False) -> None:
    """Leave the process group (no-op when none). After an error (``failed``), without the
    closing barrier: the other ranks may be waiting in an all-reduce that this rank will never
    join, so this rank leaves at once; its exit makes their collectives fail and ``torchrun``
    stops the rest (seconds, not a hang)."""
    if not is_active():
        return
    if failed:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a broken group may refuse to close; the process exits anyway
            pass
        return
    dist.barrier()
    dist.destroy_process_group()


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank left (the consequence
    of that rank's error, which that rank reports)."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "[gloo]",
                                  "NCCL communicator was aborted", "ProcessGroup"))


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
