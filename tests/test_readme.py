"""The README's "Using it" script runs as written, and writes what the README says it writes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)


def test_using_it_block_runs_as_written(tmp_path):
    blocks = python_blocks(readme_section("Using it"))
    assert len(blocks) == 1, "the 'Using it' section should hold exactly one python script"
    script = tmp_path / "using_it.py"
    script.write_text(blocks[0], encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Best Result: Epoch" in done.stdout
    run_dir = tmp_path / "runs" / "quickstart"
    for name in ("best.pt", "last.pt", "history.csv", "summary.json"):  # what the README says it writes
        assert (run_dir / name).is_file(), f"{name} missing; wrote {sorted(p.name for p in run_dir.iterdir())}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_done"] == 5 and set(summary["tasks"]) == {"cls", "reg"}


def test_rgb_options_table_matches_the_registry():
    """The README's table of RGB's flags shows the defaults the registry declares."""
    from LibMTL_rgb.registry import WEIGHTINGS, hyperparameters_of

    declared = {hp.name: hp.default for hp in hyperparameters_of(WEIGHTINGS.get("RGB"))}
    rows = [line.split("|")[1:-1] for line in readme_section("Using it").splitlines() if line.startswith("| `--rgb_")]
    shown = {}
    for flags, _, defaults in rows:
        names = re.findall(r"`--(\w+)`", flags)
        values = [v.strip() for v in defaults.split(",")]
        assert len(names) == len(values), (flags, defaults)
        shown.update(zip(names, values))
    assert set(shown) == set(declared), "every RGB option, and only those, in the README's table"
    for name, text in shown.items():
        default = declared[name]
        expected = {True: "on", False: "off"}[default] if isinstance(default, bool) else default
        value = text if isinstance(expected, str) else type(expected)(text)
        assert value == expected, f"README shows --{name} default {text}, the registry declares {default!r}"
