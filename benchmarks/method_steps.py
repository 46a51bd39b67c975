"""Training steps of every gradient method, ours next to LibMTL's on the same model (issue 23).

A step is what each Trainer's loop runs: forward, the stacked task losses, ``zero_grad``,
``model.backward(losses)``, ``optimizer.step()``; ours also runs the Trainer's non-finite guard
(the losses before ``backward``, every gradient after it). LibMTL's side is the LibMTL on the
path (``import LibMTL``; PyPI 1.1.5 has MGDA, PCGrad, GradVac, CAGrad of the methods below,
LibMTL main on GitHub has all but RGB: put a checkout's folder first on ``PYTHONPATH``): its
``HPS`` composed with its weighting as its Trainer does (``class MTLmodel(HPS, Weighting)``),
with the same encoder, heads, seed and batch, gradients zeroed as on torch < 2.0 (1.1.5's
``_reset_grad`` writes into existing ``.grad``; its CAGrad solves for 3 tasks only, so it is
compared at ``--tasks 3`` only). Without a LibMTL counterpart a method is compared with the per-task-gradient floor: the [T, D] gradients
by our default path, their non-finite check and the write-back of their sum, no aggregation.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.nonfinite import NonFiniteGuard
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

#: The gradient methods timed (GradDrop is left out: LibMTL runs it on ``rep_grad`` only).
METHODS = ("MGDA", "PCGrad", "GradVac", "CAGrad", "IMTL", "Nash_MTL", "Aligned_MTL", "UPGrad", "FairGrad",
           "DB_MTL", "MoCo", "ExcessMTL", "RGB")
#: LibMTL's ``weight_args`` (its defaults) for its versions of them: 1.1.5's names and LibMTL
#: main's (GradVac's ``beta`` became ``GradVac_beta``; extra keywords are ignored).
LIBMTL_ARGS: dict[str, dict[str, Any]] = {
    "MGDA": {"mgda_gn": "none"}, "GradVac": {"beta": 0.5, "GradVac_beta": 0.5, "GradVac_group_type": 0},
    "CAGrad": {"calpha": 0.5, "rescale": 1}, "UPGrad": {"UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4},
    "Nash_MTL": {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0}, "FairGrad": {"FairGrad_alpha": 1.0},
    "DB_MTL": {"DB_beta": 0.9, "DB_beta_sigma": 0}, "ExcessMTL": {"robust_step_size": 1e-2},
    "MoCo": {"MoCo_beta": 0.5, "MoCo_beta_sigma": 0.5, "MoCo_gamma": 0.1, "MoCo_gamma_sigma": 0.5, "MoCo_rho": 0},
}
FLOOR = "per-task-gradient floor"


class PerTaskGradientFloor(AbsWeighting):
    """The cost every gradient method shares: G ([T, D]) by the default path, its non-finite
    check, and ``Σ_t g_t`` written back (no aggregation)."""

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        grads = self._get_grads(losses, mode="backward")
        self._raise_if_nonfinite(losses, grads)
        self._backward_new_grads(torch.ones(self.task_num), grads=grads)
        return np.ones(self.task_num)


def libmtl_weighting(name: str) -> Optional[type]:
    """LibMTL's weighting class ``name`` when a LibMTL is importable and has it, else None."""
    if importlib.util.find_spec("LibMTL") is None:
        return None
    from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

    ensure_torchvision_models_utils()
    import LibMTL.weighting

    found = getattr(LibMTL.weighting, name, None)
    return found if name != "RGB" else None  # an RGB registered into LibMTL is ours


def libmtl_version() -> str:
    """The installed LibMTL's version, or the folder of the source checkout imported instead."""
    from importlib.metadata import PackageNotFoundError, distribution
    from pathlib import Path

    import LibMTL

    imported = Path(LibMTL.__file__).resolve().parent
    try:
        dist = distribution("LibMTL")
        if Path(str(dist.locate_file("LibMTL"))).resolve() == imported:
            return dist.version
    except PackageNotFoundError:
        pass
    return f"source checkout {imported.parent}"


def libmtl_step(weighting: type, encoder_class: Callable[[], nn.Module],
                decoders: nn.ModuleDict, task_name: list[str], losses_of: Callable[[nn.Module], Tensor],
                seed: int, lr: float = 1e-3) -> Callable[[], None]:
    """One LibMTL training step (``Trainer.train``'s body) of ``HPS`` + ``weighting``."""
    import LibMTL.architecture

    class MTLmodel(LibMTL.architecture.HPS, weighting):  # LibMTL's Trainer._prepare_model
        def __init__(self) -> None:
            super().__init__(task_name, encoder_class, decoders, False, False, torch.device("cpu"))
            self.init_param()

        def zero_grad_share_params(self) -> None:  # as on torch < 2.0, which 1.1.5's _reset_grad needs
            self.encoder.zero_grad(set_to_none=False)

    torch.manual_seed(seed)
    model = MTLmodel()
    model.epoch, model.epochs = 0, 1
    model.train_loss_buffer = np.zeros((len(task_name), 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step() -> None:
        losses = losses_of(model)
        optimizer.zero_grad(set_to_none=False)  # torch < 2.0's default, which 1.1.5 was written for
        model.backward(losses, **LIBMTL_ARGS.get(weighting.__name__, {}))
        optimizer.step()

    return step


def our_step(model: nn.Module, task_name: list[str], losses_of: Callable[[nn.Module], Tensor],
             lr: float = 1e-3) -> Callable[[], None]:
    """One step of our Trainer's loop, the non-finite guard included (``trainer.py``)."""
    guard = NonFiniteGuard("raise")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step() -> None:
        losses = losses_of(model)
        if guard.losses_problem(losses, task_name) is not None:
            raise FloatingPointError("non-finite loss")
        optimizer.zero_grad()
        model.backward(losses)
        if guard.gradients_problem(model, task_name) is not None:
            raise FloatingPointError("non-finite gradient")
        optimizer.step()

    return step
