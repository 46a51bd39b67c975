"""Checkpoint files: what they hold, how they are read back, and one clear message when a
checkpoint does not fit the run that loads it.

Two files per run directory (``save_path``):

- ``best.pt``: the model's ``state_dict`` at the best epoch. It stays a plain ``state_dict``
  (LibMTL code can ``model.load_state_dict(torch.load('best.pt'))``); the run's metadata rides
  along as an attribute of that ``OrderedDict`` (:data:`METADATA_ATTRIBUTE`, kept by pickling,
  ignored by ``load_state_dict``).
- ``last.pt``: everything needed to continue exactly (model, optimiser, scheduler, meter,
  loss history, RNG states, epoch) and the metadata under the key ``"metadata"``.

The metadata (:func:`run_metadata`) names the weighting, the architecture, the tasks, the
library and torch versions and the command line. :func:`check_compatible` compares it with
the run that loads the file and names what differs ("checkpoint ... was trained with
--weighting RGB; you passed EW") instead of PyTorch's list of missing/unexpected keys.
"""
from __future__ import annotations

import os
import shlex
import sys
from collections import OrderedDict
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
#: Attribute of ``best.pt``'s ``OrderedDict`` that carries the run's metadata.
METADATA_ATTRIBUTE = "libmtl_rgb_metadata"
#: Keys every ``last.pt`` (training state) has.
TRAINING_STATE_KEYS = ("epoch", "model", "optimizer")
#: Metadata entries compared when a checkpoint is loaded, with the flag that sets each.
COMPARED = (("weighting", "--weighting"), ("architecture", "--arch"), ("tasks", "tasks"))

__all__ = [
    "CheckpointError", "MissingCheckpointError", "BEST_CHECKPOINT", "LAST_CHECKPOINT", "run_metadata", "with_metadata", "read_checkpoint",
    "read_training_state", "read_model_weights", "metadata_of", "check_compatible", "load_model_state",
    "grow_loss_buffer", "check_same_config", "config_differences",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the run loading it."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """No checkpoint file where one was expected."""


def method_name(method: "str | type") -> str:
    """The registered name of a weighting/architecture given by name or class."""
    return method if isinstance(method, str) else method.__name__


def run_metadata(weighting: "str | type", architecture: "str | type", tasks: Sequence[str],
                 command: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """What identifies a run: weighting, architecture, tasks, versions and the command line
    (``sys.argv`` by default)."""
    from LibMTL_rgb import __version__

    return {
        "weighting": method_name(weighting),
        "architecture": method_name(architecture),
        "tasks": list(tasks),
        "library_version": __version__,
        "torch_version": str(torch.__version__),
        "command": shlex.join(sys.argv if command is None else command),
    }


def with_metadata(state_dict: Mapping[str, Any], metadata: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """``state_dict`` (still a plain state dict) carrying ``metadata`` as an attribute."""
    out = state_dict if isinstance(state_dict, OrderedDict) else OrderedDict(state_dict)
    setattr(out, METADATA_ATTRIBUTE, dict(metadata))
    return out


def metadata_of(checkpoint: Any) -> Optional[dict[str, Any]]:
    """The metadata of a loaded ``best.pt`` or ``last.pt`` (None for files written without it)."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("metadata"), Mapping):
        return dict(checkpoint["metadata"])
    found = getattr(checkpoint, METADATA_ATTRIBUTE, None)
    return dict(found) if isinstance(found, Mapping) else None


def read_checkpoint(path: str, device: "torch.device | str" = "cpu") -> Any:
    """``torch.load(path)``; a missing file, a file that is not a checkpoint (or is truncated)
    raises :class:`CheckpointError` naming the file."""
    if not os.path.isfile(path):
        raise MissingCheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # pickle/zip errors of every kind: the message is what matters
        raise CheckpointError(
            f"{path} is not a checkpoint this library can read (torch.load failed: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); it may be truncated or another kind of file"
        ) from None


def read_training_state(path: str, device: "torch.device | str" = "cpu") -> dict[str, Any]:
    """The training state in ``path`` (a ``last.pt`` or a run directory holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, LAST_CHECKPOINT)
    if not os.path.isfile(path):
        raise MissingCheckpointError(f"no checkpoint to resume from at {path} (give a last.pt or the run directory holding it)")
    state = read_checkpoint(path, device)
    if not isinstance(state, Mapping) or any(key not in state for key in TRAINING_STATE_KEYS):
        kind = "model weights (a state_dict, like best.pt)" if _looks_like_state_dict(state) else type(state).__name__
        raise CheckpointError(f"{path} holds {kind}, not a training state: resume needs a {LAST_CHECKPOINT}")
    state = dict(state)
    state["path"] = path
    return state


def read_model_weights(path: str, device: "torch.device | str" = "cpu") -> tuple[Mapping[str, Any], Optional[dict], str]:
    """``(state_dict, metadata, file)`` from a weights file, a ``last.pt`` or a directory
    holding ``best.pt``."""
    if os.path.isdir(path):
        path = os.path.join(path, BEST_CHECKPOINT)
    if not os.path.isfile(path):
        raise MissingCheckpointError(f"no model weights at {path} (expected a .pt file or a directory with {BEST_CHECKPOINT})")
    state = read_checkpoint(path, device)
    metadata = metadata_of(state)
    if isinstance(state, Mapping) and all(key in state for key in TRAINING_STATE_KEYS):
        state = state["model"]
    if not _looks_like_state_dict(state):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(state).__name__}, not model weights")
    return state, metadata, path


def check_compatible(metadata: Optional[Mapping[str, Any]], expected: Mapping[str, Any], path: str) -> None:
    """Raise :class:`CheckpointError` naming each entry of :data:`COMPARED` in which the
    checkpoint's ``metadata`` differs from the run's ``expected`` (nothing to compare without
    metadata)."""
    if not metadata:
        return
    differences = []
    for key, flag in COMPARED:
        theirs, ours = metadata.get(key), expected.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            shown = (lambda v: ",".join(v)) if key == "tasks" else str
            differences.append(f"{flag} {shown(theirs)}; you passed {shown(ours)}")
    if differences:
        raise CheckpointError(f"checkpoint {path} was trained with " + " and with ".join(differences)
                              + (f" (its command: {metadata['command']})" if metadata.get("command") else ""))


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per entry that differs between a checkpoint's training configuration and the
    run's (``Trainer.training_config``): the caller's ``run_config`` entries (an example's
    flags, named as given) when both have one, else the optimiser, scheduler and method
    options (``optim_param['lr']``...)."""
    if saved.get("run_config") is not None and current.get("run_config") is not None:
        pairs = [(str(key), saved["run_config"], current["run_config"], key) for key in
                 dict.fromkeys([*saved["run_config"], *current["run_config"]])]
    else:
        pairs = []
        for group in ("optim_param", "scheduler_param", "weight_args", "arch_args"):
            theirs, ours = saved.get(group), current.get(group)
            if theirs is None or ours is None:
                pairs.append((group, {group: theirs}, {group: ours}, group))
                continue
            pairs += [(f"{group}[{key!r}]", theirs, ours, key) for key in dict.fromkeys([*theirs, *ours])]
    missing = object()
    lines = []
    for label, theirs, ours, key in pairs:
        a, b = theirs.get(key, missing), ours.get(key, missing)
        if a is missing and b is missing or _same(a, b):
            continue
        shown = [("(not set)" if v is missing else repr(v)) for v in (a, b)]
        lines.append(f"{label}: {shown[0]} in the checkpoint, {shown[1]} now")
    return lines


def check_same_config(saved: Optional[Mapping[str, Any]], current: Mapping[str, Any], path: str) -> None:
    """Raise :class:`CheckpointError` listing every :func:`config_differences` line (nothing
    to compare for a checkpoint written without a configuration)."""
    if not saved:
        return
    lines = config_differences(saved, current)
    if lines:
        raise CheckpointError(f"cannot resume {path} with another training configuration ({len(lines)} "
                              "difference(s); only the number of epochs may change):\n  " + "\n  ".join(lines))


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors/arrays: compare their values
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def load_model_state(model: torch.nn.Module, state_dict: Mapping[str, Any], path: str) -> None:
    """``model.load_state_dict(state_dict)`` with a one-line summary of missing, unexpected or
    differently shaped entries instead of PyTorch's full list. Modules that resize their own
    buffers on load (``weighting/state_buffers.py``) load as they are."""
    own = model.state_dict()
    try:
        model.load_state_dict(state_dict)
        return
    except RuntimeError:
        pass
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    for label, keys in (("missing from the file", missing), ("not in this model", unexpected),
                        ("of another shape (file vs model)", reshaped)):
        if keys:
            problems.append(f"{len(keys)} entries {label} (e.g. {', '.join(keys[:3])})")
    raise CheckpointError(f"checkpoint {path} does not fit this model: " + "; ".join(problems or ["it does not load"])
                          + ". Was it trained with other --weighting/--arch/model flags?")


def grow_loss_buffer(buffer: Optional[np.ndarray], task_num: int, epochs: int) -> np.ndarray:
    """The ``[task_num, epochs]`` per-epoch loss history: a fresh zero array, or ``buffer``
    with its columns kept (extended with zeros when ``epochs`` is larger, e.g. on resume)."""
    if buffer is None or np.ndim(buffer) != 2 or np.shape(buffer)[0] != task_num:
        return np.zeros([task_num, epochs])
    buffer = np.asarray(buffer)
    if buffer.shape[1] >= epochs:
        return buffer
    grown = np.zeros([task_num, epochs], dtype=buffer.dtype)
    grown[:, : buffer.shape[1]] = buffer
    return grown


def _looks_like_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())
