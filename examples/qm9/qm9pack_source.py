"""The real QM9 as the PyPI package ``qm9pack`` ships it (three CSV files, one row per
characterized molecule: 130,831 of the 133,885 gdb9 indices; the 3,054 missing indices are
the uncharacterized molecules). Read with the standard ``csv`` module, in gdb9 order."""
from __future__ import annotations

import csv
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from importlib import util

#: The optional packages the converter needs, and how to get them.
INSTALL_HINT = "pip install -e .[qm9]   (or: pip install qm9pack rdkit)"
#: Molecules in gdb9 (the SDF's and the CSV's rows), and the characterized ones qm9pack ships.
NUM_GDB9 = 133_885
NUM_CHARACTERIZED = 130_831
_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


@dataclass(frozen=True)
class QM9PackMolecule:
    """One row of qm9pack: its gdb9 index (1-based), SMILES, atoms, and raw property strings
    (qm9pack's units: Hartree for energies, as the original QM9 XYZ files)."""

    index: int
    smiles: str
    elements: tuple[str, ...]
    xyz: tuple[tuple[float, float, float], ...]  # Å
    properties: dict[str, str]


def require_converter_packages() -> str:
    """qm9pack's data folder; exits with what to install when ``qm9pack`` or ``rdkit`` is missing."""
    missing = [name for name in ("qm9pack", "rdkit") if util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"from_qm9pack: {' and '.join(missing)} not installed; install the QM9 extra:\n  {INSTALL_HINT}")
    spec = util.find_spec("qm9pack")
    assert spec is not None and spec.origin is not None
    folder = os.path.join(os.path.dirname(spec.origin), "data")
    absent = [part for part in _PARTS if not os.path.isfile(os.path.join(folder, part))]
    if absent:
        raise SystemExit(f"from_qm9pack: qm9pack at {folder} lacks {', '.join(absent)}; reinstall it ({INSTALL_HINT})")
    return folder


def _number(token: str) -> float:
    """A coordinate as qm9pack writes it: ``1.``, ``-0.0126``, or Mathematica's ``1.2*^-6``."""
    return float(token.strip().replace("*^", "e"))


def _molecule(row: dict[str, str]) -> QM9PackMolecule:
    elements = tuple(e.strip().strip("'") for e in row["Elements"].strip("[]").split(","))
    numbers = [_number(token) for token in row["XYZ_Ang"].replace("[", " ").replace("]", " ").split(",") if token.strip()]
    xyz = tuple(tuple(numbers[k : k + 3]) for k in range(0, len(numbers), 3))
    if len(numbers) != 3 * len(elements) or int(row["N_atoms"]) != len(elements):
        raise ValueError(f"qm9pack molecule {row['Index']}: {len(elements)} elements, {len(xyz)} positions, "
                         f"N_atoms {row['N_atoms']}")
    return QM9PackMolecule(int(row["Index"]), row["SMILES"], elements, xyz, row)  # type: ignore[arg-type]


def _rows(folder: str) -> Iterator[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    for part in _PARTS:
        with open(os.path.join(folder, part), newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)


def count_molecules(folder: str) -> int:
    """The number of rows of qm9pack's CSV files (130,831 for qm9pack 1.0.3)."""
    return sum(1 for _ in _rows(folder))


def read_qm9pack(folder: str, keep: Collection[int] | None = None) -> Iterator[QM9PackMolecule]:
    """The molecules of qm9pack's CSV files in gdb9 order (checked increasing); only the rows
    at the 0-based positions ``keep`` when given."""
    last = 0
    wanted = None if keep is None else set(keep)
    final = max(wanted, default=-1) if wanted is not None else None
    for position, row in enumerate(_rows(folder)):
        index = int(row["Index"])
        if index <= last or index > NUM_GDB9:
            raise ValueError(f"qm9pack: index {index} after {last} (expected increasing 1..{NUM_GDB9})")
        last = index
        if wanted is None or position in wanted:
            yield _molecule(row)
            if position == final:
                return  # the rest is not wanted
