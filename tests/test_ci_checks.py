"""CI runs what the README tells a contributor to run: README "Quick start" command 2 is a line
of .ci/run, verbatim; it runs the pinned linter and type checker before the tests."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.M | re.S).group(1)
    item = re.search(r"^2\. .*?```bash\n(.*?)\n\s*```", quick_start, flags=re.M | re.S).group(1)
    return item.strip()


def test_ci_runs_the_readme_command_verbatim():
    command = readme_test_command()
    assert command in [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_lint_and_type_check_run_before_the_tests_with_pinned_versions():
    steps = [step.strip() for step in readme_test_command().split("&&")]
    assert steps.index("python -m ruff check .") < steps.index("python -m mypy") < steps.index("python -m pytest -q tests")
    assert "-r requirements-dev.txt" in steps[0]
    pins = [line for line in (REPO / "requirements-dev.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert sorted(p.split("==")[0] for p in pins) == ["mypy", "ruff"] and all(re.fullmatch(r"[\w-]+==[\d.]+", p) for p in pins)
    assert (REPO / "ruff.toml").is_file() and "files = LibMTL_rgb, LibMTL_rgb_examples" in (REPO / "mypy.ini").read_text()
