"""Figures from the grid's records (matplotlib; PNG, PDF and SVG): each metric against the epoch,
one line per method and architecture (mean over seeds, a shaded ± standard-error band, labelled
with the number of seeds), the single-task (STL) value as a dashed reference line, and Δm% per
architecture. Methods are told apart by colour, architectures by marker (bars: by hatching) as
well, so the figures survive greyscale printing. Titles use readable metric names."""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from LibMTL_rgb.atomic_io import atomic_savefig
from LibMTL_rgb.benchmark.grid import STL_LABEL
from LibMTL_rgb.benchmark.metric_names import readable_metric, readable_task
from LibMTL_rgb.benchmark.tables import Baseline, ResultTable

#: the file formats written for every figure
FORMATS = ("png", "pdf", "svg")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "++", "--")

__all__ = ["FORMATS", "plot_metric_curves", "plot_delta_m_by_arch"]

Curves = dict[tuple[str, str, Optional[bool]], dict[tuple[str, str], dict[int, list[float]]]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "metric"


def _save(fig: Any, stem: str, formats: Sequence[str]) -> list[str]:
    """``stem.<format>`` for each format (raster at 150 dpi; text kept as text in SVG and as
    TrueType in PDF, as publishers ask); returns the paths."""
    import matplotlib

    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        return [atomic_savefig(fig, f"{stem}.{fmt}", dpi=150, bbox_inches="tight") for fmt in formats]


def _curves(records: Sequence[Mapping[str, Any]], split: str) -> Curves:
    """``{(task, metric, higher_is_better): {(method, arch): {epoch: [value per seed]}}}`` from the
    history rows (``metric`` ``"loss"`` with None: the task's loss)."""
    curves: Curves = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        config = record["config"]
        if record.get("status") != "ok" or config.get("stl_task") is not None or not record.get("tasks"):
            continue
        columns: list[tuple[str, str, Optional[bool]]] = [
            (t, m, int(w) == 1) for t, spec in record["tasks"].items() for m, w in zip(spec["metrics"], spec["weight"])]
        columns += [(t, "loss", None) for t in record["tasks"]]
        series = (config["label"], config["arch"])
        for row in record.get("history", []):
            if row.get("mode") != split or row.get("epoch") is None:
                continue
            for key in columns:
                value = row.get(f"{key[0]}_{key[1]}")
                if isinstance(value, (int, float)) and math.isfinite(value):
                    curves[key][series][int(row["epoch"])].append(float(value))
    return curves


def _styles(series: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """A colour per method and a marker per architecture."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    methods = list(dict.fromkeys(m for m, _ in series))
    archs = list(dict.fromkeys(a for _, a in series))
    return ({m: palette(i % palette.N) for i, m in enumerate(methods)},
            {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(archs)})


def _seed_text(counts: Sequence[int]) -> str:
    distinct = sorted(set(counts))
    return f"n = {'/'.join(map(str, distinct))} seed{'s' if distinct != [1] else ''}"


def plot_metric_curves(records: Sequence[Mapping[str, Any]], out_dir: str, split: str = "test",
                       baseline: Optional[Baseline] = None, formats: Sequence[str] = FORMATS) -> list[str]:
    """One figure per metric (and per task loss) of the ``split`` rows: value vs epoch, a line per
    method and architecture with its ± s.e. band, and the STL value of ``baseline`` (its mean
    over seeds at the best epoch) as a dashed line. Returns the paths written."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    paths = []
    for (task, metric, up), by_series in _curves(records, split).items():
        colours, markers = _styles(sorted(by_series))
        fig, ax = plt.subplots(figsize=(6, 4))
        seed_counts = []
        for (method, arch), by_epoch in sorted(by_series.items()):
            epochs = sorted(by_epoch)
            values = [by_epoch[e] for e in epochs]
            seed_counts += [len(v) for v in values]
            mean = np.array([np.mean(v) for v in values])
            se = np.array([np.std(v, ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0 for v in values])
            ax.plot(epochs, mean, marker=markers[arch], markersize=4, color=colours[method], label=f"{method} ({arch})")
            ax.fill_between(epochs, mean - se, mean + se, color=colours[method], alpha=0.15, linewidth=0)
        handles, _ = ax.get_legend_handles_labels()
        if baseline is not None and metric != "loss" and task in baseline.mean:
            j = next((k for k, r in enumerate(records) if r.get("tasks") and task in r["tasks"]), None)
            names = records[j]["tasks"][task]["metrics"] if j is not None else []
            if metric in names:
                stl = ax.axhline(baseline.mean[task][names.index(metric)], color="black", linestyle="--",
                                 linewidth=1, label=f"{STL_LABEL} (single-task, best epoch)")
                handles.append(stl)
        if any(c > 1 for c in seed_counts):
            handles.append(Patch(color="grey", alpha=0.3, label=f"shaded: ± s.e. over seeds ({_seed_text(seed_counts)})"))
        ax.xaxis.set_major_locator(_integer_locator())
        ax.set_xlabel("epoch")
        name = f"{readable_task(task)}: loss" if metric == "loss" and up is None else readable_metric(task, metric, up)
        ax.set_ylabel(name)
        ax.set_title(f"{name} ({split} set)")
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7)
        fig.tight_layout()
        paths += _save(fig, os.path.join(out_dir, f"curve_{_safe(task + '_' + metric)}_{split}"), formats)
        plt.close(fig)
    return paths


def plot_delta_m_by_arch(tables: Sequence[ResultTable], path: str, formats: Sequence[str] = FORMATS) -> list[str]:
    """Grouped bars: Δm% (± s.e. over seeds) of each method, one bar per architecture (colour and
    hatching); ``path`` without its extension is the stem of the files written."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r.label for t in tables for r in t.rows if r.label != STL_LABEL))
    if not labels or all(r.delta_m is None for t in tables for r in t.rows):
        raise ValueError("no Δm% to plot: the tables have no STL baseline (run the grid with --stl or use --baseline paper:NAME)")
    x = np.arange(len(labels))
    width = 0.8 / max(len(tables), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
    counts = []
    for k, table in enumerate(tables):
        rows = {r.label: r for r in table.rows}
        heights = [rows[l].delta_m if l in rows and rows[l].delta_m is not None else np.nan for l in labels]
        errors = [rows[l].delta_m_stderr if l in rows and rows[l].delta_m_stderr is not None else 0.0 for l in labels]
        counts += [len(rows[l].seeds) for l in labels if l in rows and rows[l].seeds]
        ax.bar(x + (k - (len(tables) - 1) / 2) * width, heights, width, yerr=errors, capsize=3, label=table.arch,
               hatch=HATCHES[k % len(HATCHES)], edgecolor="black", linewidth=0.5)
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--", label=f"{STL_LABEL} (Δm% = 0)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("Δm% (lower is better)")
    ax.set_title(f"Δm% per architecture (error bars: ± s.e., {_seed_text(counts or [1])})")
    ax.legend(title="architecture", fontsize=8)
    fig.tight_layout()
    paths = _save(fig, os.path.splitext(path)[0], formats)
    plt.close(fig)
    return paths
