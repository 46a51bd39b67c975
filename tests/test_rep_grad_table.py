"""docs/migrating_from_libmtl.md's `rep_grad` table is true: its "here" column is each
weighting's ``supports_rep_grad``, and its "LibMTL" column is what PyPI LibMTL 1.1.5's source
raises for the methods it has (main's were read on GitHub when the table was written)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from LibMTL_rgb.registry import WEIGHTINGS

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migrating_from_libmtl.md"


def rep_grad_table() -> dict[str, tuple[str, str]]:
    """``{weighting: (LibMTL column, our column)}`` from the guide's rep_grad section."""
    section = GUIDE.read_text().split("## Representation gradients", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("weighting", "---"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_every_weighting_has_one_row():
    assert sorted(rep_grad_table()) == sorted(WEIGHTINGS.names())


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_our_column_is_supports_rep_grad(name):
    ours = rep_grad_table()[name][1]
    assert ours.split(" ")[0] in ("runs", "refused"), ours
    assert ours.startswith("runs") == WEIGHTINGS.get(name).supports_rep_grad, (name, ours)


def test_a_refused_weighting_raises_the_documented_error():
    """The column's "refused" is the ValueError at setup (the matrix test runs the others)."""
    import torch.nn as nn

    from LibMTL_rgb.trainer import build_mtl_model

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 4)

        def forward(self, x):
            return self.net(x)

    refused = [n for n, (_, ours) in rep_grad_table().items() if ours == "refused"]
    assert refused
    for name in refused:
        with pytest.raises(ValueError, match="rep_grad"):
            model = build_mtl_model(name, "HPS", ["a", "b"], Encoder, nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)}),
                                    True, False, "cpu", {})
            model.init_param()


def libmtl_weighting_sources() -> dict[str, str]:
    spec = importlib.util.find_spec("LibMTL")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "weighting"
    return {p.stem: p.read_text() for p in folder.glob("*.py") if not p.stem.startswith(("_", "abstract"))}


def test_libmtl_column_matches_libmtl_1_1_5_source():
    sources = libmtl_weighting_sources()
    table = rep_grad_table()
    assert len(sources) >= 10
    for name, source in sources.items():
        theirs = table[name][0]
        refuses_rep = re.search(rf"No support method {name} with representation gradients", source) is not None
        refuses_param = re.search(rf"No support method {name} with parameter gradients", source) is not None
        assert refuses_rep == (theirs == "refused"), (name, theirs)
        assert refuses_param == ("refuses `rep_grad=False`" in theirs), (name, theirs)
        calls_loss_backward = "loss.backward()" in source and "_backward_new_grads" not in source
        assert calls_loss_backward == (theirs == "runs (encoder untrained)"), (name, theirs)
    absent = {name for name, (theirs, _) in table.items() if theirs == "absent"}
    assert not absent & set(sources)


def test_methods_pages_rep_grad_column_is_supports_rep_grad():
    """docs/methods*.md's `--rep_grad` column (the 4th) says "no" exactly for the refusing methods."""
    seen = set()
    for page in sorted(GUIDE.parent.glob("methods*.md")):
        for line in page.read_text().splitlines():
            match = re.match(r"\| `(\w+)` \|", line)
            if match and match.group(1) in WEIGHTINGS.names():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                says_no = cells[3].strip("*").startswith("no")
                assert says_no == (not WEIGHTINGS.get(match.group(1)).supports_rep_grad), (page.name, line)
                seen.add(match.group(1))
    assert {"EW", "PCGrad", "GradDrop", "RGB", "MoCo"} <= seen
