"""Small helpers shared by the Trainer and the examples (LibMTL names)."""
from __future__ import annotations

import os
import random
import sys
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn


#: Environment variable that sets :func:`get_root_dir` explicitly.
ROOT_DIR_VARIABLE = "LIBMTL_ROOT_DIR"


def get_root_dir() -> str:
    """LibMTL's ``get_root_dir``: the project folder whose ``examples/`` hold the running example.

    LibMTL returns its checkout's root, and its examples read files relative to it
    (``os.path.join(get_root_dir(), 'examples/office', 'data_txt/...')``). Here that root is,
    in order: ``$LIBMTL_ROOT_DIR``; the parent of the ``examples`` folder that holds the
    running script (``python examples/office/main.py`` from a LibMTL checkout gives that
    checkout); the parent of an ``examples`` folder holding the working directory; else the
    folder that holds the ``LibMTL_rgb`` package (this repository's root in a checkout).
    """
    explicit = os.environ.get(ROOT_DIR_VARIABLE)
    if explicit:
        return os.path.abspath(explicit)
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    for start in ([os.path.dirname(os.path.abspath(script))] if script else []) + [os.getcwd()]:
        root = _examples_parent(start)
        if root is not None:
            return root
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples_parent(folder: str) -> Optional[str]:
    """The parent of the nearest folder named ``examples`` at or above ``folder``, if any."""
    while True:
        parent = os.path.dirname(folder)
        if os.path.basename(folder) == "examples":
            return parent
        if parent == folder:
            return None
        folder = parent


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); with CUDA, make cuDNN deterministic
    (LibMTL's ``set_random_seed``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def set_device(gpu_id: "str | int | None") -> None:
    """LibMTL's ``set_device``: expose only ``gpu_id`` to CUDA (no effect without CUDA)."""
    if gpu_id is not None and str(gpu_id) != "":
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_id)


def resolve_device(device: "str | torch.device | None" = None) -> torch.device:
    """The device to train on: ``device`` if given, else ``cuda:0`` when CUDA works, else CPU."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device} was asked for but CUDA is not available here; use 'cpu'")
        return device
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def count_parameters(model: nn.Module, verbose: bool = True) -> tuple[int, int]:
    """(total, trainable) parameter counts; ``verbose`` prints them as LibMTL's
    ``count_parameters`` does (which returns nothing)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if verbose:
        print("=" * 40)
        print("Total Params:", total)
        print("Trainable Params:", trainable)
        print("Non-trainable Params:", total - trainable)
    return total, trainable


def set_param(curr_mod: nn.Module, name: str, param=None, mode: str = "update"):
    """LibMTL's ``set_param``: on the submodule that the dotted ``name`` points to, replace
    the attribute (``mode='update'``: delete it, then set ``param``; a plain tensor may thus
    replace an ``nn.Parameter``, as functional inner-loop updates need) or return it
    (``mode='get'``; None when absent). A path through a missing child does nothing."""
    *path, leaf = name.split(".")
    module = curr_mod
    for child in path:
        found = dict(module.named_children()).get(child)
        if found is None:
            return None
        module = found
    if mode == "update":
        delattr(module, leaf)
        setattr(module, leaf, param)
        return None
    if mode == "get":
        return getattr(module, leaf, None)
    return None


def count_improvement(
    base_result: Mapping[str, Sequence[float]],
    new_result: Mapping[str, Sequence[float]],
    weight: Mapping[str, Sequence[int]],
) -> float:
    """LibMTL's improvement of ``new_result`` over ``base_result`` (a fraction, higher is better).

    For each task, the mean over its metrics of ``sign * (new - base) / base`` with sign +1 when
    ``weight`` says higher is better (1) and -1 otherwise (0); then the mean over tasks. It is
    ``-Δm% / 100`` of the paper's section 3.1 when ``base_result`` is the STL result.
    """
    total = 0.0
    for task, base in base_result.items():
        base_arr = np.asarray(base, dtype=float)
        new_arr = np.asarray(new_result[task], dtype=float)
        sign = np.where(np.asarray(weight[task]) == 1, 1.0, -1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = sign * (new_arr - base_arr) / base_arr
        total += float(np.nanmean(np.where(np.isfinite(rel), rel, np.nan))) if np.isfinite(rel).any() else 0.0
    return total / max(len(base_result), 1)
