"""Bonds for a QM9 geometry that equal its SMILES graph. RDKit's ``DetermineBonds`` perceives
bonds from the XYZ coordinates; where it fails (about 5 % of QM9: strained cages whose bond
orders it cannot assign) or perceives another graph than the SMILES (e.g. a neutral form of a
zwitterionic SMILES), the SMILES bonds are mapped onto the XYZ atoms: the SMILES graph (hydrogens
explicit) is matched, element to element, into the graph of atom pairs closer than a
covalent-radius cutoff, widened step by step until it fits, and the SMILES's Kekulé bond
orders and formal charges are copied onto the matched atoms. A geometry that rearranged during
the DFT relaxation so that no cutoff fits its SMILES keeps the bonds of its coordinates (and is
counted apart)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rdkit import Chem, RDLogger
from rdkit.Chem import rdDetermineBonds

RDLogger.DisableLog("rdApp.*")

#: Covalent-radius factors tried in turn for the proximity graph the SMILES is matched into
#: (RDKit's default connectivity factor is 1.3).
COVALENT_FACTORS = (1.3, 1.45, 1.6, 1.8, 2.0)


@dataclass(frozen=True)
class BondedMolecule:
    """The molecule with its conformer and bonds; ``repair`` says how they were obtained when
    ``DetermineBonds`` alone did not give the SMILES graph (None: it did). ``matches_smiles`` is
    False only for a geometry whose constitution is not its SMILES's (rearranged during the DFT
    relaxation: a SMILES bond spans more than the widest cutoff); its bonds are the XYZ's."""

    mol: Chem.Mol
    repair: str | None
    matches_smiles: bool = True


def xyz_molecule(elements: Sequence[str], xyz: Sequence[Sequence[float]]) -> Chem.Mol:
    """Atoms and one conformer, no bonds."""
    block = f"{len(elements)}\n\n" + "".join(f"{e} {x:.10f} {y:.10f} {z:.10f}\n" for e, (x, y, z) in zip(elements, xyz))
    mol = Chem.MolFromXYZBlock(block)
    if mol is None:
        raise ValueError(f"RDKit cannot read the XYZ block of {len(elements)} atoms")
    return mol


def smiles_with_hydrogens(smiles: str) -> Chem.Mol:
    """The SMILES graph with explicit hydrogens, Kekulé bonds (PyG reads bonds unsanitised)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    return mol


def graph_key(mol: Chem.Mol) -> str:
    """A canonical string of the graph (elements, bond orders, charges; no stereo), equal for
    equal graphs whatever the Kekulé structure."""
    copy = Chem.Mol(mol)
    Chem.SanitizeMol(copy)
    return Chem.MolToSmiles(copy, isomericSmiles=False, allHsExplicit=True)


def _skeleton(mol: Chem.Mol) -> Chem.Mol:
    """Elements and connectivity only: every bond single, no charges or aromatic flags."""
    rw = Chem.RWMol(mol)
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
    for bond in rw.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    skeleton = rw.GetMol()
    skeleton.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(skeleton)
    return skeleton


def map_smiles_bonds(geometry: Chem.Mol, template: Chem.Mol) -> tuple[Chem.Mol, float]:
    """``geometry``'s atoms with ``template``'s bonds and charges, through an element-preserving
    match of the template graph into the proximity graph; returns the molecule and the
    covalent factor that admitted the match."""
    query = _skeleton(template)
    for factor in COVALENT_FACTORS:
        near = Chem.Mol(geometry)
        rdDetermineBonds.DetermineConnectivity(near, useHueckel=False, covFactor=factor)
        match = _skeleton(near).GetSubstructMatch(query)
        if len(match) == template.GetNumAtoms() == geometry.GetNumAtoms():
            break
    else:
        raise ValueError(f"the SMILES graph does not fit the geometry within {COVALENT_FACTORS[-1]}x covalent radii")
    rw = Chem.RWMol(geometry)
    for bond in list(rw.GetBonds()):
        rw.RemoveBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
    for atom in template.GetAtoms():
        target = rw.GetAtomWithIdx(match[atom.GetIdx()])
        target.SetFormalCharge(atom.GetFormalCharge())
        target.SetNoImplicit(True)
    for bond in template.GetBonds():
        rw.AddBond(match[bond.GetBeginAtomIdx()], match[bond.GetEndAtomIdx()], bond.GetBondType())
    mol = rw.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return mol, factor


def _xyz_bonds(geometry: Chem.Mol) -> Chem.Mol:
    """Bonds perceived from the coordinates alone: ``DetermineBonds`` with charge 0, or the
    covalent-radius connectivity with single bonds where bond orders cannot be assigned."""
    mol = Chem.Mol(geometry)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except Exception:  # noqa: BLE001 - RDKit's errors on unassignable orders vary
        mol = Chem.Mol(geometry)
        rdDetermineBonds.DetermineConnectivity(mol, useHueckel=False)
    return mol


def bonded_molecule(elements: Sequence[str], xyz: Sequence[Sequence[float]], smiles: str) -> BondedMolecule:
    """The molecule at ``xyz`` with bonds equal to the ``smiles`` graph (module docstring)."""
    geometry = xyz_molecule(elements, xyz)
    template = smiles_with_hydrogens(smiles)
    expected = graph_key(template)
    perceived = Chem.Mol(geometry)
    try:
        rdDetermineBonds.DetermineBonds(perceived, charge=Chem.GetFormalCharge(template))
        if graph_key(perceived) == expected:
            return BondedMolecule(perceived, None)
        reason = "DetermineBonds perceived another graph"
    except Exception as err:  # noqa: BLE001 - RDKit raises RuntimeError, ValueError, Boost errors on cages
        reason = f"DetermineBonds failed ({type(err).__name__})"
    try:
        mol, factor = map_smiles_bonds(geometry, template)
    except ValueError as err:
        return BondedMolecule(_xyz_bonds(geometry), f"{reason}; {err} (a rearranged structure): bonds from the XYZ "
                                                    "coordinates", matches_smiles=False)
    if graph_key(mol) != expected:
        raise ValueError("the mapped bonds do not reproduce the SMILES graph")
    return BondedMolecule(mol, f"{reason}; SMILES bonds mapped onto the XYZ atoms (cutoff {factor}x covalent radii)")
