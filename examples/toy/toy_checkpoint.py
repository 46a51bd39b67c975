"""Resuming the toy: with ``--save_path`` a ``last.pt`` records the finished starts after each
one; ``--resume`` (that file or its directory) skips them. Every start is seeded afresh
(``--seed``), so a resumed run ends with the same paths as an uninterrupted one; a start cut
off midway is run again from its beginning (a few seconds)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from LibMTL_rgb.atomic_io import atomic_save
from LibMTL_rgb.checkpoint import LAST_CHECKPOINT, CheckpointError, read_checkpoint, run_metadata

from toy_problem import TASKS
from toy_run import ToyRun

#: What a resumed toy run must share with the run it continues.
SETTINGS = ("weighting", "steps", "start_points", "scale", "loss_shift", "dtype", "seed", "optim_param", "weight_args")
#: How :data:`SETTINGS` are named in messages (flags where there is one).
LABELS = {"start_points": "--starts", "optim_param": "optimizer settings", "weight_args": "method options"}


def toy_settings(params: Any, optim_param: Mapping[str, Any], weight_args: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that determine the toy's paths (compared on resume)."""
    values = {key: getattr(params, key, None) for key in SETTINGS}
    values.update(start_points=[list(map(float, p)) for p in params.start_points], optim_param=dict(optim_param),
                  weight_args=dict(weight_args))
    return values


def save_toy_progress(save_path: str, settings: Mapping[str, Any], runs: list[ToyRun]) -> str:
    """Write ``last.pt`` (settings, metadata, the finished runs) into ``save_path``."""
    path = os.path.join(save_path, LAST_CHECKPOINT)
    atomic_save({"toy": True, "metadata": run_metadata(settings["weighting"], "HPS", list(TASKS)),
                 "settings": dict(settings), "runs": [dataclasses.asdict(run) for run in runs]}, path)
    return path


def load_toy_progress(path: str, settings: Mapping[str, Any]) -> list[ToyRun]:
    """The finished runs in a toy ``last.pt`` (or its directory); :class:`CheckpointError` when
    it is not a toy checkpoint or was made with other settings (naming them)."""
    if os.path.isdir(path):
        path = os.path.join(path, LAST_CHECKPOINT)
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not state.get("toy"):
        raise CheckpointError(f"{path} is not a toy checkpoint (written by examples/toy/main.py --save_path)")
    saved = state["settings"]
    differences = [f"{LABELS.get(key, '--' + key)} {saved.get(key)!r}; you passed {settings.get(key)!r}"
                   for key in SETTINGS if saved.get(key) != settings.get(key)]
    if differences:
        raise CheckpointError(f"checkpoint {path} was made with " + " and with ".join(differences))
    return [ToyRun(**run) for run in state["runs"]]
