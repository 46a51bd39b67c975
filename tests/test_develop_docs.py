"""Every ``python`` snippet of the developer guide (``docs/develop/*.md``) runs as it is.

Each page's snippet runs in its own process (they register classes in the global registries)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

DEVELOP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "develop")
PAGES = sorted(name for name in os.listdir(DEVELOP) if name.endswith(".md") and name != "index.md")


def snippets(page: str) -> list[str]:
    with open(os.path.join(DEVELOP, page), encoding="utf-8") as handle:
        return re.findall(r"```python\n(.*?)```", handle.read(), flags=re.S)


def test_the_guide_has_its_four_pages():
    assert PAGES == ["architecture.md", "component.md", "dataset.md", "weighting.md"]


RUNNER = """
import sys
for path in sys.argv[1:]:
    code = open(path, encoding="utf-8").read()
    exec(compile(code, path, "exec"), {"__name__": "__main__"})
    print("SNIPPET OK", path, flush=True)
"""


def test_every_snippet_runs(tmp_path):
    """One process runs the pages' snippets one after the other, each in a fresh namespace."""
    files = []
    for page in PAGES:
        code = snippets(page)
        assert len(code) == 1, f"{page}: one runnable snippet expected"
        files.append(tmp_path / page.replace(".md", ".py"))
        files[-1].write_text(code[0], encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, files)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("SNIPPET OK")] == list(map(str, files))
    # the range check the weighting page shows
    assert "weight_args['temperature'] of SoftmaxLoss must be > 0, got 0.0" in done.stdout
