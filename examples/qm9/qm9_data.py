"""QM9 through PyTorch Geometric: the 11 targets of Nash-MTL / FAMO / LibMTL (paper Table 2),
the complete graph with interatomic distances, targets standardised with the training split's
statistics, and a seeded train/val/test split saved next to the data."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch_geometric.transforms as T
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.datasets import QM9
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from LibMTL_rgb.atomic_io import atomic_save
from LibMTL_rgb.task_columns import TaskColumnLoader


@dataclass(frozen=True)
class QM9Target:
    """One task: its column in PyG's ``QM9.y`` and the unit its MAE is reported in."""

    name: str
    pyg_index: int
    unit: str
    scale: float  # PyG's unit -> reported unit (1000: eV -> meV)


#: Paper Table 2's columns, in its order. Energies are eV in PyG and reported in meV (as
#: Nash-MTL/FAMO/LibMTL); U0, U, H, G are the atomization energies (PyG columns 12-15, the
#: DimeNet convention Nash-MTL follows), not the total energies of columns 7-10.
TARGETS: tuple[QM9Target, ...] = (
    QM9Target("mu", 0, "D", 1.0),
    QM9Target("alpha", 1, "a0^3", 1.0),
    QM9Target("homo", 2, "meV", 1000.0),
    QM9Target("lumo", 3, "meV", 1000.0),
    QM9Target("r2", 5, "a0^2", 1.0),
    QM9Target("zpve", 6, "meV", 1000.0),
    QM9Target("U0", 12, "meV", 1000.0),
    QM9Target("U", 13, "meV", 1000.0),
    QM9Target("H", 14, "meV", 1000.0),
    QM9Target("G", 15, "meV", 1000.0),
    QM9Target("cv", 11, "cal/(mol K)", 1.0),
)
TASK_NAMES: list[str] = [t.name for t in TARGETS]
NUM_PYG_TARGETS = 19
NUM_NODE_FEATURES = 11
NUM_BOND_TYPES = 4
#: Bond one-hot + the interatomic distance appended by ``Distance``.
NUM_EDGE_FEATURES = NUM_BOND_TYPES + 1

RAW_FILE = os.path.join("raw", "qm9_v3.pt")
PROCESSED_FILE = os.path.join("processed", "data_v3.pt")
HOW_TO_GET = (
    "QM9 is read in PyTorch Geometric's layout: ROOT/raw/qm9_v3.pt (PyG's pre-processed molecules; "
    "ROOT/processed/data_v3.pt is written from it on first use). With internet access run\n"
    "  python -c \"from torch_geometric.datasets import QM9; QM9('ROOT')\"\n"
    "or download https://data.pyg.org/datasets/qm9_v3.zip and unzip it into ROOT/raw/, "
    "then pass --dataset_path ROOT."
)


class LocalQM9(QM9):
    """PyG's ``QM9`` that never downloads: it reads ``raw/`` (or an existing ``processed/``)."""

    def download(self) -> None:
        if os.path.exists(self.processed_paths[0]):
            return  # the processed file is all PyG needs
        raise FileNotFoundError(
            f"{self.raw_dir} lacks {', '.join(self.raw_file_names)} (what PyG's QM9 reads in this "
            f"environment).\n{HOW_TO_GET}"
        )


class CompleteGraph(BaseTransform):
    """Connect every ordered pair of distinct atoms (the MPNN reads the full graph, Gilmer et
    al. 2017); bonded pairs keep their bond-type one-hot, the other pairs get zeros."""

    def forward(self, data):
        n = data.num_nodes
        edge_index = (~torch.eye(n, dtype=torch.bool, device=data.x.device)).nonzero().t()
        if data.edge_attr is not None:
            dense = data.edge_attr.new_zeros(n, n, data.edge_attr.size(-1))
            dense[data.edge_index[0], data.edge_index[1]] = data.edge_attr
            data.edge_attr = dense[edge_index[0], edge_index[1]]
        data.edge_index = edge_index
        return data


class StandardizedTargets(BaseTransform):
    """``y ← (y[:, columns] − mean) / std``: the chosen targets, standardised."""

    def __init__(self, columns: Sequence[int], mean: Tensor, std: Tensor) -> None:
        self.columns = list(columns)
        self.mean = mean
        self.std = std

    def forward(self, data):
        data.y = (data.y[:, self.columns] - self.mean) / self.std
        return data


@dataclass
class QM9Splits:
    """The three splits (targets standardised) and the training split's target statistics."""

    train: Dataset
    val: Dataset
    test: Dataset
    mean: Tensor  # [11], PyG units
    std: Tensor  # [11], PyG units


def require_qm9(root: str) -> None:
    """Exit with what to download and where it goes when ``root`` has neither PyG file."""
    if not (os.path.isfile(os.path.join(root, RAW_FILE)) or os.path.isfile(os.path.join(root, PROCESSED_FILE))):
        raise SystemExit(f"QM9: {root} has neither {RAW_FILE} nor {PROCESSED_FILE}.\n{HOW_TO_GET}")


def read_qm9(root: str) -> QM9:
    """PyG's QM9 at ``root`` (processed on first use), checked for the expected shapes."""
    try:
        dataset = LocalQM9(root)
    except FileNotFoundError:
        raise
    except Exception as err:  # PyG's reader fails in many ways on a foreign file
        cache = os.path.join(root, PROCESSED_FILE)
        if os.path.exists(cache):
            raise ValueError(f"could not read PyG's processed cache {cache} ({type(err).__name__}: {err}); it is "
                             f"probably corrupt or from another PyG version: delete {os.path.dirname(cache)} and run "
                             f"again (it is rebuilt from {RAW_FILE})") from None
        raise ValueError(f"could not read QM9 at {root} ({type(err).__name__}: {err}); is it PyG's qm9_v3.pt?") from err
    for key, columns, what in (("y", NUM_PYG_TARGETS, "molecules"), ("x", NUM_NODE_FEATURES, "atoms")):
        value = getattr(dataset, key, None)
        if value is None or value.dim() != 2 or value.shape[1] != columns:
            shape = None if value is None else tuple(value.shape)
            raise ValueError(f"QM9 at {root}: {key} has shape {shape}, expected [{what}, {columns}]")
    return dataset


def split_indices(root: str, num_molecules: int, val_size: int, test_size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(train, val, test)`` indices: the first ``test_size`` of a seeded permutation are the
    test set, the next ``val_size`` the validation set, the rest the training set. The
    permutation is saved as ``root/split_seed{seed}.pt`` and reused by later runs."""
    if val_size < 1 or test_size < 1:
        raise ValueError(f"--val_size and --test_size must be >= 1, got {val_size} and {test_size}")
    if num_molecules < val_size + test_size + 2:
        raise ValueError(
            f"QM9 at {root} has {num_molecules} molecules: --val_size {val_size} + --test_size {test_size} "
            f"leave fewer than 2 for training; lower them"
        )
    perm = _saved_permutation(root, num_molecules, seed)
    test = perm[:test_size]
    val = perm[test_size : test_size + val_size]
    return perm[test_size + val_size :], val, test


def _saved_permutation(root: str, num_molecules: int, seed: int) -> Tensor:
    path = os.path.join(root, f"split_seed{seed}.pt")
    if os.path.isfile(path):
        saved = torch.load(path, weights_only=True)
        if int(saved["num_molecules"]) != num_molecules:
            raise ValueError(
                f"{path} permutes {int(saved['num_molecules'])} molecules but the dataset has {num_molecules}; "
                "delete it to draw a new split"
            )
        return saved["permutation"]
    perm = torch.randperm(num_molecules, generator=torch.Generator().manual_seed(seed))
    try:
        atomic_save({"num_molecules": num_molecules, "permutation": perm}, path)
    except OSError as err:
        print(f"QM9: could not save the split to {path} ({err}); it is redrawn from the seed each run")
    return perm


def load_qm9(root: str, val_size: int, test_size: int, split_seed: int) -> QM9Splits:
    """Read QM9 at ``root``, split it, and standardise the 11 targets with the training
    split's mean and std; every graph is made complete with distances as edge features."""
    dataset = read_qm9(root)
    train_idx, val_idx, test_idx = split_indices(root, len(dataset), val_size, test_size, split_seed)
    columns = [t.pyg_index for t in TARGETS]
    train_y = dataset.y[train_idx][:, columns]
    mean, std = train_y.mean(dim=0), train_y.std(dim=0)
    constant = [TASK_NAMES[k] for k in torch.nonzero(std == 0).flatten().tolist()]
    if constant:
        raise ValueError(f"QM9 at {root}: target(s) {constant} are constant over the training split")
    dataset.transform = T.Compose([StandardizedTargets(columns, mean, std), CompleteGraph(), T.Distance(norm=False)])
    return QM9Splits(dataset[train_idx], dataset[val_idx], dataset[test_idx], mean, std)


def _graphs_and_targets(batch) -> tuple:
    return batch, batch.y


def qm9_loaders(splits: QM9Splits, batch_size: int, eval_batch_size: int, num_workers: int, pin_memory: bool) -> tuple[TaskColumnLoader, TaskColumnLoader, TaskColumnLoader]:
    """``(train, val, test)`` loaders yielding ``(PyG batch, {task: [B, 1] standardised target})``."""

    def loader(dataset: Dataset, shuffle: bool, size: int) -> TaskColumnLoader:
        graphs = DataLoader(dataset, batch_size=size, shuffle=shuffle, num_workers=num_workers,
                            pin_memory=pin_memory, persistent_workers=num_workers > 0)
        return TaskColumnLoader(graphs, TASK_NAMES, unpack=_graphs_and_targets)

    return (loader(splits.train, True, batch_size), loader(splits.val, False, eval_batch_size),
            loader(splits.test, False, eval_batch_size))
