"""The editable install works from any folder, also one holding a folder named like the package
(a clone named ``LibMTL_rgb``): both packages are plain folders at the project root, found through
a path entry rather than an import-hook finder that such a folder would shadow."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import LibMTL_rgb
import LibMTL_rgb_examples

ROOT = Path(LibMTL_rgb.__file__).resolve().parent.parent


def test_both_packages_are_top_level_folders_of_the_project() -> None:
    assert Path(LibMTL_rgb_examples.__file__).resolve().parent == ROOT / "LibMTL_rgb_examples"
    assert (ROOT / "setup.py").is_file()


def test_a_folder_named_like_the_package_does_not_shadow_it(tmp_path: Path) -> None:
    (tmp_path / "LibMTL_rgb").mkdir()  # e.g. the parent folder of a clone named LibMTL_rgb
    (tmp_path / "LibMTL_rgb_examples").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if os.environ.get("PYTHONPATH"):  # a worktree run: keep its path entries, after the working directory
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    code = ("from LibMTL_rgb import Trainer, LibMTL_args; from LibMTL_rgb_examples import example_runner; "
            "import LibMTL_rgb; print(LibMTL_rgb.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == ROOT / "LibMTL_rgb" / "__init__.py"
