"""Paper-like result tables from the grid's JSON records: per architecture, one row per method
with each metric's mean ± stderr over seeds (test metrics at the Trainer's best epoch), Δm%
(mean ± stderr over seeds) against the STL baseline, and MR over the rows of the table
(STL included, as in the paper). Markdown and CSV.

The baseline is either the grid's own STL runs (``--stl``; a run's seed is compared with the
STL runs of the same seed when they are all there, else with the STL mean over seeds) or a
fixed result, e.g. the paper's STL row (:func:`paper_baseline`).
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from LibMTL_rgb.benchmark.delta_m import Average, delta_m, delta_m_per_task
from LibMTL_rgb.benchmark.grid import STL_LABEL
from LibMTL_rgb.benchmark.paper_results import paper_stl, paper_table
from LibMTL_rgb.benchmark.ranking import Ties, mean_rank

Result = dict[str, list[float]]

__all__ = [
    "Baseline", "MethodRow", "ResultTable", "run_metrics", "stl_baseline", "paper_baseline",
    "build_tables", "to_markdown", "to_csv", "delta_m_by_arch_markdown", "mer_markdown",
]


@dataclass
class Baseline:
    """STL results: ``by_seed`` ``{seed: result}`` (complete ones only) and ``mean`` (per task,
    over whatever seeds there are); ``source`` says where they came from."""

    mean: Result
    by_seed: dict[int, Result] = field(default_factory=dict)
    stderr: Optional[Result] = None
    source: str = ""

    def for_seed(self, seed: int) -> Result:
        return self.by_seed.get(seed, self.mean)


@dataclass
class MethodRow:
    """One row: ``label`` (method), mean and stderr per metric, Δm% (mean, stderr, per task),
    MR, the seeds that succeeded and how many runs failed."""

    label: str
    mean: Result
    stderr: Result
    seeds: list[int]
    failed: int = 0
    delta_m: Optional[float] = None
    delta_m_stderr: Optional[float] = None
    delta_m_tasks: dict[str, float] = field(default_factory=dict)
    mr: Optional[float] = None
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass
class ResultTable:
    """The rows of one architecture, with the tasks' metric names and ``weight``."""

    arch: str
    tasks: dict[str, dict[str, list]]
    rows: list[MethodRow]


def run_metrics(record: Mapping[str, Any], split: str = "test") -> Optional[Result]:
    """The metrics of a successful run at its best epoch: ``split='test'`` the test metrics
    (LibMTL: selected on validation when there is one), ``'val'`` the selecting metrics."""
    best = record.get("best") or {}
    if record.get("status") != "ok" or best.get("result") is None:
        return None
    chosen = best.get("test") if split == "test" and best.get("test") is not None else best.get("val") or best["result"]
    return {task: [float(v) for v in values] for task, values in chosen.items()}


def _mean_stderr(results: Sequence[Result]) -> tuple[Result, Result]:
    tasks = results[0].keys()
    mean = {t: np.mean([r[t] for r in results], axis=0).tolist() for t in tasks}
    if len(results) < 2:
        return mean, {t: [math.nan] * len(mean[t]) for t in tasks}
    se = {t: (np.std([r[t] for r in results], axis=0, ddof=1) / math.sqrt(len(results))).tolist() for t in tasks}
    return mean, se


def stl_baseline(records: Sequence[Mapping[str, Any]], split: str = "test") -> Optional[Baseline]:
    """The baseline from the grid's STL runs (``config.stl_task`` set), or None if there are none."""
    per_task: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for record in records:
        task = record["config"].get("stl_task")
        metrics = run_metrics(record, split)
        if task is not None and metrics is not None and task in metrics:
            per_task[task][int(record["config"]["seed"])] = metrics[task]
    if not per_task:
        return None
    mean = {t: np.mean(list(by_seed.values()), axis=0).tolist() for t, by_seed in per_task.items()}
    stderr = {}
    for t, by_seed in per_task.items():
        vals = list(by_seed.values())
        stderr[t] = ((np.std(vals, axis=0, ddof=1) / math.sqrt(len(vals))).tolist() if len(vals) > 1
                     else [math.nan] * len(mean[t]))
    seeds = set.intersection(*(set(by_seed) for by_seed in per_task.values()))
    by_seed = {s: {t: per_task[t][s] for t in per_task} for s in seeds}
    return Baseline(mean, by_seed, stderr, "STL runs of this grid")


def paper_baseline(name: str, tasks: Mapping[str, Mapping[str, Any]], metric_values: Sequence[Result],
                   units: str = "auto") -> tuple[Baseline, list[str]]:
    """The paper's STL row of table ``name`` as a baseline for ``tasks`` (our runs' tasks),
    and notes about how it was matched.

    Tasks are matched by name; when the names differ but the metric counts agree task by task,
    by position. ``units``: ``percent`` (our metrics are in percent like the paper's),
    ``fraction`` (ours are fractions: the paper's percent metrics are divided by 100) or
    ``auto`` (fraction for a percent metric whose values in ``metric_values`` are all ≤ 1.5).
    """
    table = paper_table(name)
    notes = []
    ours = list(tasks)
    paper_tasks = list(table.tasks)
    if set(ours) == set(paper_tasks):
        mapping = {t: t for t in ours}
    elif len(ours) == len(paper_tasks) and all(
        len(tasks[o]["metrics"]) == len(table.tasks[p].metrics) for o, p in zip(ours, paper_tasks)
    ):
        mapping = dict(zip(ours, paper_tasks))
        notes.append("tasks matched to " + table.source + " by position: "
                     + ", ".join(f"{o}={p}" for o, p in mapping.items() if o != p))
    else:
        raise ValueError(f"the runs' tasks {ours} do not match {table.source}'s {paper_tasks} (by name or by position)")
    if units not in ("auto", "percent", "fraction"):
        raise ValueError(f"units must be auto, percent or fraction, got {units!r}")
    stl_pct = paper_stl(name)
    stl_frac = paper_stl(name, percent_as_fraction=True)
    base: Result = {}
    for ours_task, paper_task in mapping.items():
        values = []
        for j, pct in enumerate(table.tasks[paper_task].percent):
            observed = [r[ours_task][j] for r in metric_values if ours_task in r]
            as_fraction = units == "fraction" or (units == "auto" and pct and observed and max(observed) <= 1.5)
            values.append(stl_frac[paper_task][j] if as_fraction else stl_pct[paper_task][j])
            if pct and as_fraction and units == "auto":
                notes.append(f"{ours_task}/{tasks[ours_task]['metrics'][j]}: our values are fractions, the paper's "
                             "percent STL value was divided by 100")
        base[ours_task] = values
    return Baseline(base, {}, None, f"paper {table.source} STL"), notes


def build_tables(records: Sequence[Mapping[str, Any]], baseline: Optional[Baseline] = None, split: str = "test",
                 delta_average: Average = "task", mr_average: Average = "task", ties: Ties = "min") -> list[ResultTable]:
    """One :class:`ResultTable` per architecture of the multi-task runs in ``records``."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    failed: dict[tuple[str, str], int] = defaultdict(int)
    tasks_of_arch: dict[str, dict] = {}
    for record in records:
        config = record["config"]
        if config.get("stl_task") is not None or record.get("status") == "skipped":
            continue
        arch, label = config["arch"], config["label"]
        metrics = run_metrics(record, split)
        if metrics is None:
            failed[(arch, label)] += 1
            groups[arch].setdefault(label, [])
            continue
        tasks_of_arch.setdefault(arch, record["tasks"])
        groups[arch][label].append((int(config["seed"]), metrics, record.get("diagnostics")))
    tables = []
    shared_baseline = baseline
    for arch, by_label in groups.items():
        baseline = shared_baseline
        tasks = tasks_of_arch.get(arch)
        if tasks is None:  # every run of this architecture failed
            rows = [MethodRow(label, {}, {}, [], failed[(arch, label)]) for label in by_label]
            tables.append(ResultTable(arch, {}, rows))
            continue
        weight = {t: spec["weight"] for t, spec in tasks.items()}
        rows = []
        if baseline is not None and set(baseline.mean) != set(tasks):
            warnings.warn(f"{arch}: the STL baseline has tasks {sorted(baseline.mean)} but the runs have {sorted(tasks)}; "
                          "no Δm% (run the missing STL tasks, or use the paper's STL)")
            baseline = None
        if baseline is not None:
            rows.append(MethodRow(STL_LABEL, dict(baseline.mean), dict(baseline.stderr or {}),
                                  sorted(baseline.by_seed), 0, 0.0, None,
                                  {t: 0.0 for t in baseline.mean}))
        for label, runs in by_label.items():
            row = MethodRow(label, {}, {}, sorted(s for s, _, _ in runs), failed[(arch, label)])
            if runs:
                row.mean, row.stderr = _mean_stderr([m for _, m, _ in runs])
                row.diagnostics = _mean_diagnostics([d for _, _, d in runs])
                if baseline is not None:
                    values = [delta_m(m, baseline.for_seed(s), weight, delta_average) for s, m, _ in runs]
                    row.delta_m = float(np.mean(values))
                    row.delta_m_stderr = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
                    per_task = [delta_m_per_task(m, baseline.for_seed(s), weight) for s, m, _ in runs]
                    row.delta_m_tasks = {t: float(np.mean([p[t] for p in per_task])) for t in per_task[0]}
            rows.append(row)
        ranked = [r for r in rows if r.mean]
        if len(ranked) > 1:
            mr = mean_rank({r.label: r.mean for r in ranked}, weight, mr_average, ties)
            for r in ranked:
                r.mr = mr[r.label]
        tables.append(ResultTable(arch, tasks, rows))
    return tables


def _mean_diagnostics(summaries: Sequence[Optional[Mapping[str, Any]]]) -> dict[str, float]:
    """Mean over seeds of the diagnostics at the minimum mean validation loss (Figure 5)."""
    rows = [s["at_min_mean_val_loss"] for s in summaries if s and "at_min_mean_val_loss" in s]
    keys = ("conflict", "proximity", "condition_number", "mer_balance", "gmae", "sd_mae", "mean_loss")
    out = {}
    for key in keys:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
    return out


# ---------------------------------------------------------------- rendering
def _fmt(value: Optional[float], digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _pm(mean: Optional[float], se: Optional[float]) -> str:
    if mean is None:
        return "—"
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return _fmt(mean)
    return f"{_fmt(mean)} ± {_fmt(se, 2)}"


def _metric_columns(table: ResultTable) -> list[tuple[str, int, str]]:
    cols = []
    for task, spec in table.tasks.items():
        for j, (name, w) in enumerate(zip(spec["metrics"], spec["weight"])):
            cols.append((task, j, f"{task} {name} {'↑' if int(w) == 1 else '↓'}"))
    return cols


def to_markdown(table: ResultTable, wide: bool = False, max_metric_columns: int = 12) -> str:
    """A Markdown table (metrics as columns unless there are more than ``max_metric_columns``
    and not ``wide``: then Δm%/MR only, the metrics stay in the CSV)."""
    cols = _metric_columns(table)
    show_metrics = wide or len(cols) <= max_metric_columns
    header = ["Method"] + ([c for _, _, c in cols] if show_metrics else []) + ["Δm% ↓", "MR ↓", "seeds", "failed"]
    lines = [f"### {table.arch}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [row.label]
        if show_metrics:
            for task, j, _ in cols:
                m = row.mean.get(task, [None] * (j + 1))[j]
                se = row.stderr.get(task, [None] * (j + 1))[j] if row.stderr.get(task) else None
                cells.append(_pm(m, se))
        cells += [_pm(row.delta_m, row.delta_m_stderr), _fmt(row.mr, 3), str(len(row.seeds)) if row.seeds else "—", str(row.failed)]
        lines.append("| " + " | ".join(cells) + " |")
    if not show_metrics:
        lines += ["", f"({len(cols)} metrics: see the CSV for the per-metric columns)"]
    return "\n".join(lines) + "\n"


def to_csv(tables: Sequence[ResultTable]) -> str:
    """All tables as one CSV: arch, method, seeds, failed, ``<task>/<metric>`` and
    ``<task>/<metric>_stderr`` per metric, delta_m, delta_m_stderr, ``delta_m/<task>``, MR,
    and the diagnostics at the minimum mean validation loss (``mer/<name>``)."""
    buffer = io.StringIO()
    rows = []
    for table in tables:
        cols = _metric_columns(table)
        for row in table.rows:
            out: dict[str, Any] = {"arch": table.arch, "method": row.label, "seeds": " ".join(map(str, row.seeds)),
                                   "failed": row.failed}
            for task, j, _ in cols:
                name = table.tasks[task]["metrics"][j]
                if row.mean.get(task):
                    out[f"{task}/{name}"] = row.mean[task][j]
                    out[f"{task}/{name}_stderr"] = (row.stderr.get(task) or [None] * (j + 1))[j]
            out.update(delta_m=row.delta_m, delta_m_stderr=row.delta_m_stderr, mr=row.mr)
            out.update({f"delta_m/{t}": v for t, v in row.delta_m_tasks.items()})
            out.update({f"mer/{k}": v for k, v in row.diagnostics.items()})
            rows.append(out)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _by_arch_markdown(tables: Sequence[ResultTable], cell: Callable[[MethodRow], str]) -> str:
    """One value per method (rows) and architecture (columns); "—" where a method did not run."""
    archs = [t.arch for t in tables]
    labels = list(dict.fromkeys(r.label for t in tables for r in t.rows if r.label != STL_LABEL))
    lines = ["| Method | " + " | ".join(archs) + " |", "|" + "---|" * (len(archs) + 1)]
    for label in labels:
        cells = []
        for t in tables:
            row = next((r for r in t.rows if r.label == label), None)
            cells.append(cell(row) if row else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def delta_m_by_arch_markdown(tables: Sequence[ResultTable]) -> str:
    """Δm% (mean ± stderr) of each method (rows) under each architecture (columns)."""
    return _by_arch_markdown(tables, lambda row: _pm(row.delta_m, row.delta_m_stderr))


def mr_by_arch_markdown(tables: Sequence[ResultTable]) -> str:
    """Mean rank of each method (rows) within each architecture's table (columns); needs no STL runs."""
    return _by_arch_markdown(tables, lambda row: _fmt(row.mr, 2))


def skipped_runs(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """``(arch, method, reason)`` of each combination the example refused (one per seed group)."""
    found = {(r["config"]["arch"], r["config"]["label"]): r.get("skip_reason", "")
             for r in records if r.get("status") == "skipped"}
    return [(arch, label, reason) for (arch, label), reason in found.items()]


def mer_markdown(tables: Sequence[ResultTable]) -> str:
    """Figure 5-style table: Δm% and the MER diagnostics at the minimum mean validation loss
    (means over seeds) of the runs made with ``--diagnostics``; empty if there are none."""
    keys = [("mean_loss", "Mean Val Loss ↓"), ("conflict", "Conflict ↓"), ("proximity", "Proximity ↓"),
            ("condition_number", "Condition Number ↓"), ("mer_balance", "MER Balance ↑"),
            ("gmae", "GMAE ↓"), ("sd_mae", "SD-MAE ↓")]
    body = []
    for t in tables:
        for r in t.rows:
            if r.diagnostics:
                cells = [f"{r.label} ({t.arch})", _fmt(r.delta_m)] + [_fmt(r.diagnostics.get(k)) for k, _ in keys]
                body.append("| " + " | ".join(cells) + " |")
    if not body:
        return ""
    header = ["Method", "Δm%"] + [h for _, h in keys]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *body]) + "\n"
