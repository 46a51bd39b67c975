"""Scaffolding every example's ``main.py`` shares: common flags, seeding/device, the
train-or-test dispatch and the "dataset missing" message. Examples keep only what is theirs
(reader, model, metrics) and read top to bottom."""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from LibMTL_rgb import distributed
from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.run_logger import add_logging_args, logging_kwargs
from LibMTL_rgb.trainer import Trainer
from LibMTL_rgb.utils import set_device, set_random_seed


def example_parser(description: str, defaults: Mapping[str, Any], add_own_args: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> argparse.ArgumentParser:
    """LibMTL's flags + the shared example flags, with the example's (paper's) ``defaults``."""
    parser = make_parser(description)
    group = parser.add_argument_group("example")
    group.add_argument("--dataset_path", type=str, default=None, help="root directory of the dataset (see the example's README for the layout)")
    group.add_argument("--epochs", type=int, default=1, help="training epochs")
    group.add_argument("--bs", type=int, default=8, help="training batch size (per process under torchrun)")
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
    add_logging_args(parser)
    distributed.add_distributed_args(parser)
    if add_own_args is not None:
        add_own_args(parser)
    parser.set_defaults(**defaults)
    return parser


def setup_run(params: argparse.Namespace) -> tuple[torch.device, dict, dict, Optional[dict]]:
    """Seed, pick the device (``--gpu_id``/``--device``, CPU without CUDA) and prepare the
    Trainer arguments: ``(device, kwargs, optim_param, scheduler_param)``."""
    set_random_seed(params.seed)
    if params.device is None and not distributed.launched_by_torchrun():  # torchrun: cuda:LOCAL_RANK
        set_device(params.gpu_id)
    device = distributed.init_from_env(params.device)
    distributed.silence_non_main_stdout()
    kwargs, optim_param, scheduler_param = prepare_args(params)
    kwargs["device"] = device
    kwargs["amp"] = params.amp
    kwargs["grad_method"] = params.grad_method or ("loop" if device.type == "cpu" else "auto")
    kwargs.update(logging_kwargs(params))
    kwargs.update(distributed.distributed_kwargs(params))
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
    """``--mode train``: train and evaluate each epoch; ``--mode test``: evaluate ``--load_path``."""
    if params.mode == "train":
        trainer.train(train_loader, test_loader, params.epochs, val_dataloaders=val_loader)
    else:
        if params.load_path is None:
            raise SystemExit("--mode test needs --load_path (a best.pt file or its directory)")
        trainer.test(test_loader, epoch=None, mode="test")
    distributed.teardown()


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
