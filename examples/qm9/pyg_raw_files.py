"""PyTorch Geometric's raw QM9 files (what ``torch_geometric.datasets.QM9`` processes when
``rdkit`` is installed): ``gdb9.sdf`` (one mol block per gdb9 molecule, named ``gdb_<index>``),
``gdb9.sdf.csv`` (one row per mol block: the 19 columns PyG reads, in the units PyG converts
from) and ``uncharacterized.txt`` (the molecules PyG skips, from its 10th line on)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING

from qm9pack_source import QM9PackMolecule

if TYPE_CHECKING:  # rdkit loads only when a record is written (the converter's --help needs none)
    from rdkit import Chem

#: 1 Hartree in kcal/mol (CODATA 2018): the atomization energies' unit in gdb9.sdf.csv.
HARTREE_TO_KCAL_PER_MOL = 627.5094740631
#: Free-atom energies (Hartree, B3LYP/6-31G(2df,p); QM9's atomref table) for U0, U, H, G.
ATOM_REFERENCE_HARTREE: dict[str, tuple[float, float, float, float]] = {
    "H": (-0.500273, -0.498857, -0.497912, -0.510927),
    "C": (-37.846772, -37.845355, -37.844411, -37.861317),
    "N": (-54.583861, -54.582445, -54.581501, -54.598897),
    "O": (-75.064579, -75.063162, -75.062219, -75.079532),
    "F": (-99.718730, -99.717314, -99.716370, -99.733544),
}
#: gdb9.sdf.csv's columns after mol_id, with the qm9pack column each is copied from (units:
#: GHz, D, a0^3, Hartree, a0^2, Hartree, cal/(mol K)); the four atomization energies follow.
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("A", "RotA_GHz"), ("B", "RotB_GHz"), ("C", "RotC_GHz"), ("mu", "Dipole_debye"),
    ("alpha", "Polarizability_bohr3"), ("homo", "HOMO_au"), ("lumo", "LUMO_au"), ("gap", "HOMO_LUMO_gap_au"),
    ("r2", "R2_bohr2"), ("zpve", "ZPVE_au"), ("u0", "InternalEnergy_0K_au"), ("u298", "InternalEnergy_298K_au"),
    ("h298", "Enthalphy_298K_au"), ("g298", "GibbsFreeEnergy_298K_au"), ("cv", "Heatcapacity_Cv_cal_mol_K"),
)
ATOMIZATION_COLUMNS = ("u0_atom", "u298_atom", "h298_atom", "g298_atom")
CSV_HEADER = ("mol_id", *(name for name, _ in CSV_COLUMNS), *ATOMIZATION_COLUMNS)
#: PyG reads uncharacterized.txt's lines [9:-2]: 9 header lines, the indices, one trailer line.
UNCHARACTERIZED_HEADER = 9


def atomization_energies(molecule: QM9PackMolecule) -> tuple[float, float, float, float]:
    """U0, U, H and G minus the free atoms' (kcal/mol, negative for a bound molecule)."""
    totals = [float(molecule.properties[key]) for _, key in CSV_COLUMNS[10:14]]
    atoms = [sum(ATOM_REFERENCE_HARTREE[e][k] for e in molecule.elements) for k in range(4)]
    return tuple((total - atom) * HARTREE_TO_KCAL_PER_MOL for total, atom in zip(totals, atoms))  # type: ignore[return-value]


def csv_row(molecule: QM9PackMolecule) -> list[str]:
    """The molecule's gdb9.sdf.csv row."""
    values = [float(molecule.properties[key]) for _, key in CSV_COLUMNS] + list(atomization_energies(molecule))
    return [f"gdb_{molecule.index}", *(repr(v) for v in values)]


def placeholder_row(index: int) -> list[str]:
    """The row of an uncharacterized molecule (no properties in qm9pack; PyG skips it)."""
    return [f"gdb_{index}", *(["nan"] * (len(CSV_HEADER) - 1))]


def mol_block(mol: Chem.Mol | None, index: int) -> str:
    """One SDF record named ``gdb_<index>``; ``mol`` None writes an empty placeholder record."""
    from rdkit import Chem

    mol = Chem.Mol() if mol is None else Chem.Mol(mol)
    if any(bond.GetIsAromatic() for bond in mol.GetBonds()):
        Chem.Kekulize(mol, clearAromaticFlags=True)  # single/double/triple only, as gdb9.sdf
    mol.SetProp("_Name", f"gdb_{index}")
    return Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n"


def write_uncharacterized(handle: IO[str], indices: Sequence[int], note: str) -> None:
    """uncharacterized.txt: a 9-line header, one gdb9 index per line, a trailer line."""
    header = [f"# {note}", "# Molecules of gdb9 without properties: PyG's QM9 skips them.",
              "# Written by examples/qm9/from_qm9pack.py in the layout PyG reads (lines 10 to the",
              "# second-to-last, first field = 1-based gdb9 index).", "#", "#", "#", "#", "  Index"]
    assert len(header) == UNCHARACTERIZED_HEADER
    handle.write("\n".join([*header, *(f"{i:7d}" for i in indices), f"# {len(indices)} molecules"]) + "\n")


def write_csv(handle: IO[str], rows: Iterable[Sequence[str]]) -> None:
    handle.write(",".join(CSV_HEADER) + "\n")
    for row in rows:
        handle.write(",".join(row) + "\n")
