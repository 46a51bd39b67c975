"""Paper-ready output of ``benchmark table`` / ``plot``: LaTeX booktabs tables (mean ± s.e., n
seeds, consistent decimals, best in bold) and PDF/SVG figures with readable titles, the STL
reference line, a labelled ± s.e. band and a marker per architecture. Runs on
``fixtures/fake_example.py`` (no torch: milliseconds per run)."""
import os

import pytest

from LibMTL_rgb.benchmark import grid
from LibMTL_rgb.benchmark.__main__ import main
from LibMTL_rgb.benchmark.latex import column_decimals, latex_escape
from LibMTL_rgb.benchmark.metric_names import readable_metric

FAKE = os.path.join(os.path.dirname(__file__), "fixtures", "fake_example.py")


@pytest.fixture(scope="module")
def fake_grid(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("grid"))
    assert main(["run", FAKE, "--weightings", "EW", "RGB", "--archs", "HPS", "MMoE", "--seeds", "0", "1", "--stl",
                 "--out", out]) == 0
    return out


def test_latex_helpers():
    assert latex_escape("RGB[rgb_steps=30] 5% & more") == r"RGB[rgb\_steps=30] 5\% \& more"
    assert latex_escape("Δm% ↓") == r"$\Delta$m\% $\downarrow$"
    assert column_decimals([123.4, 5.0]) == 0 and column_decimals([0.5123, 0.6]) == 3
    assert column_decimals([0.5, 0.6], [0.0004]) == 4  # the smallest s.e. keeps one significant digit
    assert column_decimals([None, float("nan")]) == 2
    assert readable_metric("depth", "abs_err", False) == "Depth: absolute error ↓"
    assert readable_metric("0", "mae") == "μ: MAE" and readable_metric("t", "odd_key") == "T: odd key"


def test_table_writes_booktabs_latex(fake_grid):
    assert main(["table", fake_grid]) == 0
    tex = open(os.path.join(fake_grid, "tables", "results.tex")).read()
    assert tex.count(r"\toprule") == 3 and r"\bottomrule" in tex  # HPS, MMoE, Δm% by architecture
    assert r"mean $\pm$ standard error over $n = 2$ seeds" in tex
    assert r"T0: MAE $\downarrow$ & T1: accuracy $\uparrow$ & $\Delta$m\% $\downarrow$ & MR $\downarrow$ & $n$ \\" in tex
    # fake metrics (seed s): EW t0 = 1.0 + 0.1 s, RGB t0 = 0.8 + 0.1 s -> means 1.05, 0.85, s.e. 0.05
    assert r"EW & $1.05 \pm 0.05$" in tex and r"RGB & $\mathbf{0.85} \pm 0.05$" in tex
    lines = [line for line in tex.splitlines() if line.startswith("RGB &")]
    assert len(lines) == 3 and all(r"\mathbf{-17.57} \pm 0.61" in line for line in lines)


def test_plot_writes_pdf_svg_with_readable_labels(fake_grid):
    assert main(["plot", fake_grid]) == 0
    plots = os.path.join(fake_grid, "plots")
    for ext in ("png", "pdf", "svg"):
        assert os.path.getsize(os.path.join(plots, f"curve_t0_mae_test.{ext}")) > 1000
        assert os.path.isfile(os.path.join(plots, f"delta_m_by_arch.{ext}"))
    svg = open(os.path.join(plots, "curve_t0_mae_test.svg")).read()
    assert "T0: MAE ↓ (test set)" in svg  # a title people read, not the key t0_mae
    assert "STL (single-task, best epoch)" in svg and "± s.e. over seeds (n = 2 seeds)" in svg
    assert "EW (HPS)" in svg and "EW (MMoE)" in svg
    assert main(["plot", fake_grid, "--formats", "pdf", "--output-dir", os.path.join(fake_grid, "pdf_only")]) == 0
    assert {os.path.splitext(n)[1] for n in os.listdir(os.path.join(fake_grid, "pdf_only"))} == {".pdf"}


def test_curves_mark_architectures_differently(fake_grid):
    from LibMTL_rgb.benchmark.plots import MARKERS, _styles

    colours, markers = _styles([("EW", "HPS"), ("EW", "MMoE"), ("RGB", "HPS")])
    assert markers == {"HPS": MARKERS[0], "MMoE": MARKERS[1]} and colours["EW"] != colours["RGB"]
    assert grid.load_results(fake_grid)
