"""Where ImageNet checkpoints of the ResNet family are looked up, and how they load.

Nothing is ever downloaded. A checkpoint is found in the torch hub cache,
``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``), where ``torchvision`` / ``torch.hub`` put the files they
download, under any of these names, in this order:

1. the name LibMTL downloads (``LibMTL.model.resnet.model_urls``, torchvision's pre-0.13
   URLs, e.g. ``resnet50-19c8e357.pth``): the weights LibMTL's published runs start from;
2. today's torchvision names, ``IMAGENET1K_V1`` first (e.g. ``resnet50-0676ba61.pth``), then
   ``IMAGENET1K_V2`` (e.g. ``resnet50-11ad3fa6.pth``). V2 weights were trained with a newer
   recipe, so they are not the weights LibMTL starts from: loading one warns.

When none is there, ``FileNotFoundError`` names every accepted file, the URL to fetch and
the directory to put it in.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torchvision.models import get_model_weights

URL_ROOT = "https://download.pytorch.org/models/"
#: The checkpoint file each LibMTL factory downloads (torchvision < 0.13's file names).
LIBMTL_FILES: dict[str, str] = {
    "resnet18": "resnet18-5c106cde.pth",
    "resnet34": "resnet34-333f7ec4.pth",
    "resnet50": "resnet50-19c8e357.pth",
    "resnet101": "resnet101-5d3b4d8f.pth",
    "resnet152": "resnet152-b121ed2d.pth",
    "resnext50_32x4d": "resnext50_32x4d-7cdf4587.pth",
    "resnext101_32x8d": "resnext101_32x8d-8ba56ff5.pth",
    "wide_resnet50_2": "wide_resnet50_2-95faca4d.pth",
    "wide_resnet101_2": "wide_resnet101_2-32ee1156.pth",
}
LIBMTL_WEIGHTS = "LibMTL"
#: Weights that start from the same ImageNet training as LibMTL's file.
SAME_AS_LIBMTL = (LIBMTL_WEIGHTS, "IMAGENET1K_V1")


@dataclass(frozen=True)
class WeightFile:
    """One accepted checkpoint: its file name in the hub cache, its URL and which weights it
    holds (``'LibMTL'`` or torchvision's enum name, e.g. ``'IMAGENET1K_V2'``)."""

    name: str
    url: str
    weights: str


def checkpoint_dir() -> str:
    """The torch hub cache's checkpoint directory (honours ``$TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def weight_files(arch: str) -> list[WeightFile]:
    """Every accepted ImageNet checkpoint of ``arch`` (``'resnet50'``, ``'resnext50_32x4d'``
    ...), in lookup order, without duplicates."""
    if arch not in LIBMTL_FILES:
        raise ValueError(f"no ImageNet checkpoints known for {arch!r}; known: {', '.join(LIBMTL_FILES)}")
    files = [WeightFile(LIBMTL_FILES[arch], URL_ROOT + LIBMTL_FILES[arch], LIBMTL_WEIGHTS)]
    for weights in get_model_weights(arch):
        name = weights.url.rsplit("/", 1)[-1]
        if name not in {f.name for f in files}:
            files.append(WeightFile(name, weights.url, weights.name))
    return files


def find_weights(arch: str, weights_path: Optional[str] = None) -> tuple[str, WeightFile | None]:
    """``(path, which)`` of the checkpoint to load: ``weights_path`` when given (``which`` is
    None), else the first accepted file present in :func:`checkpoint_dir`."""
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"{arch} weights file {weights_path!r} does not exist")
        return weights_path, None
    directory = checkpoint_dir()
    files = weight_files(arch)
    for candidate in files:
        path = os.path.join(directory, candidate.name)
        if os.path.isfile(path):
            return path, candidate
    first = files[0]
    others = "; ".join(f"{f.name} ({f.url})" for f in files[1:])
    raise FileNotFoundError(
        f"no ImageNet weights for {arch}: looked for {[f.name for f in files]} in {directory}. "
        f"Download {first.url} (the file LibMTL uses) and save it as {os.path.join(directory, first.name)}; "
        f"torchvision's files work too, under their own names in the same directory: {others}. "
        f"Set TORCH_HOME to use another cache (<TORCH_HOME>/hub/checkpoints), or pass weights_path. "
        f"Nothing is downloaded automatically."
    )


def load_imagenet_weights(model: nn.Module, arch: str, weights_path: Optional[str] = None) -> str:
    """Load ``arch``'s ImageNet checkpoint into ``model`` (a headless torchvision-style ResNet):
    every key but the classifier's (``fc.*``) must match. Returns the file loaded."""
    path, which = find_weights(arch, weights_path)
    if which is not None and which.weights not in SAME_AS_LIBMTL:
        warnings.warn(f"{arch}: loading torchvision's {which.weights} weights ({which.name}), which differ from the "
                      f"ImageNet weights LibMTL starts from ({LIBMTL_FILES[arch]}, or torchvision's IMAGENET1K_V1)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a torchvision {arch} state_dict: {err}") from err
    return path
