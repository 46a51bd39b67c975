"""The earlier reliability cases of docs/reliability.md that no other test file covers: an
empty split, an empty training loader and a huge loss scale."""
import math
import re

import numpy as np

import pytest
import torch

import synthetic
from example_loading import load_example
from LibMTL_rgb import Trainer
from LibMTL_rgb.loss import MSELoss
from test_example_nyu import SIZE, TINY_MODEL, write_nyu

T = 2


class ScaledMSE(MSELoss):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def compute_loss(self, pred, gt):
        return self.scale * super().compute_loss(pred, gt)


def test_an_empty_split_names_the_folder(tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 0, "val": 2})
    with pytest.raises(SystemExit, match=r"train/image holds no <number>\.npy files"):
        load_example("nyu")[0].main(["--dataset_path", str(root), "--img_size", *map(str, SIZE), *TINY_MODEL])


def test_an_empty_training_loader_is_refused():
    torch.manual_seed(0)
    trainer = Trainer(synthetic.task_dict(T), "EW", "HPS", synthetic.encoder_class, synthetic.decoders(T), False,
                      False, {"optim": "adam", "lr": 1e-3}, device="cpu")
    train, test = synthetic.loaders(T, train_size=0)
    with pytest.raises(ValueError, match="the training dataloader is empty"):
        trainer.train(train, test, epochs=1)


@pytest.mark.parametrize("weighting", ["EW", "DWA", "RGB", "MGDA"])
def test_a_huge_loss_scale_trains_without_overflow(weighting):
    """Losses 1e12 times larger (gradients ~1e12, Adam's second moment ~1e24: inside float32)."""
    task_dict = synthetic.task_dict(T)
    for spec in task_dict.values():
        spec["loss_fn"] = ScaledMSE(1e12)
    torch.manual_seed(0)
    trainer = Trainer(task_dict, weighting, "HPS", synthetic.encoder_class, synthetic.decoders(T), False, False,
                      {"optim": "adam", "lr": 1e-2}, device="cpu")
    trainer.train(*synthetic.loaders(T, train_size=64), epochs=3)
    for value in trainer.model.state_dict().values():
        assert torch.isfinite(value.float()).all()
    first, last = [row for row in trainer.meter.history if row["mode"] == "test"][::2]
    for task in trainer.task_name:
        assert math.isfinite(last[f"{task}_loss"]) and last[f"{task}_loss"] < first[f"{task}_loss"]


def test_nan_in_the_data_ends_an_example_run_with_one_line(tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 4, "val": 2})
    image = np.load(root / "train" / "image" / "2.npy")  # (NaN depth is read as a missing value, masked)
    np.save(root / "train" / "image" / "2.npy", np.full_like(image, np.nan))
    argv = ["--dataset_path", str(root), "--img_size", *map(str, SIZE), *TINY_MODEL, "--weighting", "EW",
            "--epochs", "2", "--bs", "2", "--save_path", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        load_example("nyu")[0].main(argv)
    message = str(info.value.code)
    assert "error: non-finite loss of task 'segmentation' (nan)" in message and "\n" not in message
    assert re.search(r"at epoch 0, batch [01]: training stopped before updating the model", message)
    assert not (tmp_path / "run" / "best.pt").exists()  # no epoch finished: nothing written, nothing NaN
