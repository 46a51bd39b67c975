"""Scaffolding every example's ``main.py`` shares: common flags, seeding/device, the
train-or-test dispatch and the "dataset missing" message. Examples keep only what is theirs
(reader, model, metrics) and read top to bottom."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from LibMTL_rgb.checkpoint import CheckpointError, check_same_config, read_training_state
from LibMTL_rgb.cli_checks import EXAMPLE_RANGES, check_example_flags, check_resume, declare_ranges
from LibMTL_rgb import distributed
from LibMTL_rgb.checkpoint import LAST_CHECKPOINT
from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb_examples.input_files import install_input_error_hook
from LibMTL_rgb.nonfinite import MODES as NONFINITE_MODES
from LibMTL_rgb_examples.run_errors import check_batchnorm_batch, one_line_errors
from LibMTL_rgb.run_directory import check_run_directory
from LibMTL_rgb.run_logger import add_logging_args, logging_kwargs
from LibMTL_rgb.utils import set_device, set_random_seed
from LibMTL_rgb.weighting.abstract_weighting import GRAD_METHODS


def example_parser(description: str, defaults: Mapping[str, Any], add_own_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
                   unsupported_archs: Optional[Mapping[str, str]] = None) -> argparse.ArgumentParser:
    """LibMTL's flags + the shared example flags, with the example's (paper's) ``defaults``.
    ``unsupported_archs`` (architecture -> why) makes ``--arch`` refuse those at parse time."""
    parser = make_parser(description)
    if unsupported_archs:
        refuse_archs(parser, unsupported_archs)
    group = parser.add_argument_group("example")
    group.add_argument("--dataset_path", type=str, default=None, help="root directory of the dataset (see the example's README for the layout)")
    group.add_argument("--epochs", type=int, default=1, help="training epochs")
    group.add_argument("--bs", "--train_bs", dest="bs", type=int, default=8,
                       help="training batch size, per process under torchrun (--train_bs: LibMTL's NYUv2/Cityscapes name)")
    group.add_argument("--eval_bs", "--test_bs", dest="eval_bs", type=int, default=None,
                       help="evaluation batch size (--test_bs: LibMTL's NYUv2/Cityscapes name; default: %(default)s, "
                            "where None means --bs)")
    group.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument("--device", type=str, default=None, help="'cpu', 'cuda', 'cuda:1'... (default: cuda:0 when available, else cpu)")
    group.add_argument("--amp", action="store_true", default=False,
                       help="mixed precision: bfloat16 autocast of forward passes and losses (meant for CUDA)")
    group.add_argument("--grad_method", type=str, default=None, choices=list(GRAD_METHODS),
                       help="per-task gradients: one batched backward ('batched'), one backward per task ('loop'), "
                            "or batched with a fallback to the loop where an operation cannot be batched ('auto'); "
                            "'gramian': no [T, D] matrix, only its T×T Gramian (RGB, MGDA, CAGrad, IMTL, UPGrad, DualProj, "
                            "Nash_MTL, Aligned_MTL, FairGrad, PCGrad, GradVac); "
                            "default: 'loop' on CPU (faster for every example here, docs/performance.md), 'auto' on CUDA; "
                            "an example may set its own default (QM9: 'loop')")
    group.add_argument("--grad_memory_gb", type=float, default=None,
                       help="memory (GB) the [T, D] per-task gradient matrix may take; a method that needs only its "
                            "Gramian switches to the Gramian path beyond it (default: a quarter of the device's free memory)")
    group.add_argument("--stl_task", type=str, default=None,
                       help="train only this task (a single-task baseline for Δm%%, same data, model and settings)")
    group.add_argument("--resume", type=str, default=None,
                       help="continue an interrupted run from its last.pt (the file or its run directory): model, "
                            "optimiser, scheduler, weighting state, RNG states, history; --epochs may be larger; "
                            "saves into that run directory unless --save_path is given")
    group.add_argument("--overwrite", action="store_true", default=False,
                       help="replace the run in --save_path when it holds one (a fresh run into such a directory "
                            "is refused otherwise; --resume continues it instead)")
    group.add_argument("--nonfinite", type=str, default="raise", choices=list(NONFINITE_MODES),
                       help="a non-finite loss or gradient: stop with an error naming the task, epoch and batch "
                            "('raise'), or skip that batch and report how many were skipped ('skip')")
    group.add_argument("--log_format", type=str, default="rgb", choices=["rgb", "libmtl"],
                       help="printed epoch lines: ours ('rgb') or LibMTL's exact lines ('libmtl', for scripts that parse LibMTL logs)")
    group.add_argument("--save_every", type=int, default=1,
                       help="write last.pt (the resume checkpoint) every N epochs and after the last one; "
                            "best.pt is written whenever the best epoch changes")
    add_logging_args(parser)
    distributed.add_distributed_args(parser)
    if add_own_args is not None:
        add_own_args(parser)
    parser.set_defaults(**defaults)
    declare_ranges(parser, EXAMPLE_RANGES)
    parser.add_check(check_example_flags)
    parser.add_check(check_resume)
    return parser


def setup_run(params: argparse.Namespace, not_training: Sequence[str] = ()) -> tuple[torch.device, dict, dict, Optional[dict]]:
    """Seed, pick the device (``--gpu_id``/``--device``, CPU without CUDA) and prepare the
    Trainer arguments: ``(device, kwargs, optim_param, scheduler_param)``. ``not_training``:
    the example's own flags that do not change what is trained (left out of ``run_config``,
    so ``--resume`` accepts them changed)."""
    install_input_error_hook()  # unreadable data files: one error line naming the file
    set_random_seed(params.seed)
    if params.device is None and not distributed.launched_by_torchrun():  # torchrun: cuda:LOCAL_RANK
        set_device(params.gpu_id)
    device = distributed.init_from_env(params.device)
    distributed.silence_non_main_stdout()
    kwargs, optim_param, scheduler_param = prepare_args(params)
    kwargs["device"] = device
    kwargs["amp"] = params.amp
    kwargs["nonfinite"] = params.nonfinite
    kwargs["grad_method"] = params.grad_method or ("loop" if device.type == "cpu" else "auto")
    if params.grad_memory_gb is not None:
        kwargs["grad_memory_budget"] = int(params.grad_memory_gb * 1e9)
    kwargs["overwrite"] = bool(getattr(params, "overwrite", False))
    kwargs["run_config"] = run_config(params, not_training)
    check_resumed_config(params, kwargs["run_config"])
    if getattr(params, "save_path", None) and getattr(params, "mode", "train") == "train":
        try:  # a locked run directory, or a finished run a fresh run would replace: refused before the data is read
            check_run_directory(params.save_path, bool(getattr(params, "resume", None)), kwargs["overwrite"])
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
    kwargs.update(logging_kwargs(params))
    kwargs.update({key: getattr(params, key) for key, default in (("log_format", "rgb"), ("save_every", 1))
                   if getattr(params, key, default) != default})
    kwargs.update(distributed.distributed_kwargs(params))
    if getattr(params, "stl_task", None) is not None:
        kwargs["stl_task"] = params.stl_task
    return device, kwargs, optim_param, scheduler_param


#: Flags that do not change what is trained (where data lives, what is logged, how long, which
#: device, how the data is read): ``--resume`` accepts them changed. Every other flag is part
#: of the run's configuration (``run_config``), recorded in ``last.pt``.
NOT_TRAINING_FLAGS = frozenset({
    "epochs", "resume", "save_path", "load_path", "mode", "dataset_path", "device", "gpu_id", "num_workers",
    "eval_bs", "diagnostics", "diagnostics_every", "tensorboard", "log_dir", "overwrite", "nonfinite",
    "distributed_check", "log_format", "save_every",
})


def run_config(params: argparse.Namespace, not_training: Sequence[str] = ()) -> dict[str, Any]:
    """The training configuration of the parsed flags, ``{'--lr': 0.001, ...}``: the Trainer's
    ``run_config`` option (``--resume`` refuses a run whose flags differ; ``--epochs`` may grow).
    Left out: :data:`NOT_TRAINING_FLAGS` and the example's ``not_training`` flags."""
    skipped = NOT_TRAINING_FLAGS.union(not_training)
    return {f"--{name}": value for name, value in sorted(vars(params).items()) if name not in skipped}


def check_resumed_config(params: argparse.Namespace, config: Mapping[str, Any]) -> None:
    """With ``--resume``: exit before any work when a training flag differs from the resumed
    run's, one line per flag naming both values (the Trainer checks again when it loads)."""
    if not getattr(params, "resume", None):
        return
    try:
        state = read_training_state(params.resume)
        saved = (state.get("config") or {}).get("run_config")
        if saved is not None:
            check_same_config({"run_config": saved}, {"run_config": dict(config)}, state["path"])
    except CheckpointError as err:
        raise SystemExit(f"error: --resume: {err}") from None


def fill_input_size(kwargs: dict, sample_shape: Optional[Sequence[int]]) -> None:
    """Set the architecture's ``img_size`` (MMoE, DSelect_k... gates read the input) to
    ``sample_shape`` (one input sample, e.g. ``(3, 64, 64)``) when ``--img_size`` is not given."""
    arch_args = kwargs.get("arch_args", {})
    if sample_shape is not None and "img_size" in arch_args and arch_args["img_size"] is None:
        arch_args["img_size"] = [int(s) for s in sample_shape]


def refuse_archs(parser: argparse.ArgumentParser, unsupported: Mapping[str, str]) -> None:
    """Make ``--arch NAME`` a parse-time error saying why, for each NAME in ``unsupported``."""
    action = next(a for a in parser._actions if "--arch" in a.option_strings)

    def checked(name: str) -> str:
        if name in unsupported:
            raise argparse.ArgumentTypeError(f"{name} cannot run on this example: {unsupported[name]}")
        return name

    action.type = checked
    action.help = f"{action.help} (not here: {', '.join(unsupported)})"


def run(trainer, params: argparse.Namespace, train_loader, test_loader, val_loader=None) -> None:
    """``--mode train``: train (continuing ``--resume``'s run) and evaluate each epoch; ``--mode
    test``: evaluate ``--load_path``. Errors the user can act on end the run with one line
    (``run_errors.py``). A torchrun process group is closed at the end; after an error on one
    rank, without waiting for the others (they stop within seconds), the error printed once,
    with its rank and how to continue (:func:`_report_rank_failure`)."""
    failed = True
    try:
        with one_line_errors(trainer.save_path):
            if params.mode == "train":
                check_batchnorm_batch(trainer.model, params.bs)
                if getattr(params, "resume", None):  # every process loads the checkpoint
                    print(f"Resuming after epoch {trainer.resume(params.resume) - 1} from {params.resume}")
                trainer.train(train_loader, test_loader, params.epochs, val_dataloaders=val_loader)
            else:
                trainer.test(test_loader, epoch=None, mode="test")
        failed = False
    except BaseException as error:
        if distributed.world_size() > 1:
            _report_rank_failure(error, trainer.save_path, _finished_an_epoch(trainer))
        raise
    finally:
        distributed.teardown(failed=failed)


def _finished_an_epoch(trainer) -> bool:
    """Whether every rank finished an epoch of this run before the error (rank 0 then saves it,
    perhaps after this rank failed, so its last.pt may not exist yet)."""
    epoch = getattr(trainer.model, "epoch", None)
    return epoch is not None and int(epoch) > int(getattr(trainer, "start_epoch", 0))


def _report_rank_failure(error: BaseException, save_path: Optional[str], finished_an_epoch: bool) -> None:
    """Under torchrun: the rank whose error ended the run says so once, with its rank and the
    ``--resume`` hint, and exits 1; a rank whose collective failed because another rank left
    exits 1 silently (that rank reports). Unexpected errors keep their traceback."""
    where = f"rank {distributed.rank()} of {distributed.world_size()}"
    saved = save_path and (finished_an_epoch or os.path.isfile(os.path.join(save_path, LAST_CHECKPOINT)))
    hint = f"continue with --resume {save_path}" if saved else "no finished epoch was saved"
    if distributed.is_peer_failure(error):
        raise SystemExit(1) from None
    if isinstance(error, SystemExit):
        if error.code in (0, None) or not isinstance(error.code, str):
            return
        sys.stderr.write(f"{error.code} [{where}]; {hint}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None
    traceback.print_exception(error, file=sys.stderr)
    sys.stderr.write(f"{_program_name()}: error on {where}: {type(error).__name__}: {error}; {hint}\n")
    sys.stderr.flush()
    raise SystemExit(1) from None


def _program_name() -> str:
    return os.path.basename(sys.argv[0]) or "main.py"


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
