"""Result tables as LaTeX (``booktabs``) for a paper: per architecture, each metric as
mean ± standard error over seeds, Δm% (paper §3.1) and MR, with the number of seeds per row and
in the caption. Every cell of a column has the same number of decimals: enough for
``SIGNIFICANT`` digits of the column's largest absolute mean and one for its smallest standard error
(Δm% and MR: two, as in the paper).
The best value of each column is bold. Needs ``\\usepackage{booktabs}`` only (no unicode).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from LibMTL_rgb.benchmark.grid import STL_LABEL
from LibMTL_rgb.benchmark.metric_names import readable_metric
from LibMTL_rgb.benchmark.tables import MethodRow, ResultTable

SIGNIFICANT = 3
MAX_DECIMALS = 6
#: Δm% and MR: two decimals, as the paper prints them
PERCENT_DECIMALS = 2
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$"}
_LATEX_SYMBOLS = {"μ": r"$\mu$", "α": r"$\alpha$", "ε": r"$\varepsilon$", "⟨": r"$\langle$", "⟩": r"$\rangle$",
                  "²": r"$^2$", "₀": r"$_0$", "°": r"$^\circ$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                  "Δ": r"$\Delta$", "±": r"$\pm$"}

__all__ = ["latex_escape", "column_decimals", "to_latex", "delta_m_by_arch_latex"]


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and the symbols of our labels as math."""
    return "".join(_LATEX_SPECIAL.get(ch) or _LATEX_SYMBOLS.get(ch) or ch for ch in text)


def column_decimals(values: Sequence[Optional[float]], stderrs: Sequence[Optional[float]] = (),
                    significant: int = SIGNIFICANT) -> int:
    """Decimals (0..6) that give the largest finite absolute value ``significant`` significant digits,
    and the smallest standard error at least one."""
    def finite(xs: Sequence[Optional[float]]) -> list[float]:
        return [abs(x) for x in xs if x is not None and math.isfinite(x) and x != 0]

    values_, stderrs_ = finite(values), finite(stderrs)
    if not values_:
        return 2
    decimals = significant - 1 - math.floor(math.log10(max(values_)))
    if stderrs_:
        decimals = max(decimals, -math.floor(math.log10(min(stderrs_))))
    return int(min(MAX_DECIMALS, max(0, decimals)))


def _cell(mean: Optional[float], se: Optional[float], decimals: int, bold: bool) -> str:
    if mean is None or not math.isfinite(mean):
        return "--"
    text = f"{mean:.{decimals}f}"
    if bold:
        text = rf"\mathbf{{{text}}}"
    if se is not None and math.isfinite(se):
        text += rf" \pm {se:.{decimals}f}"
    return f"${text}$"


def _best(values: Sequence[Optional[float]], higher_is_better: bool) -> Optional[float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if higher_is_better else min(finite)


def _column(rows: Sequence[MethodRow], value: Callable[[MethodRow], tuple[Optional[float], Optional[float]]],
            higher_is_better: bool, bold_from: Sequence[MethodRow], decimals: Optional[int] = None) -> list[str]:
    """The cells of one column (``decimals`` fixed, or by :func:`column_decimals`); the best
    mean among ``bold_from`` is bold."""
    pairs = [value(r) for r in rows]
    if decimals is None:
        decimals = column_decimals([m for m, _ in pairs], [se for _, se in pairs])
    best = _best([value(r)[0] for r in bold_from], higher_is_better)
    return [_cell(m, se, decimals, best is not None and m is not None and round(m, decimals) == round(best, decimals))
            for m, se in pairs]


def _tabular(header: Sequence[str], columns: Sequence[Sequence[str]], caption: str, label: str) -> str:
    body = [" & ".join(cells) + r" \\" for cells in zip(*columns)]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
        " & ".join(header) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


def _seed_counts(rows: Sequence[MethodRow]) -> str:
    counts = sorted({len(r.seeds) for r in rows if r.seeds})
    return "/".join(map(str, counts)) or "0"


def to_latex(table: ResultTable, wide: bool = False, max_metric_columns: int = 12, baseline: str = "") -> str:
    """One booktabs table for ``table`` (metrics as columns unless there are more than
    ``max_metric_columns`` and not ``wide``); ``baseline`` names the Δm% baseline in the caption."""
    rows = table.rows
    methods = [r for r in rows if r.label != STL_LABEL] or rows
    header = ["Method"]
    columns: list[list[str]] = [[latex_escape(r.label) for r in rows]]
    metric_cols = [(task, j, name, int(w) == 1) for task, spec in table.tasks.items()
                   for j, (name, w) in enumerate(zip(spec["metrics"], spec["weight"]))]
    if wide or len(metric_cols) <= max_metric_columns:
        for task, j, name, up in metric_cols:
            header.append(latex_escape(readable_metric(task, name, up)))
            columns.append(_column(rows, _metric_value(task, j), up, methods))
    has_delta = any(r.delta_m is not None for r in rows)
    if has_delta:
        header.append(latex_escape("Δm% ↓"))
        columns.append(_column(rows, lambda r: (r.delta_m, r.delta_m_stderr), False, methods, PERCENT_DECIMALS))
    header.append(latex_escape("MR ↓"))
    columns.append(_column(rows, lambda r: (r.mr, None), False, methods, PERCENT_DECIMALS))
    header.append("$n$")
    columns.append([str(len(r.seeds)) if r.seeds else "--" for r in rows])
    caption = (f"{latex_escape(table.arch)}: mean $\\pm$ standard error over $n = {_seed_counts(methods)}$ seeds "
               "(test metrics at the best epoch)")
    if has_delta:
        caption += f"; $\\Delta m\\%$ against {latex_escape(baseline or 'the single-task baseline')}"
    caption += "; MR: mean rank over the rows; best in bold."
    return _tabular(header, columns, caption, f"tab:results-{_label_key(table.arch)}")


def delta_m_by_arch_latex(tables: Sequence[ResultTable], baseline: str = "") -> str:
    """Δm% (mean ± s.e.) of each method (rows) under each architecture (columns)."""
    labels = list(dict.fromkeys(r.label for t in tables for r in t.rows if r.label != STL_LABEL))
    by_arch = [{r.label: r for r in t.rows} for t in tables]
    columns: list[list[str]] = [[latex_escape(label) for label in labels]]
    for rows in by_arch:
        present = [rows[label] for label in labels if label in rows]
        cells = _column(present, lambda r: (r.delta_m, r.delta_m_stderr), False, present, PERCENT_DECIMALS)
        by_label = dict(zip([r.label for r in present], cells))
        columns.append([by_label.get(label, "--") for label in labels])
    counts = _seed_counts([r for t in tables for r in t.rows if r.label != STL_LABEL])
    caption = (rf"$\Delta m\%$ ($\downarrow$) per architecture: mean $\pm$ standard error over $n = {counts}$ seeds"
               + (f", against {latex_escape(baseline)}" if baseline else "") + "; best per architecture in bold.")
    return _tabular(["Method"] + [latex_escape(t.arch) for t in tables], columns, caption, "tab:delta-m-by-arch")


def _metric_value(task: str, j: int) -> Callable[[MethodRow], tuple[Optional[float], Optional[float]]]:
    """(mean, s.e.) of metric ``j`` of ``task`` in a row."""
    return lambda row: (_at(row.mean, task, j), _at(row.stderr, task, j))


def _at(values: dict, task: str, j: int) -> Optional[float]:
    found = values.get(task)
    return found[j] if found and j < len(found) else None


def _label_key(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower() or "table"
