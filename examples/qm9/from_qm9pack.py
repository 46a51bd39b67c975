"""Write PyTorch Geometric's raw QM9 files (``ROOT/raw/gdb9.sdf``, ``gdb9.sdf.csv``,
``uncharacterized.txt``) from the PyPI package ``qm9pack``, offline: gdb9 order, PyG's columns
and units (atomization energies from the free-atom reference energies), every bond graph equal
to the molecule's SMILES graph. ``--sample N`` writes a seeded random subset. Needs the QM9
extra: ``pip install -e .[qm9]`` (qm9pack, rdkit, torch-geometric)."""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from collections import Counter
from collections.abc import Sequence

from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script from anywhere

from pyg_raw_files import (
    CSV_HEADER,
    HARTREE_TO_KCAL_PER_MOL,
    csv_row,
    mol_block,
    placeholder_row,
    write_csv,
    write_uncharacterized,
)
from qm9pack_source import (
    NUM_GDB9,
    count_molecules,
    read_qm9pack,
    require_converter_packages,
)

from LibMTL_rgb.atomic_io import atomic_write

HARTREE_TO_EV = 27.211386246  # PyG's HAR2EV
#: Reference statistics over all 133,885 gdb9 molecules (the DeepChem/MoleculeNet qm9.csv;
#: uncharacterized ones included), in PyG's units: (mean, std).
REFERENCE_STATS = {
    "mu (D)": (2.706037, 1.530394),
    "alpha (a0^3)": (75.191296, 8.187793),
    "homo (eV)": (-0.239977 * HARTREE_TO_EV, 0.022131 * HARTREE_TO_EV),
    "lumo (eV)": (0.011124 * HARTREE_TO_EV, 0.046936 * HARTREE_TO_EV),
    "zpve (eV)": (0.148524 * HARTREE_TO_EV, 0.033274 * HARTREE_TO_EV),
}
#: PyG's QM9 documentation: 130,831 graphs, ~18.0 atoms and ~37.3 directed bond edges each.
REFERENCE_COUNTS = {"molecules": 130_831, "atoms per molecule": 18.0, "bond edges per molecule": 37.3}
#: The target statistics printed: (name in PyG's units, gdb9.sdf.csv column, CSV unit -> PyG unit).
STATISTICS = (
    ("mu (D)", "mu", 1.0), ("alpha (a0^3)", "alpha", 1.0), ("homo (eV)", "homo", HARTREE_TO_EV),
    ("lumo (eV)", "lumo", HARTREE_TO_EV), ("gap (eV)", "gap", HARTREE_TO_EV), ("r2 (a0^2)", "r2", 1.0),
    ("zpve (eV)", "zpve", HARTREE_TO_EV), ("U0_atom (eV)", "u0_atom", HARTREE_TO_EV / HARTREE_TO_KCAL_PER_MOL),
    ("cv (cal/mol K)", "cv", 1.0),
)
RAW_FILES = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")
REPAIRS_FILE = "qm9pack_repairs.csv"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset root: the files go to OUT/raw/ (then --dataset_path OUT)")
    parser.add_argument("--sample", type=int, default=None,
                        help="write only N molecules drawn at random (seeded by --seed), in gdb9 order; default: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample's draw")
    parser.add_argument("--force", action="store_true", help="overwrite existing raw files")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample must be >= 1, got {args.sample}")
    return args


def sample_positions(total: int, sample: int, seed: int) -> set[int]:
    """The 0-based rows of qm9pack that ``--sample`` draws (uniformly, without replacement)."""
    return set(random.Random(seed).sample(range(total), sample))


def _stats_table(columns: dict[str, list[float]]) -> list[str]:
    lines = [f"  {'target':<14}{'mean':>11}{'std':>10}   {'reference mean':>15}{'std':>10}"]
    for name, values in columns.items():
        mean, std = statistics.fmean(values), statistics.pstdev(values)
        ref = REFERENCE_STATS.get(name)
        tail = f"   {ref[0]:>15.4f}{ref[1]:>10.4f}" if ref else ""
        lines.append(f"  {name:<14}{mean:>11.4f}{std:>10.4f}{tail}")
    return lines


def convert(out: str, sample: int | None = None, seed: int = 0, force: bool = False) -> dict:
    """Write the raw files under ``out/raw`` and return the counts printed (see module doc)."""
    folder = require_converter_packages()
    from xyz_bonds import bonded_molecule  # rdkit

    raw = os.path.join(out, "raw")
    existing = [f for f in RAW_FILES if os.path.exists(os.path.join(raw, f))]
    if existing and not force:
        raise SystemExit(f"from_qm9pack: {raw} already has {', '.join(existing)}; pass --force to overwrite")
    os.makedirs(raw, exist_ok=True)
    total = count_molecules(folder)
    keep = None
    if sample is not None:
        if sample > total:
            raise SystemExit(f"from_qm9pack: --sample {sample} exceeds the {total} molecules of qm9pack")
        keep = sample_positions(total, sample, seed)
    count = total if keep is None else len(keep)

    rows: list[list[str]] = []
    repairs: list[tuple[int, str, str]] = []
    stats: dict[str, list[float]] = {name: [] for name, _, _ in STATISTICS}
    uncharacterized: list[int] = []
    atoms = bonds = unmatched = 0
    next_index = 1
    sdf_path = os.path.join(raw, "gdb9.sdf")
    with atomic_write(sdf_path) as sdf:
        for molecule in tqdm(read_qm9pack(folder, keep), total=count, desc="qm9pack -> gdb9.sdf", unit="mol"):
            if keep is None:  # the full set keeps gdb9's numbering: a placeholder per uncharacterized index
                for gap in range(next_index, molecule.index):
                    sdf.write(mol_block(None, gap))
                    rows.append(placeholder_row(gap))
                    uncharacterized.append(gap)
                next_index = molecule.index + 1
            bonded = bonded_molecule(molecule.elements, molecule.xyz, molecule.smiles)
            if bonded.repair:
                repairs.append((molecule.index, molecule.smiles, bonded.repair))
            unmatched += not bonded.matches_smiles
            sdf.write(mol_block(bonded.mol, molecule.index))
            row = csv_row(molecule)
            rows.append(row)
            atoms += bonded.mol.GetNumAtoms()
            bonds += 2 * bonded.mol.GetNumBonds()
            values = dict(zip(CSV_HEADER, row))
            for name, column, factor in STATISTICS:
                stats[name].append(float(values[column]) * factor)
        if keep is None:
            for gap in range(next_index, NUM_GDB9 + 1):
                sdf.write(mol_block(None, gap))
                rows.append(placeholder_row(gap))
                uncharacterized.append(gap)
    with atomic_write(os.path.join(raw, "gdb9.sdf.csv")) as handle:
        write_csv(handle, rows)
    note = ("the full gdb9 set from qm9pack" if keep is None
            else f"a sample of {count} qm9pack molecules (seed {seed}); no placeholders, so nothing to skip")
    with atomic_write(os.path.join(raw, "uncharacterized.txt")) as handle:
        write_uncharacterized(handle, uncharacterized, note)
    with atomic_write(os.path.join(out, REPAIRS_FILE)) as handle:
        handle.write("index,smiles,repair\n" + "".join(f'{i},{s},"{r}"\n' for i, s, r in repairs))

    result = {"molecules": count, "unmatched": unmatched, "records": len(rows), "uncharacterized": len(uncharacterized),
              "atoms per molecule": atoms / count, "bond edges per molecule": bonds / count, "repairs": len(repairs)}
    print(f"from_qm9pack: wrote {raw}/{{{','.join(RAW_FILES)}}}: {len(rows)} records, {count} molecules "
          f"(reference {REFERENCE_COUNTS['molecules']} in all), {len(uncharacterized)} uncharacterized placeholders")
    print(f"  {atoms / count:.2f} atoms and {bonds / count:.2f} bond edges per molecule "
          f"(PyG's QM9: ~{REFERENCE_COUNTS['atoms per molecule']} and ~{REFERENCE_COUNTS['bond edges per molecule']})")
    by_reason = Counter(r for _, _, r in repairs)
    print(f"  bonds equal to the SMILES graph for {count - unmatched} of {count}; {len(repairs)} "
          f"({100 * len(repairs) / count:.1f} %) not from DetermineBonds alone "
          f"(list: {os.path.join(out, REPAIRS_FILE)}):")
    for reason, n in by_reason.most_common():
        print(f"    {n:6d}  {reason}")
    print("  target statistics (PyG's units; reference: all 133,885 gdb9 molecules, MoleculeNet's qm9.csv):")
    print("\n".join(_stats_table(stats)))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    return convert(args.out, args.sample, args.seed, args.force)


if __name__ == "__main__":
    main()
