"""examples/cityscapes: the official-release conversion (train ids, instance offsets,
disparity) on hand-made PNGs, one CPU epoch of --tasks 2 (MTAN .npy) and --tasks 3 (official
PNG trees), and the missing-dataset messages."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from example_loading import load_example

TINY_MODEL = ["--no_pretrained", "--backbone_depth", "18", "--backbone_width", "8", "--device", "cpu",
              "--weighting", "RGB", "--arch", "HPS"]
FULL = (64, 128)  # "full resolution" of the tiny official PNGs


@pytest.fixture(scope="module")
def example():
    """The example's modules (main, cityscapes_data, labels), imported from its folder."""
    return load_example("cityscapes", "cityscapes_data", "labels")


def official_sample(rng):
    """labelIds, instanceIds, raw disparity of one scene: road, a car (2 instances), sky."""
    h, w = FULL
    label = np.full((h, w), 7, dtype=np.uint8)  # road
    label[: h // 4] = 23  # sky
    instance = label.astype(np.uint16)
    label[20:40, 10:30] = 26
    instance[20:40, 10:30] = 26001
    label[30:50, 60:100] = 26
    instance[30:50, 60:100] = 26002
    label[:4] = 0  # unlabeled
    disparity = rng.integers(0, 20000, (h, w)).astype(np.uint16)
    disparity[:, :5] = 0
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, label, instance, disparity


def write_official(root: Path, samples: dict, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in samples.items():
        for tree in ("leftImg8bit", "gtFine", "disparity"):
            (root / tree / split / "aachen").mkdir(parents=True)
        for i in range(count):
            stem = f"aachen_{i:06d}_000019"
            image, label, instance, disparity = official_sample(rng)
            Image.fromarray(image).save(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png")
            Image.fromarray(label).save(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(instance).save(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_instanceIds.png")
            Image.fromarray(disparity).save(root / "disparity" / split / "aachen" / f"{stem}_disparity.png")
    return root


def write_mtan(root: Path, samples: dict, size=(32, 64), seed: int = 0) -> Path:
    """MTAN's copy, with the 7-class labels in label_7/ as in MTAN's own download."""
    rng = np.random.default_rng(seed)
    for split, count in samples.items():
        for folder in ("image", "label_7", "depth"):
            (root / split / folder).mkdir(parents=True)
        for i in range(count):
            np.save(root / split / "image" / f"{i}.npy", rng.random((*size, 3), dtype=np.float32))
            np.save(root / split / "label_7" / f"{i}.npy", rng.integers(-1, 7, size).astype(np.float32))
            np.save(root / split / "depth" / f"{i}.npy", rng.random((*size, 1), dtype=np.float32))
    return root


# --------------------------------------------------------------------- conversion
def test_label_ids_map_to_train_ids(example):
    _, _, labels = example
    lookup = labels.train_id_lookup()
    assert [lookup[i] for i in (0, 7, 23, 24, 26, 29, 33)] == [-1, 0, 10, 11, 13, -1, 18]
    assert sorted(lookup[lookup >= 0]) == list(range(labels.NUM_CLASSES))


def test_official_disparity_encoding(example):
    _, data, _ = example
    raw = np.array([0, 1, 257, 513], dtype=np.uint16)
    assert data.decode_disparity(raw, "px").tolist() == [0.0, 0.0, 1.0, 2.0]
    assert data.decode_disparity(raw, "align_mtl")[2] == pytest.approx(257 / 2729.0680031169923)


def test_instance_offsets_point_to_the_centroid(example):
    _, data, _ = example
    ids = np.full((4, 6), 26, dtype=np.int64)  # a car crowd without instance ids: no offsets
    ids[0:2, 0:2] = 26001  # centroid (0.5, 0.5)
    ids[1:4, 4] = 24003  # a person, centroid (2, 4)
    ids[3, 0] = 29001  # a caravan: not an evaluated class
    offsets = data.instance_offsets(ids, np.arange(4), np.arange(6))
    assert offsets.shape == (2, 4, 6)
    assert offsets[:, 0, 0].tolist() == [0.5, 0.5] and offsets[:, 1, 1].tolist() == [-0.5, -0.5]
    assert offsets[:, 1, 4].tolist() == [1.0, 0.0] and offsets[:, 3, 4].tolist() == [-1.0, 0.0]
    assert np.isnan(offsets[:, 3, 0]).all() and np.isnan(offsets[:, 2, 2]).all()
    assert np.isfinite(offsets[0]).sum() == 4 + 3

    coarse = data.instance_offsets(ids, np.array([1, 3]), np.array([1, 4]))  # sampled, full-res units
    assert coarse[:, 0, 0].tolist() == [-0.5, -0.5] and coarse[:, 1, 1].tolist() == [-1.0, 0.0]


def test_official_sample_conversion(example, tmp_path):
    _, data, _ = example
    root = write_official(tmp_path / "cityscapes", {"val": 1})
    dataset = data.CityscapesOfficial(str(root), "val", img_size=(32, 64), label_size=(16, 32))
    image, targets = dataset[0]
    assert image.shape == (3, 32, 64) and image.dtype == torch.float32
    seg, offsets, disparity = targets["segmentation"], targets["instance"], targets["disparity"]
    assert seg.shape == (16, 32) and offsets.shape == (2, 16, 32) and disparity.shape == (1, 16, 32)
    assert set(seg.unique().tolist()) == {-1, 0, 10, 13}
    assert torch.isfinite(offsets[0]).equal(seg == 13)  # offsets exactly on the cars
    # grid pixel (row 6, col 6) samples full-res (26, 26), in car 26001 (rows 20..39, cols 10..29)
    assert offsets[:, 6, 6].tolist() == [29.5 - 26, 19.5 - 26]
    _, label_png, _, raw = official_sample(np.random.default_rng(0))
    assert disparity[0, 6, 6].item() == pytest.approx(max(int(raw[26, 26]) - 1, 0) / 256)
    assert (disparity[0, :, :1] == 0).all()  # the invalid left columns stay invalid


# ----------------------------------------------------------------------- training
def test_three_tasks_train_one_epoch(example, tmp_path):
    main, _, _ = example
    root = write_official(tmp_path / "cityscapes", {"train": 4, "val": 2})
    trainer = main.main(["--tasks", "3", "--dataset_path", str(root), "--img_size", "32", "64", "--label_size", "16", "32",
                         "--disparity_unit", "align_mtl", "--aug", "--epochs", "1", "--bs", "2", *TINY_MODEL])
    assert trainer.model.rgb_diagnostics["steps"] == 50  # the paper's Cityscapes K
    assert trainer.kwargs["weight_args"]["rgb_lambda"] == 1.0
    test_row = [row for row in trainer.meter.history if row["mode"] == "test"][0]
    for key in ("segmentation_mIoU", "instance_L1_px", "disparity_MSE", "instance_loss"):
        assert math.isfinite(test_row[key]), key
    assert "segmentation_pixAcc" not in test_row  # Table 3 reports mIoU only


def test_two_tasks_train_one_epoch(example, tmp_path):
    main, _, _ = example
    root = write_mtan(tmp_path / "cityscapes2", {"train": 4, "val": 2})
    trainer = main.main(["--dataset_path", str(root), "--img_size", "32", "64", "--epochs", "1", "--bs", "2", *TINY_MODEL])
    test_row = [row for row in trainer.meter.history if row["mode"] == "test"][0]
    for key in ("segmentation_mIoU", "segmentation_pixAcc", "depth_abs_err", "depth_rel_err"):
        assert math.isfinite(test_row[key]), key


@pytest.mark.parametrize("tasks, hint", [("2", "lorenmt/mtan"), ("3", "gtFine_trainvaltest.zip")])
def test_missing_dataset_says_what_to_download(example, tmp_path, tasks, hint):
    main, _, _ = example
    with pytest.raises(SystemExit, match=hint):
        main.main(["--tasks", tasks, "--dataset_path", str(tmp_path), *TINY_MODEL])


def test_missing_disparity_file_is_named(example, tmp_path):
    main, _, _ = example
    root = write_official(tmp_path / "cityscapes", {"train": 2, "val": 1})
    next((root / "disparity" / "val" / "aachen").iterdir()).unlink()
    with pytest.raises(SystemExit, match="1 of 1 val images have no disparity.png"):
        main.main(["--tasks", "3", "--dataset_path", str(root), *TINY_MODEL])
