"""Scaffolding every example's ``main.py`` shares: common flags, seeding/device, the
train-or-test dispatch and the "dataset missing" message. Examples keep only what is theirs
(reader, model, metrics) and read top to bottom."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from LibMTL_rgb.checkpoint import LAST_CHECKPOINT, CheckpointError
from LibMTL_rgb.cli_checks import EXAMPLE_RANGES, check_device, check_resume, declare_ranges
from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.input_files import InputDataError, install_input_error_hook, worker_message
from LibMTL_rgb.nonfinite import MODES as NONFINITE_MODES
from LibMTL_rgb.nonfinite import NonFiniteError
from LibMTL_rgb.run_logger import add_logging_args, logging_kwargs
from LibMTL_rgb.trainer import Trainer
from LibMTL_rgb.utils import resolve_device, set_device, set_random_seed


def example_parser(description: str, defaults: Mapping[str, Any], add_own_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
                   architectures: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """LibMTL's flags + the shared example flags, with the example's (paper's) ``defaults``;
    ``architectures``: the ones that fit the example's encoder (default: all)."""
    parser = make_parser(description)
    group = parser.add_argument_group("example")
    group.add_argument("--dataset_path", type=str, default=None, help="root directory of the dataset (see the example's README for the layout)")
    group.add_argument("--epochs", type=int, default=1, help="training epochs")
    group.add_argument("--bs", type=int, default=8, help="training batch size")
    group.add_argument("--eval_bs", type=int, default=None, help="evaluation batch size (default: --bs)")
    group.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument("--device", type=str, default=None, help="'cpu', 'cuda', 'cuda:1'... (default: cuda:0 when available, else cpu)")
    group.add_argument("--amp", action="store_true", default=False,
                       help="mixed precision: bfloat16 autocast of forward passes and losses (meant for CUDA)")
    group.add_argument("--grad_method", type=str, default=None, choices=["auto", "batched", "loop"],
                       help="per-task gradients: one batched backward ('batched'), one backward per task ('loop'), "
                            "or batched with a fallback to the loop where an operation cannot be batched ('auto'); "
                            "default: 'loop' on CPU (faster for every example here, docs/performance.md), 'auto' on CUDA; "
                            "an example may set its own default (QM9: 'loop')")
    group.add_argument("--stl_task", type=str, default=None,
                       help="train only this task (a single-task baseline for Δm%%, same data, model and settings)")
    group.add_argument("--resume", type=str, default=None,
                       help="continue an interrupted run from its last.pt (the file or its run directory): model, "
                            "optimiser, scheduler, weighting state, RNG states, history; --epochs may be larger; "
                            "saves into that run directory unless --save_path is given")
    group.add_argument("--nonfinite", type=str, default="raise", choices=list(NONFINITE_MODES),
                       help="a non-finite loss or gradient: stop with an error naming the task, epoch and batch "
                            "('raise'), or skip that batch and report how many were skipped ('skip')")
    add_logging_args(parser)
    if add_own_args is not None:
        add_own_args(parser)
    parser.set_defaults(**defaults)
    declare_ranges(parser, EXAMPLE_RANGES)
    parser.add_check(_check_example_flags)
    if architectures is not None:
        parser.add_check(lambda parser, params: _check_architecture(parser, params, architectures))
    parser.add_check(check_resume)
    return parser


def _check_example_flags(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """The example flags' combinations, refused as argparse errors before any data is read."""
    problem = check_device(params.device)
    if problem:
        parser.error(f"argument --device: {problem}")
    if params.mode == "test" and params.load_path is None:
        parser.error("--mode test evaluates saved weights: give --load_path (a best.pt file or its directory)")


def _check_architecture(parser: argparse.ArgumentParser, params: argparse.Namespace, architectures: Sequence[str]) -> None:
    if params.arch not in architectures:
        parser.error(f"argument --arch: {params.arch} cannot fit this example's encoder; "
                     f"it supports {', '.join(architectures)}")


def setup_run(params: argparse.Namespace) -> tuple[torch.device, dict, dict, Optional[dict]]:
    """Seed, pick the device (``--gpu_id``/``--device``, CPU without CUDA) and prepare the
    Trainer arguments: ``(device, kwargs, optim_param, scheduler_param)``."""
    install_input_error_hook()  # unreadable data files: one error line naming the file
    set_random_seed(params.seed)
    if params.device is None:
        set_device(params.gpu_id)
    device = resolve_device(params.device)
    kwargs, optim_param, scheduler_param = prepare_args(params)
    kwargs["device"] = device
    kwargs["amp"] = params.amp
    kwargs["nonfinite"] = params.nonfinite
    kwargs["grad_method"] = params.grad_method or ("loop" if device.type == "cpu" else "auto")
    kwargs.update(logging_kwargs(params))
    if getattr(params, "stl_task", None) is not None:
        kwargs["stl_task"] = params.stl_task
    return device, kwargs, optim_param, scheduler_param


def build_trainer(params: argparse.Namespace, task_dict: Mapping[str, Any], encoder_class, decoders,
                  optim_param: dict, scheduler_param: Optional[dict], kwargs: dict, trainer_class: type = Trainer) -> Trainer:
    """LibMTL's ``Trainer(...)`` with every choice taken from the flags (``--weighting``,
    ``--arch``, ``--rep_grad``, ``--multi_input``, ``--save_path``, ``--load_path``) and
    ``setup_run``'s outputs."""
    return trainer_class(
        task_dict, params.weighting, params.arch, encoder_class, decoders, params.rep_grad, params.multi_input,
        optim_param, scheduler_param, save_path=params.save_path, load_path=params.load_path, **kwargs,
    )


def run(trainer, params: argparse.Namespace, train_loader, test_loader, val_loader=None) -> None:
    """``--mode train``: train (continuing ``--resume``'s run) and evaluate each epoch; ``--mode
    test``: evaluate ``--load_path``. A non-finite step or an unusable checkpoint ends the run
    with its one-line message (exit code 1), not a traceback."""
    try:
        if params.mode == "train":
            _check_batchnorm_batch(trainer, params)
            if getattr(params, "resume", None):
                print(f"Resuming after epoch {trainer.resume(params.resume) - 1} from {params.resume}")
            trainer.train(train_loader, test_loader, params.epochs, val_dataloaders=val_loader)
        else:
            trainer.test(test_loader, epoch=None, mode="test")
    except (NonFiniteError, CheckpointError, InputDataError) as err:
        raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'main.py'}: error: {worker_message(err)}") from None
    except KeyboardInterrupt:
        _report_interrupt(trainer)
    except ValueError as err:
        if "Expected more than 1 value per channel when training" not in str(err):
            raise
        raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'main.py'}: error: a training batch of one sample reached "
                         "a BatchNorm layer, which cannot normalise a single value per channel; choose --bs so that "
                         "no batch (the last one included) holds a single sample") from None


#: Exit code of a run stopped by Ctrl-C (SIGINT), as shells report it (128 + 2).
INTERRUPTED_EXIT_CODE = 130


def _report_interrupt(trainer) -> None:
    """Ctrl-C: one line saying how to continue (the last finished epoch's checkpoint is intact:
    checkpoints are written atomically), exit code 130."""
    saved = trainer.save_path and os.path.isfile(os.path.join(trainer.save_path, LAST_CHECKPOINT))
    how = f"continue with --resume {trainer.save_path}" if saved else "no finished epoch was saved"
    print(f"{os.path.basename(sys.argv[0]) or 'main.py'}: interrupted; {how}", file=sys.stderr)
    raise SystemExit(INTERRUPTED_EXIT_CODE)


def _check_batchnorm_batch(trainer, params: argparse.Namespace) -> None:
    """``--bs 1`` cannot train a model with BatchNorm layers: say so before training."""
    if params.bs == 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in trainer.model.modules()):
        raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'main.py'}: error: --bs 1 cannot train this model: its "
                         "BatchNorm layers need at least 2 samples per batch; use --bs 2 or more")


def require_dataset(name: str, root: Optional[str], required: Sequence[str], how_to_get: str) -> str:
    """Check that ``root`` holds each path in ``required``; else exit with what to download
    and where it goes."""
    if root is None:
        raise SystemExit(f"{name}: give --dataset_path. {how_to_get}")
    missing = [p for p in required if not os.path.exists(os.path.join(root, p))]
    if missing:
        raise SystemExit(
            f"{name}: {root} does not look like the {name} dataset: missing {', '.join(missing)}.\n{how_to_get}"
        )
    return root


def sorted_numbered_files(directory: str, suffix: str) -> list[str]:
    """Files ``<i><suffix>`` in ``directory``, sorted by their integer stem."""
    names = [f for f in os.listdir(directory) if f.endswith(suffix)]
    try:
        return sorted(names, key=lambda f: int(f[: -len(suffix)]))
    except ValueError as err:
        raise SystemExit(f"{directory}: expected files named <number>{suffix}: {err}") from None
