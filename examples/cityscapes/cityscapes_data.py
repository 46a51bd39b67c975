"""Cityscapes readers.

``--tasks 2`` (MTAN / LibMTL): the preprocessed copy, 128×256, 7-class segmentation + depth::

    ROOT/{train,val}/image/<i>.npy              128×256×3 float32, RGB in [0, 1]
    ROOT/{train,val}/label/<i>.npy              128×256, 7 classes, -1 = ignore (MTAN names it label_7)
    ROOT/{train,val}/depth/<i>.npy              128×256×1 float32, 0 = no measurement

``--tasks 3`` (the paper's Table 3, Align-MTL's setup, after Kendall et al. 2018): the
official release, 19-class segmentation + instance offsets + disparity::

    ROOT/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png     (leftImg8bit_trainvaltest.zip)
    ROOT/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      (gtFine_trainvaltest.zip)
    ROOT/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png
    ROOT/disparity/{train,val}/<city>/<city>_<seq>_<frame>_disparity.png         (disparity_trainvaltest.zip)

Conversion of one official sample (all label maps are computed at full resolution, then
sampled by nearest neighbour on the ``label_size`` grid; the image is resized bilinearly to
``img_size`` and normalised with the ImageNet mean/std of the torchvision backbone):

- segmentation: labelId -> trainId (19 classes), every other id -> -1 (``labels.py``);
- instance offsets ``[2, h, w]`` = (dy, dx): for a pixel of a "thing" instance
  (``instanceIds >= 1000`` of an evaluated class with instances: person, rider, car, truck,
  bus, train, motorcycle, bicycle), the vector from the pixel to its instance's centroid,
  ``centroid - pixel``, in pixels of the full-resolution (2048×1024) image; NaN elsewhere
  (stuff, void, crowd regions without instance ids). Align-MTL stores ``pixel - centroid``;
  the sign does not change the L1 metric;
- disparity ``[1, h, w]``: official encoding ``d = (p - 1) / 256`` pixels for ``p > 0`` and
  0 (invalid) for ``p = 0`` (``disparity_unit='px'``), or Align-MTL's normalisation
  ``p / 2729.07`` (``disparity_unit='align_mtl'``, the unit of the paper's Table 3 MSE).
"""
from __future__ import annotations

import glob
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from labels import INSTANCE_BASE, thing_label_ids, train_id_lookup
from LibMTL_rgb_examples import example_runner
from LibMTL_rgb_examples.dense_augment import CLASS_MAP, DEPTH, DISPARITY, OFFSET_YX, DenseAugmentation
from LibMTL_rgb_examples.dense_data import DatasetFormatError, MTANNpyDataset, NpyTarget
from LibMTL_rgb_examples.input_files import InvalidLabelError, open_image

# --------------------------------------------------------------------- 2 tasks (MTAN)
MTAN_CLASSES = 7
MTAN_TARGETS = {
    "segmentation": NpyTarget(("label", "label_7"), CLASS_MAP, num_classes=MTAN_CLASSES),
    "depth": NpyTarget(("depth",), DEPTH, channels=1),
}
MTAN_REQUIRED = [f"{split}/{folder}" for split in ("train", "val") for folder in ("image", "depth")]
MTAN_HOW_TO_GET = (
    "Download MTAN's preprocessed Cityscapes (linked from https://github.com/lorenmt/mtan; LibMTL's "
    "examples/cityscapes uses the same copy), unzip it and pass the folder that holds train/ and val/ "
    "(each with image/, label/ or label_7/, depth/ of <i>.npy files) as --dataset_path."
)

# ------------------------------------------------------------------- 3 tasks (official)
#: Align-MTL's disparity normalisation: raw PNG value / DISPARITY_STD.
ALIGN_MTL_DISPARITY_STD = 2729.0680031169923
DISPARITY_UNITS = ("px", "align_mtl")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_REQUIRED = [f"{tree}/{split}" for tree in ("leftImg8bit", "gtFine", "disparity") for split in ("train", "val")]
OFFICIAL_HOW_TO_GET = (
    "Download leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip and disparity_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ (free account), unzip all three into one folder (it then "
    "holds leftImg8bit/, gtFine/ and disparity/, each with train/ and val/ city folders) and pass it as "
    "--dataset_path."
)
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
DISPARITY_SUFFIX = "_disparity.png"


def decode_disparity(raw: np.ndarray, unit: str = "px") -> np.ndarray:
    """Disparity from the official 16-bit PNG values ``p`` (0 stays 0 = invalid)."""
    raw = raw.astype(np.float64)
    if unit == "px":
        return np.where(raw > 0, (raw - 1.0) / 256.0, 0.0).astype(np.float32)
    if unit == "align_mtl":
        return (raw / ALIGN_MTL_DISPARITY_STD).astype(np.float32)
    raise ValueError(f"unknown disparity unit {unit!r}; choose one of {DISPARITY_UNITS}")


def nearest_grid(full_size: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the full-resolution pixels nearest to a ``size`` grid."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * full_size[0] / size[0]).astype(np.int64), full_size[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * full_size[1] / size[1]).astype(np.int64), full_size[1] - 1)
    return rows, cols


def instance_offsets(instance_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``[2, len(rows), len(cols)]`` (dy, dx) = instance centroid - pixel, for the pixels
    ``(rows[i], cols[j])`` of the full-resolution ``instanceIds`` map; NaN off instances.

    Centroids are the mean full-resolution coordinates of each instance's pixels.
    """
    ids = instance_ids.astype(np.int64)
    is_thing = (ids >= INSTANCE_BASE) & np.isin(ids // INSTANCE_BASE, thing_label_ids())
    ys, xs = np.nonzero(is_thing)
    unique, inverse = np.unique(ids[ys, xs], return_inverse=True)
    counts = np.bincount(inverse, minlength=len(unique))
    centroid_y = np.bincount(inverse, weights=ys, minlength=len(unique)) / np.maximum(counts, 1)
    centroid_x = np.bincount(inverse, weights=xs, minlength=len(unique)) / np.maximum(counts, 1)

    sampled_ids = ids[np.ix_(rows, cols)]
    sampled_thing = is_thing[np.ix_(rows, cols)]
    which = np.searchsorted(unique, sampled_ids[sampled_thing])
    grid_y, grid_x = np.meshgrid(rows, cols, indexing="ij")
    offsets = np.full((2, len(rows), len(cols)), np.nan, dtype=np.float32)
    offsets[0][sampled_thing] = centroid_y[which] - grid_y[sampled_thing]
    offsets[1][sampled_thing] = centroid_x[which] - grid_x[sampled_thing]
    return offsets


class CityscapesOfficial(Dataset):
    """One split of the official Cityscapes release as the paper's 3 tasks.

    ``dataset[i]`` is ``(image [3, H, W], {'segmentation': int64 [h, w], 'instance':
    [2, h, w], 'disparity': [1, h, w]})`` with ``(H, W) = img_size``, ``(h, w) = label_size``.
    """

    KINDS = {"segmentation": CLASS_MAP, "instance": OFFSET_YX, "disparity": DISPARITY}

    def __init__(
        self,
        root: str,
        split: str,
        img_size: Sequence[int],
        label_size: Optional[Sequence[int]] = None,
        disparity_unit: str = "px",
        augmentation: Optional[DenseAugmentation] = None,
    ) -> None:
        if disparity_unit not in DISPARITY_UNITS:
            raise ValueError(f"unknown disparity unit {disparity_unit!r}; choose one of {DISPARITY_UNITS}")
        self.root = os.path.expanduser(root)
        self.split = split
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.label_size = self.img_size if label_size is None else (int(label_size[0]), int(label_size[1]))
        self.disparity_unit = disparity_unit
        self.augmentation = augmentation
        self.lookup = train_id_lookup()
        pattern = os.path.join(self.root, "leftImg8bit", split, "*", "*" + IMAGE_SUFFIX)
        self.stems = sorted(p[: -len(IMAGE_SUFFIX)] for p in glob.glob(pattern))
        if not self.stems:
            raise DatasetFormatError(f"no images matching {pattern}")
        for suffix in (LABEL_SUFFIX, INSTANCE_SUFFIX, DISPARITY_SUFFIX):
            missing = [s for s in self.stems if not os.path.isfile(self._path(s, suffix))]
            if missing:
                raise DatasetFormatError(
                    f"{len(missing)} of {len(self.stems)} {split} images have no {suffix[1:]}, "
                    f"e.g. {self._path(missing[0], suffix)}"
                )

    def _path(self, stem: str, suffix: str) -> str:
        """The file of ``suffix`` for an image stem ``.../leftImg8bit/<split>/<city>/<name>``."""
        if suffix == IMAGE_SUFFIX:
            return stem + suffix
        tree = "disparity" if suffix == DISPARITY_SUFFIX else "gtFine"
        city_dir, name = os.path.split(stem)
        city = os.path.basename(city_dir)
        return os.path.join(self.root, tree, self.split, city, name + suffix)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        stem = self.stems[index]
        label_ids = np.asarray(open_image(self._path(stem, LABEL_SUFFIX)))
        instance_ids = np.asarray(open_image(self._path(stem, INSTANCE_SUFFIX)))
        raw_disparity = np.asarray(open_image(self._path(stem, DISPARITY_SUFFIX)))
        if not label_ids.shape == instance_ids.shape == raw_disparity.shape:
            raise InvalidLabelError(
                f"{stem}: labelIds {label_ids.shape}, instanceIds {instance_ids.shape} and disparity "
                f"{raw_disparity.shape} differ in size"
            )
        rows, cols = nearest_grid(label_ids.shape, self.label_size)
        grid = np.ix_(rows, cols)
        targets = {
            "segmentation": torch.from_numpy(self.lookup[label_ids[grid]]),
            "instance": torch.from_numpy(instance_offsets(instance_ids, rows, cols)),
            "disparity": torch.from_numpy(decode_disparity(raw_disparity[grid], self.disparity_unit))[None],
        }
        image = self._image(stem)
        if self.augmentation is not None:
            image, targets = self.augmentation(image, targets, self.KINDS)
        return image, targets

    def _image(self, stem: str) -> Tensor:
        picture = open_image(self._path(stem, IMAGE_SUFFIX), "RGB")
        picture = picture.resize((self.img_size[1], self.img_size[0]), Image.BILINEAR)
        image = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return ((image - mean) / std).contiguous()


def cityscapes_split(
    root: Optional[str],
    split: str,
    tasks: int,
    img_size: Sequence[int],
    label_size: Optional[Sequence[int]] = None,
    disparity_unit: str = "px",
    augment: bool = False,
    resize_labels: bool = False,
) -> Dataset:
    """The ``'train'`` or ``'val'`` split for ``tasks`` = 2 (MTAN copy) or 3 (official
    release); exits with download instructions when ``root`` is missing or malformed.
    ``resize_labels`` (2 tasks; the official label maps are always sampled on the
    ``label_size`` grid): see :class:`MTANNpyDataset`."""
    if tasks not in (2, 3):
        raise ValueError(f"tasks must be 2 or 3, got {tasks}")
    augmentation = DenseAugmentation() if augment else None
    how_to_get = MTAN_HOW_TO_GET if tasks == 2 else OFFICIAL_HOW_TO_GET
    try:
        if tasks == 2:
            root = example_runner.require_dataset("Cityscapes (2 tasks)", root, MTAN_REQUIRED, how_to_get)
            return MTANNpyDataset(root, split, MTAN_TARGETS, img_size, label_size, augmentation, resize_labels)
        root = example_runner.require_dataset("Cityscapes (3 tasks)", root, OFFICIAL_REQUIRED, how_to_get)
        return CityscapesOfficial(root, split, img_size, label_size, disparity_unit, augmentation)
    except DatasetFormatError as err:
        raise SystemExit(f"Cityscapes: {err}\n{how_to_get}") from None
