"""Figures from the grid's records (matplotlib, PNG): each metric against the epoch, one line
per method and architecture (mean over seeds, ± stderr band), and Δm% per architecture."""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from LibMTL_rgb.atomic_io import atomic_savefig
from LibMTL_rgb.benchmark.grid import STL_LABEL
from LibMTL_rgb.benchmark.tables import ResultTable

__all__ = ["plot_metric_curves", "plot_delta_m_by_arch"]


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


def _curves(records: Sequence[Mapping[str, Any]], split: str) -> dict[str, dict[str, dict[int, list[float]]]]:
    """``{column: {"label (arch)": {epoch: [value per seed]}}}`` from the history rows."""
    curves: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        config = record["config"]
        if record.get("status") != "ok" or config.get("stl_task") is not None or not record.get("tasks"):
            continue
        columns = [f"{t}_{m}" for t, spec in record["tasks"].items() for m in spec["metrics"]]
        columns += [f"{t}_loss" for t in record["tasks"]]
        series = f"{config['label']} ({config['arch']})"
        for row in record.get("history", []):
            if row.get("mode") != split or row.get("epoch") is None:
                continue
            for column in columns:
                value = row.get(column)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    curves[column][series][int(row["epoch"])].append(float(value))
    return curves


def plot_metric_curves(records: Sequence[Mapping[str, Any]], out_dir: str, split: str = "test") -> list[str]:
    """One PNG per metric (and per task loss) of the ``split`` rows: value vs epoch, a line
    per method and architecture. Returns the paths written."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for column, by_series in _curves(records, split).items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for series, by_epoch in sorted(by_series.items()):
            epochs = sorted(by_epoch)
            values = [by_epoch[e] for e in epochs]
            mean = np.array([np.mean(v) for v in values])
            se = np.array([np.std(v, ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0 for v in values])
            ax.plot(epochs, mean, marker="o", markersize=3, label=series)
            ax.fill_between(epochs, mean - se, mean + se, alpha=0.2)
        ax.xaxis.set_major_locator(_integer_locator())
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{column} ({split})")
        ax.set_title(column)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"curve_{_safe(column)}_{split}.png")
        atomic_savefig(fig, path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_delta_m_by_arch(tables: Sequence[ResultTable], path: str) -> str:
    """Grouped bars: Δm% (± stderr over seeds) of each method, one bar per architecture."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r.label for t in tables for r in t.rows if r.label != STL_LABEL))
    if not labels or all(r.delta_m is None for t in tables for r in t.rows):
        raise ValueError("no Δm% to plot: the tables have no STL baseline (run the grid with --stl or use --baseline paper:NAME)")
    x = np.arange(len(labels))
    width = 0.8 / max(len(tables), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
    for k, table in enumerate(tables):
        rows = {r.label: r for r in table.rows}
        heights = [rows[l].delta_m if l in rows and rows[l].delta_m is not None else np.nan for l in labels]
        errors = [rows[l].delta_m_stderr if l in rows and rows[l].delta_m_stderr is not None else 0.0 for l in labels]
        ax.bar(x + (k - (len(tables) - 1) / 2) * width, heights, width, yerr=errors, capsize=3, label=table.arch)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("Δm% (lower is better)")
    ax.legend(title="architecture")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path
