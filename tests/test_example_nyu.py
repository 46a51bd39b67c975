"""examples/nyu: one CPU epoch on a tiny dataset in MTAN's on-disk format, evaluation of the
saved model, and the messages for a missing dataset or missing ImageNet weights."""
import math
from pathlib import Path

import numpy as np
import pytest

from LibMTL_rgb.model import SegNetEncoder

from example_loading import load_example

TINY_MODEL = ["--no_pretrained", "--backbone_depth", "18", "--backbone_width", "8", "--device", "cpu"]
SIZE = (32, 48)


@pytest.fixture(scope="module")
def nyu_main():
    return load_example("nyu")[0].main


def write_nyu(root: Path, samples: dict, size=SIZE, seed: int = 0) -> Path:
    """MTAN's NYUv2 layout: <split>/{image,label,depth,normal}/<i>.npy."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in samples.items():
        for folder in ("image", "label", "depth", "normal"):
            (root / split / folder).mkdir(parents=True)
        for i in range(count):
            label = rng.integers(0, 13, (h, w)).astype(np.float32)
            label[0] = -1
            depth = rng.uniform(0.5, 5.0, (h, w, 1)).astype(np.float32)
            depth[:, 0] = 0
            normal = rng.normal(size=(h, w, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[-1] = 0
            np.save(root / split / "image" / f"{i}.npy", rng.random((h, w, 3), dtype=np.float32))
            np.save(root / split / "label" / f"{i}.npy", label)
            np.save(root / split / "depth" / f"{i}.npy", depth)
            np.save(root / split / "normal" / f"{i}.npy", normal)
    return root


def test_train_one_epoch_then_evaluate_saved_model(nyu_main, tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 4, "val": 3})
    common = ["--dataset_path", str(root), "--img_size", *map(str, SIZE), *TINY_MODEL, "--weighting", "RGB", "--arch", "HPS"]
    trainer = nyu_main([*common, "--epochs", "1", "--bs", "2", "--eval_bs", "2", "--aug", "--save_path", str(tmp_path / "run")])

    assert trainer.model.rgb_diagnostics["steps"] == 5  # the paper's NYUv2 K
    rows = {row["mode"]: row for row in trainer.meter.history}
    assert set(rows) == {"train", "test"}
    test_row = rows["test"]
    for key in ("segmentation_mIoU", "segmentation_pixAcc", "depth_abs_err", "depth_rel_err", "normal_mean",
                "normal_median", "normal_<11.25", "normal_<22.5", "normal_<30"):
        assert math.isfinite(test_row[key]), key
    assert 0 <= test_row["segmentation_pixAcc"] <= 1 and 0 <= test_row["normal_mean"] <= 180
    assert (tmp_path / "run" / "best.pt").is_file()

    evaluated = nyu_main([*common, "--mode", "test", "--load_path", str(tmp_path / "run")])
    (again,) = evaluated.meter.history
    for key in ("segmentation_mIoU", "depth_abs_err", "normal_median"):
        assert again[key] == pytest.approx(test_row[key], rel=1e-5), key


def test_one_epoch_of_mtan_on_the_segnet_backbone(nyu_main, tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 2, "val": 2})
    trainer = nyu_main(["--dataset_path", str(root), "--img_size", *map(str, SIZE), "--backbone", "segnet",
                        "--backbone_width", "4", "--device", "cpu", "--arch", "MTAN", "--epochs", "1", "--bs", "2"])

    assert isinstance(trainer.model.encoder, SegNetEncoder)
    assert len(trainer.model.attention["normal"]) == 5  # one mask per SegNet block
    test_row = next(row for row in trainer.meter.history if row["mode"] == "test")
    for key in ("segmentation_mIoU", "depth_abs_err", "normal_mean"):
        assert math.isfinite(test_row[key]), key


def test_missing_dataset_says_what_to_download(nyu_main, tmp_path):
    with pytest.raises(SystemExit, match="nyuv2.zip"):
        nyu_main(["--dataset_path", str(tmp_path / "absent"), *TINY_MODEL])


def test_malformed_dataset_names_the_bad_file(nyu_main, tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 2, "val": 1})
    np.save(root / "val" / "normal" / "0.npy", np.zeros((*SIZE, 2), dtype=np.float32))
    with pytest.raises(SystemExit, match=r"normal/0.npy has shape \(32, 48, 2\); expected H×W×3"):
        nyu_main(["--dataset_path", str(root), *TINY_MODEL])


def test_missing_imagenet_weights_say_where_to_put_them(nyu_main, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root = write_nyu(tmp_path / "nyuv2", {"train": 2, "val": 1})
    with pytest.raises(SystemExit, match=r"(?s)Download https://download.pytorch.org/models/resnet18.*--no_pretrained"):
        nyu_main(["--dataset_path", str(root), "--img_size", *map(str, SIZE), "--bs", "2", "--backbone_depth", "18", "--device", "cpu"])
