"""Import an example's ``main.py`` and sibling modules as the script itself would see them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str, *siblings: str) -> tuple[ModuleType, ...]:
    """``(main_module, *sibling_modules)`` of ``examples/<name>``: imported with the example's
    folder first on ``sys.path``, after dropping same-named modules another example cached.
    The folder stays on ``sys.path``: a ``main()`` imports some siblings only after parsing
    its flags (so ``--help`` loads no heavy library), as the script would from its folder."""
    folder = EXAMPLES / name
    for stem in (p.stem for p in folder.glob("*.py") if p.stem != "main"):
        sys.modules.pop(stem, None)
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"{name}_example_main", folder / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    return (main, *(importlib.import_module(s) for s in siblings))
