"""NYUv2 as preprocessed by MTAN (Liu et al., CVPR 2019), the copy LibMTL and ConsMTL use.

Layout (``ROOT`` is ``--dataset_path``)::

    ROOT/train/image/<i>.npy    288×384×3 float32, RGB in [0, 1]
    ROOT/train/label/<i>.npy    288×384 float, class 0..12, -1 = unlabelled pixel
    ROOT/train/depth/<i>.npy    288×384×1 float32, metres, 0 = no measurement
    ROOT/train/normal/<i>.npy   288×384×3 float32, unit normals (x first), 0 = none
    ROOT/val/...                the same for the 654 evaluation images (795 for training)
"""
from __future__ import annotations

from typing import Optional, Sequence

from LibMTL_rgb_examples import example_runner
from LibMTL_rgb_examples.dense_augment import CLASS_MAP, DEPTH, NORMAL, DenseAugmentation
from LibMTL_rgb_examples.dense_data import DatasetFormatError, MTANNpyDataset, NpyTarget

NUM_CLASSES = 13
NATIVE_SIZE = (288, 384)
TARGETS = {
    "segmentation": NpyTarget(("label",), CLASS_MAP, num_classes=NUM_CLASSES),
    "depth": NpyTarget(("depth",), DEPTH, channels=1),
    "normal": NpyTarget(("normal",), NORMAL, channels=3),
}
#: Output channels of each task's head.
TASK_OUTPUTS = {"segmentation": NUM_CLASSES, "depth": 1, "normal": 3}
REQUIRED = [f"{split}/{folder}" for split in ("train", "val") for folder in ("image", "label", "depth", "normal")]
HOW_TO_GET = (
    "Download MTAN's preprocessed NYUv2 (nyuv2.zip, linked from https://github.com/lorenmt/mtan, "
    "also used by LibMTL's examples/nyu), unzip it and pass the folder that holds train/ and val/ "
    "(each with image/, label/, depth/, normal/ of <i>.npy files) as --dataset_path."
)


def nyu_split(root: Optional[str], split: str, img_size: Optional[Sequence[int]] = None, augment: bool = False,
              resize_labels: bool = False) -> MTANNpyDataset:
    """The ``'train'`` or ``'val'`` split; exits with download instructions when ``root`` is
    missing or malformed. ``augment``: MTAN's random scale-crop (1.0/1.2/1.5) + flip;
    ``resize_labels``: see :class:`MTANNpyDataset`."""
    root = example_runner.require_dataset("NYUv2", root, REQUIRED, HOW_TO_GET)
    try:
        return MTANNpyDataset(root, split, TARGETS, img_size=img_size, augmentation=DenseAugmentation() if augment else None,
                              resize_labels=resize_labels)
    except DatasetFormatError as err:
        raise SystemExit(f"NYUv2: {err}\n{HOW_TO_GET}") from None
