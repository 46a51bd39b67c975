"""``register()`` into PyPI LibMTL 1.1.5 whatever the script's import order, and LibMTL's own
``Trainer`` with ``--weighting RGB`` on a machine without CUDA, with plain DataLoaders.

The names below are bound the way a LibMTL script binds them, at import, before any
``register()`` call of this test session."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

if importlib.util.find_spec("LibMTL") is None:
    pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)", allow_module_level=True)

from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils  # noqa: E402

ensure_torchvision_models_utils()  # torchvision >= 0.13 lacks the module LibMTL 1.1.5 imports

import LibMTL.weighting as weighting_method  # noqa: E402
from LibMTL import Trainer  # noqa: E402
from LibMTL.architecture import HPS  # noqa: E402
from LibMTL.config import LibMTL_args, prepare_args  # noqa: E402
from LibMTL.loss import CELoss  # noqa: E402
from LibMTL.metrics import AccMetric  # noqa: E402

from LibMTL_rgb.integrations.libmtl import register  # noqa: E402

TASKS = ("a", "b")


class _Toy(Dataset):
    def __init__(self, size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, 6, generator=gen)
        self.y = {t: torch.randint(0, 3, (size,), generator=gen) for t in TASKS}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {t: self.y[t][i] for t in TASKS}


def test_names_bound_before_register_learn_rgb():
    register()
    params = LibMTL_args.parse_args(["--weighting", "RGB", "--rgb_steps", "3", "--lr", "0.05"])
    kwargs, optim_param, scheduler_param = prepare_args(params)  # the function bound at import
    assert kwargs["weight_args"]["rgb_steps"] == 3
    assert optim_param == {"optim": "adam", "lr": 0.05, "weight_decay": 1e-5}
    assert prepare_args(LibMTL_args.parse_args(["--weighting", "DWA"]))[0]["weight_args"] == {"T": 2.0}
    with pytest.raises(ValueError, match="No support weighting method Nope"):  # LibMTL's own checks still run
        prepare_args(LibMTL_args.parse_args(["--weighting", "Nope"]))


def test_libmtl_trainer_runs_rgb_without_cuda_and_with_plain_dataloaders(capsys):
    register()
    params = LibMTL_args.parse_args(["--weighting", "RGB", "--rgb_steps", "3", "--lr", "0.05"])
    kwargs, optim_param, scheduler_param = prepare_args(params)
    torch.manual_seed(0)
    trainer = Trainer(
        task_dict={t: {"metrics": ["acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]} for t in TASKS},
        weighting=weighting_method.__dict__[params.weighting], architecture=HPS,
        encoder_class=lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh()),
        decoders=nn.ModuleDict({t: nn.Linear(5, 3) for t in TASKS}), rep_grad=False, multi_input=False,
        optim_param=optim_param, scheduler_param=scheduler_param, **kwargs,
    )
    if not torch.cuda.is_available():
        assert trainer.device == torch.device("cpu")
        assert "runs on the CPU" in capsys.readouterr().out
    weights = trainer.train(DataLoader(_Toy(12, 0), batch_size=4), DataLoader(_Toy(8, 1), batch_size=4), epochs=2,
                            return_weight=True)
    np.testing.assert_array_equal(weights, np.ones((2, 2, 3)))
    assert int(trainer.model.rgb_step_count) == 6
