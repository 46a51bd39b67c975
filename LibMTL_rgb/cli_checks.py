"""Command-line checks made when the flags are parsed, before any data is read.

Every refusal is an argparse error: one ``main.py: error: ...`` line after the usage, exit
code 2, no traceback. Two kinds of check:

- value ranges of single flags (``--lr`` > 0, ``--bs`` >= 1...), declared once as
  :class:`~LibMTL_rgb.registry.Hyperparameter` ranges and checked by the flag's ``type``
  (:func:`declare_ranges`), exactly like the methods' own hyper-parameters;
- checks of the parsed flags together (:class:`CheckedArgumentParser` runs them after
  parsing): unknown ``--weighting``/``--arch`` names (with a close-match suggestion), RGB with
  ``--rep_grad``, ``--device cuda`` without CUDA, output directories that cannot be written,
  ``--resume``/``--load_path`` files that are missing or of another setup.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Iterable, Optional, Sequence

from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS, Hyperparameter, hyperparameters_of, unknown_name_message

Check = Callable[[argparse.ArgumentParser, argparse.Namespace], None]

#: Ranges of LibMTL's general, optimiser and scheduler flags.
GENERAL_RANGES = (
    Hyperparameter("seed", 0, "", minimum=0, maximum=2**32 - 1),  # numpy's seed range
    Hyperparameter("lr", 1e-4, "", minimum=0.0, exclusive_minimum=True),
    Hyperparameter("momentum", 0.0, "", minimum=0.0),
    Hyperparameter("weight_decay", 0.0, "", minimum=0.0),
    Hyperparameter("milestones", [100], "", minimum=1),
    Hyperparameter("step_size", 100, "", minimum=1),
    Hyperparameter("gamma", 0.5, "", minimum=0.0, exclusive_minimum=True),
    Hyperparameter("T_max", 100, "", minimum=1),
    Hyperparameter("eta_min", 0.0, "", minimum=0.0),
    Hyperparameter("patience", 5, "", minimum=0),
    Hyperparameter("min_lr", 0.0, "", minimum=0.0),
)
#: Ranges of the flags every example shares (``example_runner.example_parser``).
EXAMPLE_RANGES = (
    Hyperparameter("epochs", 1, "", minimum=1),
    Hyperparameter("bs", 8, "", minimum=1),
    Hyperparameter("eval_bs", 8, "", minimum=1),
    Hyperparameter("num_workers", 0, "", minimum=0),
    Hyperparameter("diagnostics_every", 1, "", minimum=1),
    Hyperparameter("save_every", 1, "", minimum=1),
    Hyperparameter("grad_memory_gb", None, "", type=float, minimum=0.0, exclusive_minimum=True),
)
#: Ranges of the dense examples' model flags (``LibMTL_rgb.model.aspp.add_deeplab_args``) and
#: label size.
DENSE_MODEL_RANGES = (
    Hyperparameter("backbone_width", 64, "", minimum=1),
    Hyperparameter("label_size", None, "", type=int, minimum=1),
)
#: Pairs of method flags ``(low, high)`` that must satisfy ``low <= high`` when the chosen
#: method declares both.
ORDERED_FLAGS = (("rgb_min_steps", "rgb_max_steps"),)

__all__ = [
    "CheckedArgumentParser", "GENERAL_RANGES", "EXAMPLE_RANGES", "DENSE_MODEL_RANGES", "ORDERED_FLAGS",
    "declare_ranges", "range_checked_type", "check_general_flags", "check_output_dir", "check_device",
    "check_load_path", "check_resume", "check_example_flags", "single_input_check", "task_name_check",
]


class CheckedArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that runs its :attr:`checks` on the parsed flags (each check calls
    ``parser.error`` to refuse them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks: list[Check] = []

    def add_check(self, check: Check) -> None:
        self.checks.append(check)

    def parse_known_args(  # type: ignore[override]  # argparse's overloads only refine the namespace type
        self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        params, extras = super().parse_known_args(args, namespace)
        for check in self.checks:
            check(self, params)
        return params, extras


def range_checked_type(hp: Hyperparameter, parse: Optional[Callable[[str], Any]] = None):
    """argparse ``type``: parse with ``parse`` (default ``hp.value_type()``) and refuse values
    outside ``hp``'s range (argparse prints ``error: argument --x: must be ..., got ...``)."""
    parse = parse or hp.value_type()

    def parse_and_check(text: str):
        value = parse(text)
        problem = hp.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    parse_and_check.__name__ = getattr(parse, "__name__", "value")
    return parse_and_check


def declare_ranges(parser: argparse.ArgumentParser, ranges: Iterable[Hyperparameter]) -> None:
    """Give the parser's flags named in ``ranges`` a range-checked ``type`` and the range in
    their help text."""
    by_name = {hp.name: hp for hp in ranges}
    for action in parser._actions:
        hp = by_name.get(action.dest)
        if hp is None or not callable(action.type):
            continue
        action.type = range_checked_type(hp, action.type)
        range_text = hp.range_text()
        if action.help and range_text is not None and range_text not in action.help:
            action.help = f"{action.help} ({range_text})"


def check_general_flags(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """Method names, method/flag combinations and output directories of LibMTL's flags."""
    for flag, registry in (("weighting", WEIGHTINGS), ("arch", ARCHITECTURES)):
        name = getattr(params, flag, None)
        if name is not None and name not in registry:
            parser.error(f"argument --{flag}: {unknown_name_message(registry.kind, name, registry.names())}")
    weighting = getattr(params, "weighting", None)
    chosen = WEIGHTINGS.get(weighting) if isinstance(weighting, str) and weighting in WEIGHTINGS else None
    if getattr(params, "rep_grad", False) and chosen is not None and not getattr(chosen, "supports_rep_grad", True):
        parser.error(f"--weighting {weighting} combines shared-parameter gradients and cannot run with --rep_grad; "
                     "drop --rep_grad")
    for flag in ("save_path", "log_dir"):
        problem = check_output_dir(getattr(params, flag, None))
        if problem:
            parser.error(f"argument --{flag}: {problem}")
    declared = {hp.name for hp in hyperparameters_of(chosen)} if chosen is not None else set()
    for low, high in ORDERED_FLAGS:
        low_value, high_value = getattr(params, low, None), getattr(params, high, None)
        if {low, high} <= declared and low_value is not None and high_value is not None and low_value > high_value:
            parser.error(f"argument --{low}: must be <= --{high} ({high_value}), got {low_value}")


def single_input_check(why: str) -> Check:
    """A check refusing ``--multi_input`` on an example whose tasks share one input; ``why``
    says so (``'NYUv2 has one image per sample for all three tasks'``)."""

    def check(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
        if getattr(params, "multi_input", False):
            parser.error(f"argument --multi_input: {why}; drop --multi_input")

    return check


def task_name_check(task_names: Callable[[argparse.Namespace], Optional[Sequence[str]]]) -> Check:
    """A check refusing a ``--stl_task`` that is not one of ``task_names(params)`` (None: the
    names are not known before the data is read, the Trainer checks), with the closest name."""

    def check(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
        task = getattr(params, "stl_task", None)
        if task is None:
            return
        names = task_names(params)
        if names is not None and task not in names:
            parser.error(f"argument --stl_task: {unknown_name_message('task', task, list(names))}")

    return check


def check_output_dir(path: Optional[str]) -> Optional[str]:
    """None when ``path`` is (or can be created as) a writable directory, else why not."""
    if not path:
        return None
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a directory"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{path} lies under {existing}, which is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable" + ("" if existing == os.path.abspath(path) else f" (needed to create {path})")
    return None


def check_device(device: Optional[str]) -> Optional[str]:
    """None when ``device`` is usable here (or None), else why not."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"{device!r} is not a device name ('cpu', 'cuda', 'cuda:1'...)"
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return f"{device} was asked for but CUDA is not available here; use --device cpu"
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        return f"{device}: only {torch.cuda.device_count()} CUDA device(s) here"
    return None


def check_example_flags(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """The flags every example shares (``example_runner.example_parser``): ``--device`` usable
    here, ``--mode test`` with ``--load_path``."""
    problem = check_device(params.device)
    if problem:
        parser.error(f"argument --device: {problem}")
    if params.mode == "test" and params.load_path is None:
        parser.error("--mode test evaluates saved weights: give --load_path (a best.pt file or its directory)")


def check_load_path(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """``--load_path``: the file exists, holds model weights and comes from the same
    ``--weighting``/``--arch``."""
    from LibMTL_rgb.checkpoint import CheckpointError, check_compatible, read_model_weights

    load_path = getattr(params, "load_path", None)
    if not load_path or getattr(params, "resume", None):
        return
    try:
        _, metadata, path = read_model_weights(load_path)
        check_compatible(metadata, _expected_setup(params), path)
    except CheckpointError as err:
        parser.error(f"argument --load_path: {err}")


def check_resume(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """``--resume`` (of a Trainer run): the file exists, is a ``last.pt`` of the same
    ``--weighting``/``--arch`` and has epochs left to train. Without ``--save_path`` the run
    keeps saving into the resumed run's directory."""
    from LibMTL_rgb.checkpoint import CheckpointError, check_compatible, read_training_state

    resume = getattr(params, "resume", None)
    if not resume:
        return
    if getattr(params, "load_path", None):
        parser.error("give either --resume (continue a run) or --load_path (start from its weights), not both")
    if getattr(params, "mode", "train") != "train":
        parser.error("--resume continues training: it needs --mode train")
    try:
        state = read_training_state(resume)
        check_compatible(state.get("metadata"), _expected_setup(params), state["path"])
    except CheckpointError as err:
        parser.error(f"argument --resume: {err}")
    if getattr(params, "save_path", None) is None:
        params.save_path = os.path.dirname(state["path"])
    done = int(state["epoch"]) + 1
    if getattr(params, "epochs", None) is not None and params.epochs < done:
        parser.error(f"argument --epochs: {state['path']} already holds {done} epoch(s); "
                     f"give --epochs {done} (nothing left to train) or more")


def _expected_setup(params: argparse.Namespace) -> dict[str, Optional[str]]:
    return {"weighting": getattr(params, "weighting", None), "architecture": getattr(params, "arch", None)}
