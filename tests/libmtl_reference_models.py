"""PyPI LibMTL 1.1.5's weightings on the Jacobian model of ``jacobian_model.py`` (same
encoder and decoders, LibMTL's HPS), for oracle tests. Tests using it are skipped when
LibMTL is not installed."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn as nn

from jacobian_model import LinearLoss, SharedVector


def libmtl_weighting(name: str) -> type:
    """LibMTL 1.1.5's weighting class ``name`` (skips the test when LibMTL is absent)."""
    if importlib.util.find_spec("LibMTL") is None:
        pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)")
    # LibMTL 1.1.5's model/resnet.py imports torchvision.models.utils (gone since torchvision 0.13).
    if "torchvision.models.utils" not in sys.modules and importlib.util.find_spec("torchvision.models.utils") is None:
        stand_in = types.ModuleType("torchvision.models.utils")
        stand_in.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        sys.modules["torchvision.models.utils"] = stand_in
    return getattr(importlib.import_module("LibMTL.weighting"), name)


def libmtl_model(name: str, G: torch.Tensor, offsets: list[float]) -> nn.Module:
    """LibMTL's ``MTLmodel(HPS, <name>)`` whose task ``i`` has loss ``offsets[i]`` and gradient ``G[i]``."""
    weighting = libmtl_weighting(name)
    from LibMTL.architecture import HPS

    tasks = [f"t{i}" for i in range(len(G))]
    decoders = nn.ModuleDict({t: LinearLoss(G[i], offsets[i]) for i, t in enumerate(tasks)})

    class MTLmodel(HPS, weighting):
        def __init__(self) -> None:
            super().__init__(tasks, lambda: SharedVector(G.shape[1]), decoders, False, False, torch.device("cpu"))
            self.init_param()

        def zero_grad_share_params(self) -> None:
            # LibMTL 1.1.5 calls encoder.zero_grad(), which zeroed in place before torch 2.0 and
            # now sets None, which its _reset_grad cannot write into: restore the old behaviour.
            self.encoder.zero_grad(set_to_none=False)

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # LibMTL's own tensors (IMTL's loss_scale...) in float64
    try:
        return MTLmodel()
    finally:
        torch.set_default_dtype(previous)


def libmtl_step(model: nn.Module, **weight_args) -> tuple[Optional[np.ndarray], torch.Tensor]:
    """One forward + LibMTL ``backward`` in float64 (LibMTL allocates its gradient matrix in
    the default dtype): (returned weights, shared gradient [D])."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model.encoder.theta.grad = None
        out = model(torch.zeros(1, 1, dtype=torch.float64))
        losses = torch.stack([out[t] for t in model.task_name])
        weights = model.backward(losses, **weight_args)
    finally:
        torch.set_default_dtype(previous)
    return (None if weights is None else np.asarray(weights)), model.encoder.theta.grad.reshape(-1).clone()
