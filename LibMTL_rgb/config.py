"""Command line: LibMTL's ``LibMTL_args`` parser and ``prepare_args``.

The general, optimizer and scheduler flags are LibMTL's. Method flags are generated from the
``hyperparameters`` that each registered weighting and architecture declares, so ``--help``
lists every option of every method, and ``prepare_args`` passes exactly the chosen method's
options as ``weight_args`` / ``arch_args``.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

import LibMTL_rgb.architecture  # noqa: F401  (registers the architectures)
import LibMTL_rgb.weighting  # noqa: F401  (registers the weightings)
from LibMTL_rgb.libmtl_compat import signature_weight_args
from LibMTL_rgb.cli_checks import (
    GENERAL_RANGES, CheckedArgumentParser, check_load_path, check_general_flags, declare_ranges, range_checked_type,
)
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS, Hyperparameter, Registry, hyperparameters_of


#: The flags of LibMTL main's ``LibMTL_args`` (2025-05) less ``--mode``, ``--save_path`` and
#: ``--load_path``, which LibMTL 1.1.5 lacks (research code written for it adds its own).
#: ``--help`` lists LibMTL's flags first; every other flag of ours yields to a flag of the same
#: name that user code adds (:class:`DropInParser`).
LIBMTL_FLAGS = frozenset({
    "seed", "gpu_id", "weighting", "arch", "rep_grad", "multi_input", "optim", "lr", "momentum",
    "weight_decay", "scheduler", "step_size", "gamma", "T", "mgda_gn", "GradVac_beta", "GradVac_group_type",
    "alpha", "leak", "calpha", "rescale", "update_weights_every", "optim_niter", "max_norm", "MoCo_beta",
    "MoCo_beta_sigma", "MoCo_gamma", "MoCo_gamma_sigma", "MoCo_rho", "DB_beta", "DB_beta_sigma", "STCH_mu",
    "STCH_warmup_epoch", "robust_step_size", "FairGrad_alpha", "FAMO_w_lr", "FAMO_w_gamma", "MoDo_gamma",
    "MoDo_rho", "SDMGrad_lamda", "SDMGrad_niter", "UPGrad_norm_eps", "UPGrad_reg_eps", "outer_lr",
    "inner_lr", "inner_step", "FORUM_phi", "img_size", "num_experts", "num_nonzeros", "kgamma",
})


class DropInParser(CheckedArgumentParser):
    """``LibMTL_args``' class: a flag that user code adds (``LibMTL_args.add_argument('--patience',
    ...)``, directly or in its own group) replaces our flag of that name when ours is not one of
    LibMTL 1.1.5's (LibMTL itself would not have it); a clash with LibMTL's own flags stays an
    ``argparse.ArgumentError``, as in LibMTL."""

    def yields(self, action: argparse.Action) -> bool:
        """Whether ``action`` is one of our flags that a user's flag of the same name replaces."""
        return getattr(action, "yields_to_user", False)

    def _handle_conflict_error(self, action, conflicting_actions):
        if all(self.yields(other) for _, other in conflicting_actions):
            return self._handle_conflict_resolve(action, conflicting_actions)
        return super()._handle_conflict_error(action, conflicting_actions)

    def add_argument_group(self, *args: Any, **kwargs: Any):
        """``argparse``'s, with the same yielding rule for flags added to the group."""
        group = super().add_argument_group(*args, **kwargs)
        group._handle_conflict_error = self._handle_conflict_error  # type: ignore[method-assign]  # the user's own groups yield alike
        return group


def _mark_yielding(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if action.option_strings and action.dest != "help" and action.dest not in LIBMTL_FLAGS:
            action.yields_to_user = True  # type: ignore[attr-defined]


def make_parser(description: str = "LibMTL_rgb: multi-task learning with gradient balancing (RGB and baselines)") -> argparse.ArgumentParser:
    """A fresh parser with LibMTL's flags plus every registered method's options: LibMTL's
    flags first in ``--help``, then ours (``LibMTL_rgb: ...`` groups), which yield to flags
    of the same names that user code adds."""
    parser = DropInParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    general = parser.add_argument_group("general")
    general.add_argument("--mode", type=str, default="train", choices=["train", "test"], help="train, or evaluate a saved model (with --load_path)")
    general.add_argument("--seed", type=int, default=0, help="random seed")
    general.add_argument("--gpu_id", type=str, default="0", help="CUDA device to use; CPU is used when CUDA is absent")
    general.add_argument("--weighting", type=str, default="EW", help=f"weighting method, one of: {', '.join(WEIGHTINGS.names())}")
    general.add_argument("--arch", type=str, default="HPS", help=f"MTL architecture, one of: {', '.join(ARCHITECTURES.names())}")
    general.add_argument("--rep_grad", action="store_true", default=False, help="balance representation gradients instead of shared-parameter gradients")
    general.add_argument("--multi_input", action="store_true", default=False, help="each task has its own input data")
    general.add_argument("--save_path", type=str, default=None, help="directory for best.pt, last.pt and history.csv")
    general.add_argument("--load_path", type=str, default=None, help="model weights to load (a .pt file or a directory with best.pt)")

    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--optim", type=str, default="adam", choices=["adam", "adamw", "sgd", "adagrad", "rmsprop"], help="optimizer")
    optim.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    optim.add_argument("--momentum", type=float, default=0.9, help="momentum (sgd only; LibMTL's default)")
    optim.add_argument("--weight_decay", type=float, default=1e-5, help="weight decay")

    sched = parser.add_argument_group("scheduler")
    sched.add_argument("--scheduler", type=str, default=None, choices=["none", "step", "multistep", "cos", "exp", "reduce"],
                       help="learning-rate scheduler (none by default; 'none' switches off an example's default)")
    sched.add_argument("--step_size", type=int, default=100, help="StepLR step size (epochs)")
    sched.add_argument("--gamma", type=float, default=0.5, help="decay factor of step/multistep/exp/reduce")
    _add_method_flags(parser, WEIGHTINGS, "weighting", libmtl=True)
    _add_method_flags(parser, ARCHITECTURES, "architecture", libmtl=True)

    extra_sched = parser.add_argument_group("LibMTL_rgb: scheduler")
    extra_sched.add_argument("--milestones", type=int, nargs="+", default=[100], help="MultiStepLR epochs at which the learning rate is multiplied by --gamma")
    extra_sched.add_argument("--T_max", type=int, default=100, help="CosineAnnealingLR period (epochs)")
    extra_sched.add_argument("--eta_min", type=float, default=0.0, help="CosineAnnealingLR minimum learning rate")
    extra_sched.add_argument("--patience", type=int, default=5, help="ReduceLROnPlateau patience (epochs), on validation improvement")
    extra_sched.add_argument("--min_lr", type=float, default=0.0, help="ReduceLROnPlateau minimum learning rate")

    _add_method_flags(parser, WEIGHTINGS, "weighting", libmtl=False)
    _add_method_flags(parser, ARCHITECTURES, "architecture", libmtl=False)
    declare_ranges(parser, GENERAL_RANGES)  # and, after parsing, the checks of cli_checks.py
    parser.add_check(check_general_flags)
    parser.add_check(check_load_path)
    _mark_yielding(parser)
    return parser


def _add_method_flags(parser: argparse.ArgumentParser, registry: Registry, kind: str, libmtl: bool) -> None:
    """The registered methods' flags: LibMTL's (``libmtl=True``) or only ours, one group per method."""
    declared: dict[str, tuple[Hyperparameter, str]] = {}
    for name, cls in registry.items():
        own = [hp for hp in hyperparameters_of(cls) if hp.name not in declared and (hp.name in LIBMTL_FLAGS) == libmtl]
        for hp in hyperparameters_of(cls):
            if hp.name in declared:
                other, owner = declared[hp.name]
                if other.default != hp.default:
                    raise ValueError(f"--{hp.name}: {owner} and {name} declare different defaults")
        if not own:
            continue
        group = parser.add_argument_group(f"{kind} {name}" if libmtl else f"LibMTL_rgb: {kind} {name}")
        for hp in own:
            declared[hp.name] = (hp, name)
            add_flag(group, hp)


def add_flag(group, hp: Hyperparameter) -> None:
    """Add ``--<hp.name>`` to an argparse group (booleans get ``--x/--no-x``)."""
    if isinstance(hp.default, bool):
        group.add_argument(f"--{hp.name}", action=argparse.BooleanOptionalAction, default=hp.default, help=hp.help)
        return
    kwargs: dict[str, Any] = {"type": range_checked_type(hp), "default": hp.default, "help": hp.help}
    if hp.range_text() is not None:
        kwargs["help"] = f"{hp.help} ({hp.range_text()})"
    if hp.nargs is not None:
        kwargs["nargs"] = hp.nargs
    if hp.choices is not None:
        kwargs["choices"] = hp.choices
    group.add_argument(f"--{hp.name}", **kwargs)


#: LibMTL's module-level parser (examples may add their own flags to it).
LibMTL_args = make_parser()


def method_args(params: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of ``cls``'s declared hyper-parameters in ``params`` (defaults where absent)."""
    args = {}
    for hp in hyperparameters_of(cls):
        value = getattr(params, hp.name, hp.default)
        if isinstance(value, list) and hp.nargs is not None:
            value = list(value)
        args[hp.name] = value
    return args


def prepare_args(params: argparse.Namespace, verbose: bool = True) -> tuple[dict[str, Any], dict[str, Any], Optional[dict[str, Any]]]:
    """LibMTL's ``prepare_args``: ``(kwargs, optim_param, scheduler_param)`` from parsed flags.

    ``kwargs`` holds ``weight_args`` and ``arch_args`` for the chosen ``--weighting`` and
    ``--arch``; unknown method names raise ``ValueError`` listing the registered ones. A class
    added to ``LibMTL_rgb.weighting`` by name (LibMTL's route) that declares no
    ``hyperparameters`` gets the flags named like the keyword parameters of its ``backward``.
    """
    weighting_class = WEIGHTINGS.get(params.weighting)
    arch_class = ARCHITECTURES.get(params.arch)
    kwargs = {"weight_args": method_args(params, weighting_class), "arch_args": method_args(params, arch_class)}
    if params.weighting not in WEIGHTINGS.names() and not kwargs["weight_args"]:  # a class added to the package by name
        kwargs["weight_args"] = signature_weight_args(weighting_class, params)

    optim_param: dict[str, Any] = {"optim": params.optim, "lr": params.lr, "weight_decay": params.weight_decay}
    if params.optim == "sgd":
        optim_param["momentum"] = params.momentum

    scheduler_param: Optional[dict[str, Any]] = None
    if params.scheduler == "step":
        scheduler_param = {"scheduler": "step", "step_size": params.step_size, "gamma": params.gamma}
    elif params.scheduler == "multistep":
        scheduler_param = {"scheduler": "multistep", "milestones": list(params.milestones), "gamma": params.gamma}
    elif params.scheduler == "exp":
        scheduler_param = {"scheduler": "exp", "gamma": params.gamma}
    elif params.scheduler == "cos":
        scheduler_param = {"scheduler": "cos", "T_max": params.T_max, "eta_min": params.eta_min}
    elif params.scheduler == "reduce":
        scheduler_param = {"scheduler": "reduce", "mode": "max", "factor": params.gamma,
                           "patience": params.patience, "min_lr": params.min_lr}
    if verbose:
        _display(params, kwargs, optim_param, scheduler_param)
    return kwargs, optim_param, scheduler_param


def _display(params, kwargs, optim_param, scheduler_param) -> None:
    print("=" * 40)
    print(f"General: weighting {params.weighting}, arch {params.arch}, rep_grad {params.rep_grad}, "
          f"multi_input {params.multi_input}, seed {params.seed}")
    print(f"Weighting options: {kwargs['weight_args']}")
    print(f"Architecture options: {kwargs['arch_args']}")
    print(f"Optimizer: {optim_param}")
    print(f"Scheduler: {scheduler_param}")
    print("=" * 40)


#: LibMTL's name of the same parser object (``LibMTL.config._parser``), imported by some research code.
_parser = LibMTL_args
