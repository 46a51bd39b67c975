"""The paper's reference numbers (Tables 1–7, Figure 5), shipped as ``data/paper_results.json``,
and the checks that recompute its Δm% and MR columns from its own metric columns.

Use the STL rows as the Δm% baseline when you have no STL runs of your own::

    >>> from LibMTL_rgb.benchmark.paper_results import paper_stl, paper_table
    >>> paper_stl("qm9")["mu"]
    [0.067]
    >>> paper_table("nyuv2").row("RGB").delta_m
    -5.92

Values are stored as printed (strings), so each carries its rounding half-width (half a unit
of its last printed digit); :func:`check_delta_m` accepts a reported Δm% when it lies within
the range that rounding of the table's values allows (``delta_m_bounds``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Optional

import numpy as np

from LibMTL_rgb.benchmark.delta_m import Average, delta_m, delta_m_bounds
from LibMTL_rgb.benchmark.ranking import mean_rank

DATA_FILE = "paper_results.json"

__all__ = [
    "TaskSpec", "PaperRow", "PaperTable", "RowCheck",
    "paper_tables", "paper_table", "paper_stl", "celeba_rows", "mer_rows",
    "check_delta_m", "check_mean_rank", "check_seed_average", "check_mer_balance",
]


def _number(text: str) -> tuple[float, float]:
    """``(value, half a unit of the last printed digit)`` of a printed number."""
    exponent = Decimal(text.strip()).as_tuple().exponent
    return float(text), 0.5 * 10.0 ** int(exponent)


def _optional_number(text: Optional[str]) -> tuple[Optional[float], Optional[float]]:
    return (None, None) if text is None else _number(text)


@dataclass(frozen=True)
class TaskSpec:
    """A task of a paper table: metric names, ``weight`` (1 = higher is better) and whether
    the paper prints each metric in percent (LibMTL-style metrics are fractions)."""

    metrics: tuple[str, ...]
    weight: tuple[int, ...]
    percent: tuple[bool, ...]


@dataclass(frozen=True)
class PaperRow:
    """One printed row: metric values per task (paper units), their rounding half-widths,
    MR and Δm% as printed (None where the paper prints none) and, for Tables 4–6, stderrs."""

    method: str
    values: dict[str, list[float]]
    halfwidth: dict[str, list[float]]
    mr: Optional[float]
    delta_m: Optional[float]
    delta_m_halfwidth: Optional[float]
    stderr: Optional[dict[str, list[float]]] = None
    delta_m_stderr: Optional[float] = None


@dataclass(frozen=True)
class PaperTable:
    """A results table of the paper (``source`` names it: "Table 1"...)."""

    name: str
    source: str
    dataset: str
    seeds: tuple[int, ...]
    tasks: dict[str, TaskSpec]
    rows: dict[str, PaperRow]
    delta_m_average: Average
    mr_average: Average
    mr_ties: str
    stl_from: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    @property
    def weight(self) -> dict[str, list[int]]:
        return {task: list(spec.weight) for task, spec in self.tasks.items()}

    def row(self, method: str) -> PaperRow:
        try:
            return self.rows[method]
        except KeyError:
            raise KeyError(f"{self.source} has no row {method!r}; rows: {', '.join(self.rows)}") from None

    def stl_row(self) -> PaperRow:
        """The STL row (of the table named by ``stl_from`` for Tables 4–6)."""
        source = paper_table(self.stl_from) if self.stl_from else self
        return source.row("STL")


def _split(flat: list[str], tasks: dict[str, TaskSpec]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    values, halves, k = {}, {}, 0
    for task, spec in tasks.items():
        parsed = [_number(text) for text in flat[k:k + len(spec.metrics)]]
        values[task] = [v for v, _ in parsed]
        halves[task] = [h for _, h in parsed]
        k += len(spec.metrics)
    if k != len(flat):
        raise ValueError(f"a row has {len(flat)} values for {k} metrics")
    return values, halves


@lru_cache(maxsize=1)
def _raw() -> dict:
    text = resources.files("LibMTL_rgb.benchmark").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, PaperTable]:
    """All metric tables: ``nyuv2`` (Table 1), ``qm9`` (2), ``cityscapes3`` (3), and the
    mean ± stderr tables of RGB ``qm9_seeds`` (4), ``nyuv2_seeds`` (5), ``cityscapes3_seeds`` (6)."""
    raw = _raw()["tables"]
    tables: dict[str, PaperTable] = {}
    for name, spec in raw.items():
        task_source = raw[spec["stl_from"]] if "stl_from" in spec else spec
        tasks = {
            t["name"]: TaskSpec(tuple(t["metrics"]), tuple(t["weight"]), tuple(t["percent"]))
            for t in task_source["tasks"]
        }
        rows = {}
        for r in spec["rows"]:
            values, halves = _split(r["values"], tasks)
            stderr = _split(r["stderr"], tasks)[0] if "stderr" in r else None
            dm, dm_half = _optional_number(r.get("delta_m"))
            rows[r["method"]] = PaperRow(
                method=r["method"], values=values, halfwidth=halves, mr=_optional_number(r.get("mr"))[0],
                delta_m=dm, delta_m_halfwidth=dm_half, stderr=stderr,
                delta_m_stderr=_optional_number(r.get("delta_m_stderr"))[0],
            )
        conv = spec["conventions"]
        tables[name] = PaperTable(
            name=name, source=spec["source"], dataset=spec["dataset"], seeds=tuple(spec["seeds"]), tasks=tasks,
            rows=rows, delta_m_average=conv["delta_m_average"], mr_average=conv["mr_average"],
            mr_ties=conv["mr_ties"], stl_from=spec.get("stl_from"),
        )
    return tables


def paper_table(name: str) -> PaperTable:
    """One table by name (see :func:`paper_tables`); unknown names list the known ones."""
    tables = paper_tables()
    if name not in tables:
        raise ValueError(f"unknown paper table {name!r}; known: {', '.join(tables)}")
    return tables[name]


def paper_stl(name: str, percent_as_fraction: bool = False) -> dict[str, list[float]]:
    """The paper's STL result ``{task: [values]}`` for table ``name``, usable as a Δm%
    baseline (``base_result``). ``percent_as_fraction`` divides the metrics the paper prints in
    percent (mIoU, pixel accuracy, within-t°) by 100, for metrics reported as fractions."""
    table = paper_table(name)
    stl = table.stl_row().values
    out = {}
    for task, spec in table.tasks.items():
        out[task] = [v / 100.0 if percent_as_fraction and pct else v for v, pct in zip(stl[task], spec.percent)]
    return out


def celeba_rows() -> list[dict]:
    """Table 7: ``{"method", "seed_delta_m": [3 floats], "delta_m", "mr"}`` per method (no
    per-attribute metrics are printed, so only the seed average can be checked)."""
    return [
        {"method": r["method"], "seed_delta_m": [float(x) for x in r["seed_delta_m"]],
         "delta_m": float(r["delta_m"]), "mr": float(r["mr"])}
        for r in _raw()["celeba"]["rows"]
    ]


def mer_rows(dataset: str) -> list[dict[str, object]]:
    """Figure 5 rows of ``dataset`` (nyuv2, qm9, celeba, cityscapes3) as floats."""
    datasets = _raw()["mer"]["datasets"]
    if dataset not in datasets:
        raise ValueError(f"Figure 5 has no dataset {dataset!r}; known: {', '.join(datasets)}")
    return [{k: (v if k == "method" else float(v)) for k, v in row.items()} for row in datasets[dataset]]


# ------------------------------------------------------------------ checks
@dataclass(frozen=True)
class RowCheck:
    """A printed number against its recomputation: ``consistent`` when the printed value (±
    half its last digit) meets the interval ``[low, high]`` the table's rounding allows."""

    method: str
    reported: float
    recomputed: float
    low: float
    high: float
    consistent: bool


def _meets(reported: float, half: float, low: float, high: float) -> bool:
    slack = 1e-9 * max(1.0, abs(reported))
    return reported + half + slack >= low and reported - half - slack <= high


def check_delta_m(name: str, average: Optional[Average] = None) -> list[RowCheck]:
    """Recompute the Δm% column of table ``name`` from its metric columns and STL row.

    ``average`` defaults to the table's own convention (``metric`` for NYUv2 Table 1, whose
    column is not the per-task average that §3.1 writes)."""
    table = paper_table(name)
    average = average or table.delta_m_average
    stl = table.stl_row()
    checks = []
    for row in table.rows.values():
        if row.delta_m is None:
            continue
        value = delta_m(row.values, stl.values, table.weight, average)
        low, high = delta_m_bounds(row.values, stl.values, table.weight, row.halfwidth, stl.halfwidth, average)
        checks.append(RowCheck(row.method, row.delta_m, value, low, high,
                               _meets(row.delta_m, row.delta_m_halfwidth or 0.0, low, high)))
    return checks


def check_mean_rank(name: str, average: Optional[Average] = None, ties: Optional[str] = None) -> list[RowCheck]:
    """Recompute the MR column of table ``name`` over all its rows (STL included, as printed).

    Ranks use the printed (rounded) values, so ``low == high``; ``consistent`` allows the
    rounding of the printed MR only."""
    table = paper_table(name)
    ranked = mean_rank({m: r.values for m, r in table.rows.items()}, table.weight,
                       average or table.mr_average, ties or table.mr_ties)  # type: ignore[arg-type]
    checks = []
    for method, row in table.rows.items():
        if row.mr is None:
            continue
        value = ranked[method]
        checks.append(RowCheck(method, row.mr, value, value, value, _meets(row.mr, 0.005, value, value)))
    return checks


def check_seed_average() -> list[RowCheck]:
    """Table 7: is each printed average Δm% the mean of the three printed seed values?"""
    checks = []
    for printed in _raw()["celeba"]["rows"]:
        seeds = [_number(x) for x in printed["seed_delta_m"]]
        reported, half = _number(printed["delta_m"])
        mean = float(np.mean([v for v, _ in seeds]))
        spread = float(np.mean([h for _, h in seeds]))
        checks.append(RowCheck(printed["method"], reported, mean, mean - spread, mean + spread,
                               _meets(reported, half, mean - spread, mean + spread)))
    return checks


def check_mer_balance(dataset: str) -> list[RowCheck]:
    """Figure 5: Eq. 6 on the printed conflict, proximity and condition number against the
    printed MER balance (interval from the printed digits of the three inputs)."""
    from LibMTL_rgb.rgb.diagnostics import mer_balance

    checks = []
    printed_rows = _raw()["mer"]["datasets"][dataset]
    for printed in printed_rows:
        parsed = {k: _number(printed[k]) for k in ("conflict", "proximity", "condition_number", "mer_balance")}
        (c, hc), (p, hp), (k, hk), (reported, hr) = (parsed[x] for x in ("conflict", "proximity", "condition_number", "mer_balance"))
        value = float(mer_balance(c, p, k))
        # Eq. 6 decreases in each input
        low = float(mer_balance(c + hc, p + hp, k + hk))
        high = float(mer_balance(max(c - hc, 0.0), max(p - hp, 0.0), max(k - hk, 0.0)))
        checks.append(RowCheck(printed["method"], reported, value, low, high, _meets(reported, hr, low, high)))
    return checks
