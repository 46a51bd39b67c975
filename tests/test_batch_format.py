"""A batch in the wrong format fails with an error that states the expected format."""
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb import Trainer
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric


def tiny_trainer() -> Trainer:
    tasks = {t: {"metrics": ["L1"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in ("a", "b")}
    decoders = nn.ModuleDict({t: nn.Linear(4, 1) for t in tasks})
    return Trainer(tasks, "EW", "HPS", lambda: nn.Linear(4, 4), decoders, False, False,
                   {"optim": "sgd", "lr": 0.1}, device="cpu")


def test_labels_that_are_not_a_dict_name_the_batch_format():
    batch = (torch.randn(2, 4), torch.randn(2, 1))
    with pytest.raises(TypeError, match=r"\(inputs, \{task: labels\}\).*labels are a Tensor"):
        tiny_trainer().train([batch], [batch], epochs=1)


def test_labels_missing_a_task_name_it():
    batch = (torch.randn(2, 4), {"a": torch.randn(2, 1)})
    with pytest.raises(KeyError, match=r"lack task\(s\) \['b'\]"):
        tiny_trainer().train([batch], [batch], epochs=1)


def test_right_format_trains():
    batch = (torch.randn(2, 4), {"a": torch.randn(2, 1), "b": torch.randn(2, 1)})
    trainer = tiny_trainer()
    trainer.train([batch], [batch], epochs=1)
    assert trainer.meter.best_result["epoch"] == 0
