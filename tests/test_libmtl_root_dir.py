"""``get_root_dir()`` as LibMTL's examples use it: the checkout whose ``examples/`` run (issue 18)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import LibMTL_rgb

PACKAGE_PARENT = str(Path(LibMTL_rgb.__file__).resolve().parent.parent)
# LibMTL's Office-31 example reads its file lists this way.
OFFICE_SCRIPT = """
import os
from LibMTL_rgb.utils import get_root_dir
with open(os.path.join(get_root_dir(), 'examples/office', 'data_txt/office-31/amazon_train.txt')) as f:
    print(get_root_dir(), f.read().strip())
"""


def _run(script: Path, cwd: Path, **env: str) -> str:
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, check=False, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_libmtl_office_example_finds_its_data_txt(tmp_path):
    checkout = tmp_path / "LibMTL"
    office = checkout / "examples" / "office"
    (office / "data_txt" / "office-31").mkdir(parents=True)
    (office / "data_txt" / "office-31" / "amazon_train.txt").write_text("img/0.jpg 3\n")
    (office / "main.py").write_text(OFFICE_SCRIPT)
    expected = f"{checkout} img/0.jpg 3"
    assert _run(office / "main.py", cwd=office) == expected  # cd examples/office; python main.py
    assert _run(office / "main.py", cwd=tmp_path) == expected  # python LibMTL/examples/office/main.py


def test_elsewhere_the_package_parent_and_the_variable_overrides(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("from LibMTL_rgb.utils import get_root_dir\nprint(get_root_dir())\n")
    assert _run(script, cwd=tmp_path) == PACKAGE_PARENT
    assert _run(script, cwd=tmp_path, LIBMTL_ROOT_DIR=str(tmp_path / "x")) == str(tmp_path / "x")
