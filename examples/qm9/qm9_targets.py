"""QM9's targets and what the command line needs to know before any data or model code
loads (no torch_geometric here, so ``--help`` answers at once): PyG's 19 columns, paper
Table 2's 11 (LibMTL's ``--target`` default), task names, and the architectures that fit
graph input."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

@dataclass(frozen=True)
class QM9Target:
    """One task: its column in PyG's ``QM9.y`` and the unit its MAE is reported in."""

    name: str
    pyg_index: int
    unit: str
    scale: float  # PyG's unit -> reported unit (1000: eV -> meV)


#: Every column of PyG's ``QM9.y``, keyed by its index (LibMTL's ``--target`` values). Energies
#: are eV in PyG; like LibMTL's example, HOMO, LUMO, ZPVE and the atomization energies U0, U, H, G
#: (columns 12-15, the DimeNet convention Nash-MTL follows) are reported in meV, every other
#: column in PyG's unit (the gap and the total energies of columns 7-10 stay in eV).
QM9_COLUMNS: dict[int, QM9Target] = {t.pyg_index: t for t in (
    QM9Target("mu", 0, "D", 1.0),
    QM9Target("alpha", 1, "a0^3", 1.0),
    QM9Target("homo", 2, "meV", 1000.0),
    QM9Target("lumo", 3, "meV", 1000.0),
    QM9Target("gap", 4, "eV", 1.0),
    QM9Target("r2", 5, "a0^2", 1.0),
    QM9Target("zpve", 6, "meV", 1000.0),
    QM9Target("U0_total", 7, "eV", 1.0),
    QM9Target("U_total", 8, "eV", 1.0),
    QM9Target("H_total", 9, "eV", 1.0),
    QM9Target("G_total", 10, "eV", 1.0),
    QM9Target("cv", 11, "cal/(mol K)", 1.0),
    QM9Target("U0", 12, "meV", 1000.0),
    QM9Target("U", 13, "meV", 1000.0),
    QM9Target("H", 14, "meV", 1000.0),
    QM9Target("G", 15, "meV", 1000.0),
    QM9Target("A", 16, "GHz", 1.0),
    QM9Target("B", 17, "GHz", 1.0),
    QM9Target("C", 18, "GHz", 1.0),
)}
#: Paper Table 2's 11 targets in its order: LibMTL's ``--target`` default.
DEFAULT_TARGETS: tuple[int, ...] = (0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11)
TARGETS: tuple[QM9Target, ...] = tuple(QM9_COLUMNS[k] for k in DEFAULT_TARGETS)
#: Task names: LibMTL's (the PyG column index as a string, e.g. '12') or the targets' symbols ('U0').
TASK_NAME_STYLES = ("index", "symbol")


def task_names(targets: Sequence[int], style: str = "index") -> list[str]:
    """The task name of each target column: ``str(index)`` as LibMTL, or its symbol."""
    if style not in TASK_NAME_STYLES:
        raise ValueError(f"task name style must be one of {TASK_NAME_STYLES}, got {style!r}")
    return [str(k) if style == "index" else QM9_COLUMNS[k].name for k in targets]


def check_targets(targets: Sequence[int]) -> tuple[int, ...]:
    """``targets`` as a tuple, refused unless they are distinct PyG columns."""
    unknown = [k for k in targets if k not in QM9_COLUMNS]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(f"--target takes distinct PyG QM9 columns 0..{len(QM9_COLUMNS) - 1}, got {list(targets)}")
    return tuple(targets)


TASK_NAMES: list[str] = task_names(DEFAULT_TARGETS)

#: The split file LibMTL's examples/qm9 reads from its working directory.
LIBMTL_SPLIT_FILE = "random_split.t"

#: The architectures that use the encoder as a whole on a batch of graphs.
GRAPH_ARCHITECTURES = ("HPS",)


def unsupported_architectures() -> dict[str, str]:
    """Every other registered architecture, with why it cannot run on graph input (for ``--arch``)."""
    from LibMTL_rgb.architecture._experts import GatedExperts
    from LibMTL_rgb.registry import ARCHITECTURES

    reasons = {}
    for name in ARCHITECTURES.names():
        if name in GRAPH_ARCHITECTURES:
            continue
        if issubclass(ARCHITECTURES.get(name), GatedExperts):
            reasons[name] = ("its gates read the flattened input sample (a fixed size, --img_size), but QM9's "
                             "inputs are molecular graphs of varying size")
        else:
            reasons[name] = ("it runs the encoder stage by stage on image feature maps, but QM9's MPNN passes "
                             "messages over a batch of graphs and has no stages")
    return reasons
