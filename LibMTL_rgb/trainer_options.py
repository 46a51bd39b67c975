"""``TrainerOptions``: the Trainer's keyword options as one typed object.

``Trainer(..., **kwargs)`` keeps LibMTL's signature; its ``kwargs`` are turned into a
:class:`TrainerOptions` at once, which refuses an unknown key with the closest known one
(``nonfinte='skip'`` -> "did you mean 'nonfinite'?"). The method options ``weight_args`` /
``arch_args`` are checked against the chosen classes (:func:`check_method_args`): the
``Hyperparameter``\\ s a class declares (``registry.hyperparameters_of``: names and ranges),
else, for LibMTL-derived or custom classes that declare none, the keyword parameters of
``backward`` (weightings) or ``__init__`` (architectures); a class that takes ``**kwargs``
there accepts any key, as LibMTL does.

>>> TrainerOptions.from_kwargs({"nonfinte": "skip"})
Traceback (most recent call last):
...
TypeError: unknown Trainer option 'nonfinte' (did you mean 'nonfinite'?); known options: ...
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.registry import hyperparameters_of
from LibMTL_rgb.weighting.abstract_weighting import GRAD_METHODS

__all__ = ["TrainerOptions", "check_method_args", "suggestion"]

NONFINITE_MODES = ("raise", "skip")
LOG_FORMATS = ("rgb", "libmtl")


@dataclass
class TrainerOptions:
    """Every keyword option of ``Trainer`` (LibMTL's ``weight_args``/``arch_args`` included)."""

    weight_args: dict[str, Any] = field(default_factory=dict)
    arch_args: dict[str, Any] = field(default_factory=dict)
    #: ``'cpu'``, ``'cuda:1'``... (None: ``cuda:0`` when available, else the CPU).
    device: Any = None
    #: LibMTL's base result of the improvement (None: the first evaluated epoch).
    base_result: Optional[dict[str, Any]] = None
    #: Train only this task of ``task_dict`` (a single-task baseline).
    stl_task: Optional[str] = None
    #: bfloat16 autocast of forward passes and losses.
    amp: bool = False
    #: Per-task gradients: 'auto', 'batched', 'loop' or 'gramian' (None: the weighting's default;
    #: ``AbsWeighting.grad_method``, ``docs/performance.md``).
    grad_method: Optional[str] = None
    #: Bytes the ``[T, D]`` per-task gradient matrix may take before a method that needs only its
    #: Gramian switches to the Gramian path (None: a quarter of the device's free memory).
    grad_memory_budget: Optional[int] = None
    #: A non-finite loss/gradient: 'raise' or 'skip' the batch (``nonfinite.py``).
    nonfinite: str = "raise"
    #: The command line recorded in the checkpoints' metadata (None: ``sys.argv``).
    command: Optional[Sequence[str]] = None
    # logging (run_logger.py)
    diagnostics: bool = False
    diagnostics_every: int = 1
    tensorboard: bool = False
    log_dir: Optional[str] = None
    # data parallel (docs/distributed.md)
    sync_bn: bool = False
    distributed_check: bool = False
    #: Seed of the data-parallel streams (per-rank generators and the stream every rank shares,
    #: derived from ``(seed, epoch, rank)``; docs/distributed.md). Default: rank 0's
    #: ``torch.initial_seed()`` under torchrun, off in one process.
    seed: Optional[int] = None
    #: Components on the step protocol (``callbacks.Callback``), called after the built-in ones.
    callbacks: list[Any] = field(default_factory=list)
    #: Replace the run in a ``save_path`` that holds one (else a fresh run there is refused).
    overwrite: bool = False
    #: The printed per-epoch lines: 'rgb' (ours) or 'libmtl' (LibMTL's exact lines, for log parsers).
    log_format: str = "rgb"
    #: Write ``last.pt`` every this many epochs (and always after the last epoch).
    save_every: int = 1
    #: The training configuration recorded in ``last.pt`` (e.g. an example's parsed flags,
    #: ``{'--lr': 0.001, ...}``); ``resume`` refuses a run whose configuration differs.
    run_config: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        if self.nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {self.nonfinite!r}")
        if self.grad_method is not None and self.grad_method not in GRAD_METHODS:
            raise ValueError(f"grad_method must be one of {GRAD_METHODS} or None, got {self.grad_method!r}")
        budget = self.grad_memory_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ValueError(f"grad_memory_budget must be a number of bytes >= 0 or None, got {budget!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {LOG_FORMATS}, got {self.log_format!r}")
        if isinstance(self.save_every, bool) or not isinstance(self.save_every, int) or self.save_every < 1:
            raise ValueError(f"save_every must be an integer >= 1, got {self.save_every!r}")
        if isinstance(self.diagnostics_every, bool) or not isinstance(self.diagnostics_every, int) or self.diagnostics_every < 1:
            raise ValueError(f"diagnostics_every must be an integer >= 1, got {self.diagnostics_every!r}")
        for name in ("weight_args", "arch_args"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
            elif not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
            else:
                setattr(self, name, dict(value))
        self.callbacks = list(self.callbacks or [])
        wrong = [type(c).__name__ for c in self.callbacks if not isinstance(c, Callback)]
        if wrong:
            raise TypeError(f"callbacks must be LibMTL_rgb.callbacks.Callback instances; got {', '.join(wrong)}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "TrainerOptions":
        """The options of ``Trainer(**kwargs)``; ``TypeError`` naming each unknown key."""
        known = cls.names()
        unknown = [key for key in kwargs if key not in known]
        if unknown:
            lines = [f"unknown Trainer option {key!r}{suggestion(key, known)}" for key in unknown]
            raise TypeError("; ".join(lines) + f"; known options: {', '.join(known)}")
        return cls(**kwargs)


def suggestion(name: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` (``difflib``), else ``''``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_method_args(cls: type, args: Mapping[str, Any], option: str) -> None:
    """Refuse ``args`` keys that ``cls`` does not take and values outside the declared ranges,
    before any work. ``option``: ``'weight_args'`` or ``'arch_args'`` (names the message)."""
    declared = {hp.name: hp for hp in hyperparameters_of(cls)}
    if declared:
        known: Optional[list[str]] = list(declared)
    else:
        known = _keyword_names(cls, "backward" if option == "weight_args" else "__init__",
                               skip=2 if option == "weight_args" else 7)
    if known is not None:
        unknown = [key for key in args if key not in known]
        if unknown:
            accepted = ", ".join(known) or "none"
            raise ValueError("; ".join(f"{option}: {cls.__name__} has no option {key!r}{suggestion(key, known)}"
                                       for key in unknown) + f" (its options: {accepted})")
    for key, value in args.items():
        hp = declared.get(key)
        if hp is None:
            continue
        try:
            hp.check(value)
        except ValueError:
            raise ValueError(f"{option}[{key!r}] of {cls.__name__} must be {hp.range_text()}, got {value!r}") from None
        if hp.choices is not None and value not in hp.choices and not isinstance(value, (list, tuple)):
            raise ValueError(f"{option}[{key!r}] of {cls.__name__} must be one of {list(hp.choices)}, got {value!r}")


def _keyword_names(cls: type, method: str, skip: int) -> Optional[list[str]]:
    """The keyword parameters of ``cls.<method>`` after the first ``skip`` ones, or None when
    it takes ``**kwargs`` (or has no inspectable signature): any key is accepted then."""
    function = getattr(cls, method, None)
    if function is None:
        return None
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters[skip:] if p.kind in kinds]
