"""``import LibMTL_rgb`` (and every example's ``--help``) loads no heavy optional library:
torchvision, torchjd, torch_geometric, matplotlib and tensorboard are imported where used."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torchvision", "torchjd", "torch_geometric", "matplotlib", "tensorboard", "scipy")


def loaded_heavy_modules(code: str) -> list[str]:
    """The HEAVY top-level modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return eval(done.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_library():
    assert loaded_heavy_modules("import LibMTL_rgb, LibMTL_rgb.model, LibMTL_rgb.model.aspp, LibMTL_rgb.benchmark") == []


def test_registry_knows_every_method_without_torchjd():
    code = ("from LibMTL_rgb import WEIGHTINGS, LibMTL_args\n"
            "assert {'MGDA', 'PCGrad', 'CAGrad', 'Nash_MTL', 'UPGrad', 'RGB', 'EW'} <= set(WEIGHTINGS.names())\n"
            "LibMTL_args.parse_args(['--weighting', 'CAGrad', '--calpha', '0.4'])")
    assert loaded_heavy_modules(code) == []


def test_torchjd_loads_when_a_method_needs_it():
    code = ("import torch\nfrom LibMTL_rgb.weighting.torchjd_methods import PCGradAggregator\n"
            "aggregator = PCGradAggregator()\nassert type(aggregator).__module__.startswith('torchjd')")
    assert set(loaded_heavy_modules(code)) - {"scipy"} == {"torchjd"}  # torchjd itself may load scipy


@pytest.mark.parametrize("example", ["toy", "nyu", "cityscapes", "qm9", "celeba"])
def test_example_help_loads_no_heavy_library(example):
    main = REPO / "examples" / example / "main.py"
    code = (f"import sys, runpy\nsys.argv = [{str(main)!r}, '--help']\nsys.path.insert(0, {str(main.parent)!r})\n"
            f"try:\n    runpy.run_path({str(main)!r}, run_name='__main__')\nexcept SystemExit as done:\n"
            f"    assert done.code in (0, None), done.code")
    assert loaded_heavy_modules(code) == []
