"""Reader of the MTAN-preprocessed dense-prediction datasets (NYUv2, 2-task Cityscapes) and
the DataLoader settings the dense examples share.

On disk (MTAN / LibMTL): ``ROOT/<split>/image/<i>.npy`` (``H×W×3`` float) and one folder per
label map, ``ROOT/<split>/<folder>/<i>.npy``: class maps ``H×W`` (``-1`` = ignore) or
channel-last maps ``H×W×C`` (depth ``C = 1``, normals ``C = 3``).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from LibMTL_rgb.distributed.seeds import seeded_loader

from LibMTL_rgb_examples.dense_augment import DenseAugmentation, TargetKind, resize_sample, resize_target
from LibMTL_rgb_examples.input_files import InputDataError, InvalidLabelError, check_class_labels, load_npy


class DatasetFormatError(ValueError):
    """A dataset folder exists but does not hold what the reader expects."""


@dataclass(frozen=True)
class NpyTarget:
    """One label map of an MTAN split.

    Attributes:
        folders: sub-folder names to look for, first found wins (MTAN's Cityscapes copy names
            the 7-class labels ``label_7``, LibMTL's ``label``).
        kind: how the map transforms (class map, depth, normal...).
        channels: ``C`` of an ``H×W×C`` map; ignored for class maps (``H×W``).
        num_classes: class maps only: ids must lie in ``0..num_classes-1`` or be ``-1``
            (ignore); each sample is checked when read (None: not checked).
    """

    folders: tuple[str, ...]
    kind: TargetKind
    channels: int = 1
    num_classes: Optional[int] = None


class MTANNpyDataset(Dataset):
    """One split of an MTAN-preprocessed dataset.

    ``dataset[i]`` is ``(image [3, H, W] float32, {task: label map})`` with class maps as
    int64 ``[H, W]`` and the others float32 ``[C, H, W]``.

    Args:
        root: the dataset root (holds ``train/`` and ``val/``).
        split: ``'train'`` or ``'val'``.
        targets: task name -> :class:`NpyTarget`.
        img_size: ``(H, W)`` to resize every sample to (None: keep the stored size).
        label_size: ``(h, w)`` of the label maps (default: ``img_size``).
        augmentation: applied after resizing (training only, typically).
        resize_labels: a stored label map of another ``H×W`` than its image is resized to the
            image's size (nearest neighbour); off (default): such a sample is refused, naming
            the file and both sizes.
    """

    def __init__(
        self,
        root: str,
        split: str,
        targets: Mapping[str, NpyTarget],
        img_size: Optional[Sequence[int]] = None,
        label_size: Optional[Sequence[int]] = None,
        augmentation: Optional[DenseAugmentation] = None,
        resize_labels: bool = False,
    ) -> None:
        self.resize_labels = resize_labels
        self.split_dir = os.path.join(os.path.expanduser(root), split)
        self.targets = dict(targets)
        self.img_size = None if img_size is None else (int(img_size[0]), int(img_size[1]))
        self.label_size = None if label_size is None else (int(label_size[0]), int(label_size[1]))
        if self.label_size is not None and self.img_size is None:
            raise ValueError("label_size needs img_size")
        self.augmentation = augmentation
        self.kinds = {task: spec.kind for task, spec in self.targets.items()}
        image_dir = self._existing_dir(("image",))
        self.folders = {task: self._existing_dir(spec.folders) for task, spec in self.targets.items()}
        self.files = _numbered_npy(image_dir)
        if not self.files:
            raise DatasetFormatError(f"{image_dir} holds no <number>.npy files")
        for task, folder in self.folders.items():
            found = set(_numbered_npy(folder))
            missing = [f for f in self.files if f not in found]
            if missing:
                raise DatasetFormatError(f"{folder} lacks {len(missing)} of the samples in {image_dir}, e.g. {missing[0]}")
        self._check_sample(0)

    def _existing_dir(self, names: Sequence[str]) -> str:
        for name in names:
            path = os.path.join(self.split_dir, name)
            if os.path.isdir(path):
                return path
        raise DatasetFormatError(f"{self.split_dir} has no folder {' or '.join(names)}")

    def _check_sample(self, index: int) -> None:
        name = self.files[index]
        image = load_npy(os.path.join(self.split_dir, "image", name), mmap_mode="r")
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DatasetFormatError(f"image/{name} has shape {image.shape}; expected H×W×3")
        for task, spec in self.targets.items():
            array = load_npy(os.path.join(self.folders[task], name), mmap_mode="r")
            size = image.shape[:2] if not self.resize_labels else array.shape[:2]
            expected = size if spec.kind.is_class_map else (*size, spec.channels)
            shape = array.shape if spec.kind.is_class_map or array.ndim == 3 else (*array.shape, 1)
            if tuple(shape) != tuple(expected):
                layout = "H×W" if spec.kind.is_class_map else f"H×W×{spec.channels}"
                raise DatasetFormatError(
                    f"{os.path.basename(self.folders[task])}/{name} has shape {array.shape}; expected {layout} = {expected}"
                    + ("" if self.resize_labels else " (--resize_labels resizes label maps to their image's size)")
                )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        name = self.files[index]
        image_path = os.path.join(self.split_dir, "image", name)
        image = torch.from_numpy(load_npy(image_path)).float().permute(2, 0, 1)
        image_size = (int(image.shape[-2]), int(image.shape[-1]))
        targets = {task: self._load_target(task, name, image_path, image_size) for task in self.targets}
        if self.img_size is not None:
            image, targets = resize_sample(image, targets, self.img_size, self.label_size)
        if self.augmentation is not None:
            image, targets = self.augmentation(image, targets, self.kinds)
        return image.contiguous(), {task: t.contiguous() for task, t in targets.items()}

    def _load_target(self, task: str, name: str, image_path: str, image_size: tuple[int, int]) -> Tensor:
        """The label map of ``task`` for sample ``name``, checked against its image's size
        (resized to it with ``resize_labels``) and, for class maps, the class range."""
        path = os.path.join(self.folders[task], name)
        array = load_npy(path)
        spec = self.targets[task]
        if tuple(array.shape[:2]) != image_size:
            if not self.resize_labels:
                raise InvalidLabelError(
                    f"{path}: label map of {array.shape[0]}×{array.shape[1]} but its image {image_path} is "
                    f"{image_size[0]}×{image_size[1]}; pass --resize_labels to resize label maps to their image's size")
        if spec.kind.is_class_map:
            labels = np.rint(array).astype(np.int64)
            if spec.num_classes is not None:
                check_class_labels(labels, spec.num_classes, path)
            tensor = torch.from_numpy(labels)
        else:
            tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
            tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
        return resize_target(tensor, image_size)


def _numbered_npy(directory: str) -> list[str]:
    """``<i>.npy`` names in ``directory``, sorted by ``i``."""
    names = [f for f in os.listdir(directory) if f.endswith(".npy") and f[:-4].isdigit()]
    return sorted(names, key=lambda f: int(f[:-4]))


def dense_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int, device: torch.device,
                 seed: int = 0) -> DataLoader:
    """LibMTL's loaders: training shuffles and drops the last incomplete batch (BatchNorm
    needs more than one sample), evaluation keeps every sample in order. Shuffle and
    augmentation depend on ``(seed, epoch, sample)`` only (``distributed.seeded_loader``): a
    resumed run reads what an uninterrupted one reads, at any ``num_workers``."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if train and len(dataset) < batch_size:
        raise InputDataError(f"the training split has {len(dataset)} samples, fewer than the batch size {batch_size} "
                             "(--bs): no full training batch")
    return seeded_loader(dataset, batch_size, train, seed, drop_last=train, num_workers=num_workers,
                         pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)


def add_resize_labels_arg(group: argparse._ActionsContainer) -> None:
    """``--resize_labels`` (off by default) of the examples reading MTAN's ``.npy`` copies."""
    group.add_argument("--resize_labels", action="store_true", default=False,
                       help="resize a stored label map whose H×W differs from its image's to the image's size "
                            "(nearest neighbour); without it such a sample stops the run naming the file and both sizes")


def check_input_size(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """Parser check of the dense examples: ``--img_size`` is ``H W`` or ``3 H W``."""
    size = list(params.img_size)
    if not (len(size) == 2 or (len(size) == 3 and size[0] == 3)):
        parser.error(f"argument --img_size: takes H W (or 3 H W), got {' '.join(map(str, size))}")


def input_size_from_args(params) -> tuple[int, int]:
    """``(H, W)`` of the network input from ``--img_size``.

    ``--img_size`` is the architectures' flag (MMoE, CGC, PLE, DSelect_k size their gates with
    it; MTAN probes with it), which reads ``C H W``. The dense examples accept ``H W`` or
    ``3 H W`` and store ``[3, H, W]`` back into ``params.img_size``, so those architectures get
    the size of the images the example feeds them.
    """
    size = [int(s) for s in params.img_size]
    if len(size) == 3 and size[0] == 3:
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise SystemExit(f"--img_size takes H W (or 3 H W) with positive sizes, got {params.img_size}")
    params.img_size = [3, *size]
    return size[0], size[1]
