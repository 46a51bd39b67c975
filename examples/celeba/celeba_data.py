"""CelebA in torchvision's on-disk layout, read directly (no checksum step):

- ``ROOT/celeba/list_attr_celeba.txt``: the image count, the 40 attribute names, then one
  line per image ``<file> <±1 x 40>``;
- ``ROOT/celeba/list_eval_partition.txt``: ``<file> <0|1|2>`` (train, val, test);
- ``ROOT/celeba/img_align_celeba/<file>``: the aligned JPEGs (178×218).

Images are resized to ``image_size × image_size`` and scaled to [0, 1] as in FAMO's setup
(no mean/std normalisation); labels become 0/1 floats.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from LibMTL_rgb.distributed.seeds import seeded_loader

from LibMTL_rgb_examples.input_files import open_image
from LibMTL_rgb_examples.task_columns import TaskColumnLoader

NUM_ATTRIBUTES = 40
ATTRIBUTE_FILE = os.path.join("celeba", "list_attr_celeba.txt")
PARTITION_FILE = os.path.join("celeba", "list_eval_partition.txt")
IMAGE_DIR = os.path.join("celeba", "img_align_celeba")
REQUIRED = (ATTRIBUTE_FILE, PARTITION_FILE, IMAGE_DIR)
SPLITS = {"train": 0, "val": 1, "test": 2}
HOW_TO_GET = (
    "CelebA is read in torchvision's layout: ROOT/celeba/list_attr_celeba.txt, "
    "ROOT/celeba/list_eval_partition.txt and ROOT/celeba/img_align_celeba/*.jpg. Get them from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: Anno/list_attr_celeba.txt, "
    "Eval/list_eval_partition.txt, Img/img_align_celeba.zip unzipped), or with internet access "
    "torchvision.datasets.CelebA('ROOT', download=True); then pass --dataset_path ROOT."
)


def read_attributes(path: str) -> tuple[list[str], list[str], Tensor]:
    """``(attribute names, file names, labels [N, 40] in {0, 1})`` from ``list_attr_celeba.txt``."""
    with open(path) as handle:
        lines = [line.split() for line in handle if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a line of {NUM_ATTRIBUTES} attribute names")
    try:
        count = int(lines[0][0])
    except ValueError:
        raise ValueError(f"{path}, line 1: expected the number of images, got {' '.join(lines[0])!r}") from None
    names = lines[1]
    if len(names) != NUM_ATTRIBUTES:
        raise ValueError(f"{path}, line 2: expected {NUM_ATTRIBUTES} attribute names, got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}, line 2: attribute names repeat")
    rows = lines[2:]
    if len(rows) != count:
        raise ValueError(f"{path}: line 1 announces {count} images but {len(rows)} follow")
    files, labels = [], []
    for number, row in enumerate(rows, start=3):
        if len(row) != NUM_ATTRIBUTES + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise ValueError(f"{path}, line {number}: expected '<file> <{NUM_ATTRIBUTES} values of 1 or -1>'")
        files.append(row[0])
        labels.append([v == "1" for v in row[1:]])
    return names, files, torch.tensor(labels, dtype=torch.float32).reshape(len(files), NUM_ATTRIBUTES)


def read_partition(path: str) -> dict[str, int]:
    """``{file: 0 (train) | 1 (val) | 2 (test)}`` from ``list_eval_partition.txt``."""
    partition = {}
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            row = line.split()
            if not row:
                continue
            if len(row) != 2 or row[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}, line {number}: expected '<file> <0|1|2>', got {line.strip()!r}")
            partition[row[0]] = int(row[1])
    return partition


@dataclass
class CelebAIndex:
    """The two text files, read and checked against each other and the image folder."""

    attribute_names: list[str]
    files: list[str]
    labels: Tensor  # [N, 40] in {0, 1}
    split: Tensor  # [N] in {0, 1, 2}
    image_dir: str


def read_celeba(root: str) -> CelebAIndex:
    """Read and cross-check ``root``'s attribute list, partition and image folder."""
    names, files, labels = read_attributes(os.path.join(root, ATTRIBUTE_FILE))
    partition = read_partition(os.path.join(root, PARTITION_FILE))
    unassigned = [f for f in files if f not in partition]
    if unassigned:
        raise ValueError(f"{PARTITION_FILE} has no split for {len(unassigned)} image(s), e.g. {unassigned[0]}")
    image_dir = os.path.join(root, IMAGE_DIR)
    present = set(os.listdir(image_dir))
    missing = [f for f in files if f not in present]
    if missing:
        raise ValueError(f"{image_dir} lacks {len(missing)} image(s) listed in {ATTRIBUTE_FILE}, e.g. {missing[0]}")
    split = torch.tensor([partition[f] for f in files], dtype=torch.long)
    return CelebAIndex(names, files, labels, split, image_dir)


class CelebA(Dataset):
    """One split of CelebA: items are ``(image [3, S, S] in [0, 1], labels [40] in {0, 1})``."""

    def __init__(self, index: CelebAIndex, split: str, image_size: int = 64) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        keep = torch.nonzero(index.split == SPLITS[split]).flatten()
        if len(keep) == 0:
            raise ValueError(f"{PARTITION_FILE} assigns no image to the {split} split")
        self.image_dir = index.image_dir
        self.files = [index.files[i] for i in keep.tolist()]
        self.labels = index.labels[keep]
        from torchvision import transforms  # here, not at import: --help needs no torchvision

        self.transform = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor]:
        image = open_image(os.path.join(self.image_dir, self.files[item]), "RGB")
        return self.transform(image), self.labels[item]


def celeba_loaders(
    root: str, image_size: int, batch_size: int, eval_batch_size: int, num_workers: int, pin_memory: bool, seed: int = 0
) -> tuple[list[str], TaskColumnLoader, TaskColumnLoader, TaskColumnLoader]:
    """``(attribute names, train, val, test)``; loaders yield ``(images, {attribute: [B, 1]})``.
    The training loader drops a final batch of one image (BatchNorm cannot train on it); shuffle
    and image reading depend on ``(seed, epoch, image)`` only (``distributed.seeded_loader``)."""
    index = read_celeba(root)

    def loader(split: str, size: int) -> TaskColumnLoader:
        dataset, train = CelebA(index, split, image_size), split == "train"
        images = seeded_loader(dataset, size, train, seed, num_workers=num_workers, pin_memory=pin_memory,
                               drop_last=train and len(dataset) % size == 1, persistent_workers=num_workers > 0)
        return TaskColumnLoader(images, index.attribute_names)

    return index.attribute_names, loader("train", batch_size), loader("val", eval_batch_size), loader("test", eval_batch_size)
