"""QM9 through PyTorch Geometric: the 11 targets of Nash-MTL / FAMO / LibMTL (paper Table 2) or
any of PyG's 19 columns (LibMTL's ``--target``), the complete graph with interatomic distances,
targets standardised with the training split's statistics, and a seeded train/val/test split
saved next to the data, or LibMTL's split file ``random_split.t``."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch_geometric.transforms as T
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.io import fs
from torch_geometric.datasets import QM9
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from LibMTL_rgb.atomic_io import atomic_save
from LibMTL_rgb.distributed.seeds import seeded_loader
from LibMTL_rgb_examples.task_columns import TaskColumnLoader


from qm9_targets import (DEFAULT_TARGETS, LIBMTL_SPLIT_FILE, QM9_COLUMNS, TARGETS, TASK_NAME_STYLES,  # noqa: F401
                         TASK_NAMES, QM9Target, check_targets, task_names)
NUM_PYG_TARGETS = 19
NUM_NODE_FEATURES = 11
NUM_BOND_TYPES = 4
#: Bond one-hot + the interatomic distance appended by ``Distance``.
NUM_EDGE_FEATURES = NUM_BOND_TYPES + 1

#: PyG's layouts of ``ROOT/raw/``: its pre-processed molecules (read without rdkit) and the
#: original gdb9 files (processed with rdkit; what ``from_qm9pack.py`` writes).
PREPROCESSED_RAW = ("qm9_v3.pt",)
RDKIT_RAW = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")
RAW_FILE = os.path.join("raw", PREPROCESSED_RAW[0])
PROCESSED_FILE = os.path.join("processed", "data_v3.pt")
HOW_TO_GET = (
    "QM9 is read in any of PyTorch Geometric's layouts: ROOT/raw/gdb9.sdf + gdb9.sdf.csv + uncharacterized.txt "
    "(processed with rdkit), ROOT/raw/qm9_v3.pt (PyG's pre-processed molecules), or an existing "
    "ROOT/processed/data_v3.pt. Offline, from the PyPI packages qm9pack and rdkit (pip install -e .[qm9]):\n"
    "  python examples/qm9/from_qm9pack.py --out ROOT\n"
    "With internet access:\n"
    "  python -c \"from torch_geometric.datasets import QM9; QM9('ROOT')\"\n"
    "or download https://data.pyg.org/datasets/qm9_v3.zip and unzip it into ROOT/raw/; "
    "then pass --dataset_path ROOT."
)


def _has_rdkit() -> bool:
    return importlib.util.find_spec("rdkit") is not None


def raw_layout(root: str) -> Optional[tuple[str, ...]]:
    """The raw files of ``root/raw`` PyG can process here: the gdb9 files when complete (with
    rdkit installed; without it they are returned too, for :class:`LocalQM9` to explain), else
    ``qm9_v3.pt``; None when neither is complete."""
    complete = [files for files in (RDKIT_RAW, PREPROCESSED_RAW)
                if all(os.path.isfile(os.path.join(root, "raw", f)) for f in files)]
    if RDKIT_RAW in complete and (_has_rdkit() or PREPROCESSED_RAW not in complete):
        return RDKIT_RAW
    return complete[0] if complete else None


class LocalQM9(QM9):
    """PyG's ``QM9`` that never downloads and reads whichever layout ``root`` has (rdkit's raw
    gdb9 files, ``raw/qm9_v3.pt`` whether or not rdkit is installed, or ``processed/``)."""

    @property
    def raw_file_names(self) -> list[str]:
        layout = raw_layout(self.root)
        if layout is None:  # PyG's own choice, for the message of download()
            return list(RDKIT_RAW if _has_rdkit() else PREPROCESSED_RAW)
        return list(layout)

    def download(self) -> None:
        if os.path.exists(self.processed_paths[0]):
            return  # the processed file is all PyG needs
        raise FileNotFoundError(f"{self.raw_dir} lacks {', '.join(self.raw_file_names)}.\n{HOW_TO_GET}")

    def process(self) -> None:
        if self.raw_file_names == list(PREPROCESSED_RAW):
            # PyG's branch without rdkit, taken here also when rdkit is installed
            data_list = [Data(**molecule) for molecule in fs.torch_load(self.raw_paths[0])]
            self.save(data_list, self.processed_paths[0])
            return
        if not _has_rdkit():
            raise ValueError(f"{self.raw_dir} holds the gdb9 files ({', '.join(RDKIT_RAW)}), which PyG processes "
                             "with rdkit: pip install -e .[qm9] (or pip install rdkit)")
        super().process()


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
    mean: Tensor  # [T], PyG units
    std: Tensor  # [T], PyG units
    targets: tuple[int, ...] = DEFAULT_TARGETS  # the PyG columns, in task order


def require_qm9(root: str) -> None:
    """Exit with what to get and where it goes when ``root`` has none of PyG's layouts."""
    if raw_layout(root) is None and not os.path.isfile(os.path.join(root, PROCESSED_FILE)):
        raise SystemExit(f"QM9: {root} has no raw/ files of PyG's ({' + '.join(RDKIT_RAW)}, or {PREPROCESSED_RAW[0]}) "
                         f"and no {PROCESSED_FILE}.\n{HOW_TO_GET}")


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
                             f"again (it is rebuilt from raw/)") from None
        raise ValueError(f"could not read QM9 at {root} ({type(err).__name__}: {err}); are raw/'s files PyG's QM9?") from err
    for key, columns, what in (("y", NUM_PYG_TARGETS, "molecules"), ("x", NUM_NODE_FEATURES, "atoms")):
        value = getattr(dataset, key, None)
        if value is None or value.dim() != 2 or value.shape[1] != columns:
            shape = None if value is None else tuple(value.shape)
            raise ValueError(f"QM9 at {root}: {key} has shape {shape}, expected [{what}, {columns}]")
    return dataset


def split_indices(root: str, num_molecules: int, val_size: int, test_size: int, seed: int,
                  split_file: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(train, val, test)`` indices: the first ``test_size`` of a permutation are the test
    set, the next ``val_size`` the validation set, the rest the training set (LibMTL's and
    Nash-MTL's order). The permutation is ``split_file`` (LibMTL's ``random_split.t``) when
    given, else drawn from ``seed``, saved as ``root/split_seed{seed}.pt`` and reused."""
    if val_size < 1 or test_size < 1:
        raise ValueError(f"--val_size and --test_size must be >= 1, got {val_size} and {test_size}")
    if num_molecules < val_size + test_size + 2:
        raise ValueError(
            f"QM9 at {root} has {num_molecules} molecules: --val_size {val_size} + --test_size {test_size} "
            f"leave fewer than 2 for training; lower them"
        )
    perm = read_split_file(split_file, num_molecules) if split_file else _saved_permutation(root, num_molecules, seed)
    test = perm[:test_size]
    val = perm[test_size : test_size + val_size]
    return perm[test_size + val_size :], val, test



def read_split_file(path: str, num_molecules: int) -> Tensor:
    """A permutation of the molecules saved with ``torch.save`` as a 1-D integer tensor, as
    LibMTL's ``examples/qm9/random_split.t`` (130,831 indices; LibMTL's example loads it from
    its working directory and takes test = [:10000], val = [10000:20000], train = the rest)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file {path} does not exist (LibMTL's is examples/qm9/random_split.t in its repository)")
    perm = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(perm, Tensor) or perm.dim() != 1 or perm.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"split file {path} must hold a 1-D integer tensor (a permutation of the molecules)")
    if len(perm) != num_molecules or not torch.equal(torch.sort(perm).values, torch.arange(num_molecules, dtype=perm.dtype)):
        raise ValueError(f"split file {path} is not a permutation of the dataset's {num_molecules} molecules "
                         f"({len(perm)} indices)")
    return perm.long()


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


def load_qm9(root: str, val_size: int, test_size: int, split_seed: int, targets: Sequence[int] = DEFAULT_TARGETS,
             split_file: Optional[str] = None, train_size: Optional[int] = None) -> QM9Splits:
    """Read QM9 at ``root``, split it (:func:`split_indices`; ``train_size``: keep only the
    first that many training molecules), and standardise the ``targets`` columns with the
    training split's mean and std; every graph is made complete with distances as edge features."""
    columns = list(check_targets(targets))
    dataset = read_qm9(root)
    train_idx, val_idx, test_idx = split_indices(root, len(dataset), val_size, test_size, split_seed, split_file)
    if train_size is not None:
        if not 2 <= train_size <= len(train_idx):
            raise ValueError(f"--train_size {train_size}: the training split has {len(train_idx)} molecules "
                             f"(2 or more are needed)")
        train_idx = train_idx[:train_size]
    train_y = dataset.y[train_idx][:, columns]
    mean, std = train_y.mean(dim=0), train_y.std(dim=0)
    constant = [columns[k] for k in torch.nonzero(std == 0).flatten().tolist()]
    if constant:
        raise ValueError(f"QM9 at {root}: target(s) {constant} are constant over the training split")
    dataset.transform = T.Compose([StandardizedTargets(columns, mean, std), CompleteGraph(), T.Distance(norm=False)])
    return QM9Splits(dataset[train_idx], dataset[val_idx], dataset[test_idx], mean, std, tuple(columns))


def _graphs_and_targets(batch) -> tuple:
    return batch, batch.y


def qm9_loaders(splits: QM9Splits, batch_size: int, eval_batch_size: int, num_workers: int, pin_memory: bool,
                task_name: Optional[Sequence[str]] = None,
                seed: int = 0) -> tuple[TaskColumnLoader, TaskColumnLoader, TaskColumnLoader]:
    """``(train, val, test)`` loaders yielding ``(PyG batch, {task: [B, 1] standardised target})``;
    ``task_name``: one per target column (default: LibMTL's, the column indices); the shuffle
    depends on ``(seed, epoch)`` only (``distributed.seeded_loader``)."""
    task_name = task_names(splits.targets) if task_name is None else list(task_name)

    def loader(dataset: Dataset, shuffle: bool, size: int) -> TaskColumnLoader:
        graphs = seeded_loader(dataset, size, shuffle, seed, loader_class=DataLoader, num_workers=num_workers,
                               pin_memory=pin_memory, persistent_workers=num_workers > 0)
        return TaskColumnLoader(graphs, task_name, unpack=_graphs_and_targets)

    return (loader(splits.train, True, batch_size), loader(splits.val, False, eval_batch_size),
            loader(splits.test, False, eval_batch_size))
