"""The QM9 results table of docs/results.md from a folder of runs (``results_budget.sh``):
each method's test MAEs at its best validation epoch (``summary.json``), Δm% against the
single-task runs of the same budget and MR over them and STL (paper §3.1, with
``LibMTL_rgb.benchmark``), the paper's Table 2 Δm% and MR beside, and the mean training time
per epoch (``history.csv``); then the paper's Table 2 rows of the same methods.

    python examples/qm9/results_table.py OUT [--methods EW RGB MGDA PCGrad FAMO]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qm9_targets import DEFAULT_TARGETS, QM9_COLUMNS

from LibMTL_rgb.benchmark.delta_m import delta_m
from LibMTL_rgb.benchmark.paper_results import paper_table
from LibMTL_rgb.benchmark.ranking import mean_rank

#: Our run name -> the paper's Table 2 row (LS is EW: the unweighted sum of the losses).
PAPER_ROW = {"EW": "LS", "RGB": "RGB", "MGDA": "MGDA", "PCGrad": "PCGrad", "FAMO": "FAMO", "STL": "STL"}


def _summary(out: str, name: str) -> dict | None:
    path = os.path.join(out, name, "summary.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def train_seconds_per_epoch(out: str, name: str) -> float | None:
    """The mean ``time`` of the ``train`` rows of the run's history.csv."""
    path = os.path.join(out, name, "history.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        times = [float(row["time"]) for row in csv.DictReader(handle) if row["mode"] == "train"]
    return statistics.fmean(times) if times else None


def results_table(out: str, methods: Sequence[str]) -> str:
    tasks = [str(t) for t in DEFAULT_TARGETS]
    weight = {t: [0] for t in tasks}
    stl, missing = {}, []
    for task in tasks:
        summary = _summary(out, f"STL_{task}")
        if summary is None:
            missing.append(task)
        else:
            stl[task] = summary["best"]["test"][task]
    results = {}
    for method in methods:
        summary = _summary(out, method)
        if summary is not None:
            results[method] = summary["best"]["test"]
    if missing:
        return f"STL runs missing for tasks {missing}: no Δm% / MR\n"
    ranked = mean_rank({"STL": stl, **results}, weight)
    paper = paper_table("qm9")
    symbols = [QM9_COLUMNS[int(t)].name for t in tasks]
    lines = ["| Method | " + " | ".join(symbols) + " | MR ↓ | Δm% ↓ | paper MR | paper Δm% | s / train epoch |",
             "|---" * (len(tasks) + 6) + "|"]
    for method, result in {"STL": stl, **results}.items():
        row = paper.row(PAPER_ROW[method]) if method in PAPER_ROW else None
        seconds = (statistics.fmean(filter(None, (train_seconds_per_epoch(out, f"STL_{t}") for t in tasks)))
                   if method == "STL" else train_seconds_per_epoch(out, method))
        cells = [f"{result[t][0]:.4g}" for t in tasks]
        dm = 0.0 if method == "STL" else delta_m(result, stl, weight)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {ranked[method]:.2f} | {dm:.1f} | "
                     f"{row.mr if row else ''} | {row.delta_m if row else ''} | "
                     f"{seconds:.1f}{' (mean of 11)' if method == 'STL' else ''} |")
    return "\n".join(lines) + "\n"


def paper_rows(methods: Sequence[str]) -> str:
    """Paper Table 2's rows of STL and ``methods`` (MAE in the same units, MR, Δm%)."""
    paper = paper_table("qm9")
    symbols = [QM9_COLUMNS[t].name for t in DEFAULT_TARGETS]
    lines = ["| Table 2 row | " + " | ".join(symbols) + " | MR ↓ | Δm% ↓ |", "|---" * (len(symbols) + 3) + "|"]
    for method in ["STL", *methods]:
        row = paper.row(PAPER_ROW.get(method, method))
        label = row.method if row.method == method else f"{row.method} (= {method})"
        lines.append(f"| {label} | " + " | ".join(f"{row.values[k][0]:g}" for k in symbols)
                     + f" | {row.mr} | {row.delta_m} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the folder of runs (results_budget.sh's OUT)")
    parser.add_argument("--methods", nargs="+", default=["EW", "RGB", "MGDA", "PCGrad", "FAMO"])
    args = parser.parse_args(argv)
    print(results_table(args.out, args.methods))
    print(paper_rows(args.methods), end="")


if __name__ == "__main__":
    main()
