"""``python -m LibMTL_rgb.benchmark``: run a grid, render tables and figures, check the paper.

Sub-commands (each has ``--help``):

* ``run EXAMPLE [options] [-- example flags]`` — weightings × architectures × seeds (and, with
  ``--stl``, single-task baselines), one subprocess per run, one JSON per run; resumes.
* ``table OUT`` — mean ± stderr per metric, Δm% and MR per architecture (Markdown + CSV).
* ``plot OUT`` — metric vs epoch per method; Δm% per architecture (PNG).
* ``paper [TABLE ...]`` — the paper's tables: printed Δm% / MR / MER balance against ours.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from LibMTL_rgb.atomic_io import atomic_write
from LibMTL_rgb.benchmark import grid
from LibMTL_rgb.benchmark.paper_results import (
    check_delta_m, check_mean_rank, check_mer_balance, check_seed_average, paper_table, paper_tables,
)

class FORMATTER(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the unset ones (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m LibMTL_rgb.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", formatter_class=FORMATTER,
                         help="run an example over weightings × architectures × seeds",
                         description="Run EXAMPLE once per weighting × architecture × seed (one subprocess each, "
                                     "--save_path OUT/runs/<run>), recording OUT/results/<run>.json. Runs whose JSON "
                                     "exists are skipped. Flags after '--' go to the example unchanged, e.g. "
                                     "'-- --dataset_path /data/nyuv2 --epochs 200 --diagnostics'.")
    run.add_argument("example", help="a main.py, a directory holding one, or a name: " + ", ".join(grid.KNOWN_EXAMPLES))
    run.add_argument("--weightings", nargs="+", default=["EW", "RGB"],
                     help="weightings, each NAME or NAME:flag=value,... (e.g. RGB:rgb_steps=30); 'all': every "
                          "registered weighting")
    run.add_argument("--archs", nargs="+", default=["HPS"],
                     help="architectures; 'all': every registered one (those the example cannot run are recorded "
                          "as skipped, with the example's reason)")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="random seeds (the paper's: 0 1 2)")
    run.add_argument("--out", default=None, help="output directory (default: benchmark_runs/<example>)")
    run.add_argument("--stl", action="store_true", help="also run the single-task baselines (--stl_task, EW) per task and seed")
    run.add_argument("--stl-tasks", nargs="+", default=None,
                     help="tasks for --stl (default: the tasks of the first successful multi-task run)")
    run.add_argument("--stl-arch", default="HPS", help="architecture of the single-task runs")
    run.add_argument("--dry-run", action="store_true", help="print the commands of the runs that would start")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    run.add_argument("--jobs", type=int, default=1,
                     help="runs at a time (each a subprocess; they share the machine, GPU included)")
    run.add_argument("--timeout", type=float, default=None, help="seconds after which a run is killed and recorded as failed")
    run.add_argument("--python", default=sys.executable, help="Python interpreter for the runs")

    table = sub.add_parser("table", formatter_class=FORMATTER, help="render result tables (Markdown + CSV)",
                           description="Per architecture: mean ± stderr over seeds of each metric (test metrics at the "
                                       "Trainer's best epoch), Δm% (paper §3.1) against the STL baseline and MR over the "
                                       "table's rows (STL included).")
    _add_table_args(table)
    table.add_argument("--wide", action="store_true", help="show every metric column in Markdown even when there are many")

    plot = sub.add_parser("plot", formatter_class=FORMATTER, help="draw figures (PNG)",
                          description="Metric vs epoch per method (one PNG per metric) and, with a baseline, Δm% per "
                                      "architecture.")
    _add_table_args(plot)

    paper = sub.add_parser("paper", formatter_class=FORMATTER, help="check the paper's tables",
                           description="Recompute the Δm% and MR columns of the paper's Tables 1-6 from their metric "
                                       "columns, Table 7's seed averages and Figure 5's MER balance (Eq. 6), and print "
                                       "them against the printed numbers ('ok' = equal up to the printed rounding).")
    paper.add_argument("tables", nargs="*", default=None, help=f"tables to check (default: all): {', '.join(paper_tables())}")
    return parser


def _add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the grid's output directory (holding results/)")
    p.add_argument("--baseline", default="stl",
                   help="Δm%% baseline: 'stl' (the grid's STL runs), 'paper:NAME' (the paper's STL row; NAME one of "
                        f"{', '.join(paper_tables())}) or 'none'")
    p.add_argument("--paper-units", choices=["auto", "percent", "fraction"], default="auto",
                   help="with --baseline paper:NAME, whether our percent-type metrics are fractions (auto: detect)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="test: test metrics at the best epoch; val: the metrics the best epoch was selected on")
    p.add_argument("--delta-m-average", choices=["task", "metric"], default="task",
                   help="Δm%%: mean over tasks of per-task means (§3.1) or over all metrics (NYUv2 Table 1)")
    p.add_argument("--mr-average", choices=["task", "metric"], default="task", help="MR: the same choice for ranks")
    p.add_argument("--output-dir", default=None, help="where to write files (default: OUT/tables or OUT/plots)")


# --------------------------------------------------------------------- run
def _cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    example = grid.resolve_example(args.example)
    name = os.path.basename(os.path.dirname(example)) or "example"
    out = args.out or os.path.join("benchmark_runs", name)
    methods = [grid.MethodSpec.parse(m) for m in _expand_all(args.weightings, "weightings")]
    specs = grid.plan_runs(example, methods, _expand_all(args.archs, "archs"), args.seeds, extra)
    options = dict(python=args.python, timeout=args.timeout, retry_failed=args.retry_failed, dry_run=args.dry_run,
                   jobs=args.jobs)
    records = grid.run_grid(specs, out, **options)
    if not args.stl:
        return _exit_code(records)
    tasks = args.stl_tasks
    if tasks is None:
        existing = grid.load_results(out) if os.path.isdir(os.path.join(out, grid.RESULTS_DIR)) else []
        tasks = grid.discover_tasks(existing)
    if tasks is None:
        print("STL runs: the task names are not known yet (no successful multi-task run); give --stl-tasks", file=sys.stderr)
        return 1 if not args.dry_run else 0
    stl_specs = grid.plan_stl_runs(example, tasks, args.seeds, args.stl_arch, extra)
    records += grid.run_grid(stl_specs, out, **options)
    return _exit_code(records)


def _expand_all(names: Sequence[str], kind: str) -> list[str]:
    """``all`` (alone or among names) -> every registered weighting / architecture, in order."""
    if "all" not in names:
        return list(names)
    from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS
    import LibMTL_rgb.config  # noqa: F401  (registers every weighting and architecture)

    registered = (WEIGHTINGS if kind == "weightings" else ARCHITECTURES).names()
    expanded = [n for name in names for n in (registered if name == "all" else [name])]
    return list(dict.fromkeys(expanded))


def _exit_code(records: Sequence[dict]) -> int:
    return 1 if any(r["status"] == "failed" for r in records) else 0


# ------------------------------------------------------------ table / plot
def _tables(args: argparse.Namespace):
    from LibMTL_rgb.benchmark import tables as tb

    records = grid.load_results(args.out)
    notes: list[str] = []
    baseline = None
    if args.baseline == "stl":
        baseline = tb.stl_baseline(records, args.split)
        if baseline is None:
            notes.append("no STL runs in this grid (run with --stl, or use --baseline paper:NAME): no Δm%")
    elif args.baseline.startswith("paper:"):
        mtl = [r for r in records if r["config"].get("stl_task") is None and r.get("tasks")]
        if not mtl:
            raise SystemExit("no successful multi-task run to match the paper's tasks against")
        metrics = [m for m in (tb.run_metrics(r, args.split) for r in mtl) if m is not None]
        baseline, notes = tb.paper_baseline(args.baseline.split(":", 1)[1], mtl[0]["tasks"], metrics, args.paper_units)
    elif args.baseline != "none":
        raise SystemExit(f"--baseline must be 'stl', 'paper:NAME' or 'none', got {args.baseline!r}")
    tables = tb.build_tables(records, baseline, args.split, args.delta_m_average, args.mr_average)
    if baseline is not None:
        notes.insert(0, f"Δm% baseline: {baseline.source}")
    notes += [f"skipped, {label} on {arch}: {reason}" for arch, label, reason in tb.skipped_runs(records)]
    return tables, notes


def _cmd_table(args: argparse.Namespace) -> int:
    from LibMTL_rgb.benchmark import tables as tb

    tables, notes = _tables(args)
    if not tables:
        raise SystemExit(f"no multi-task results in {args.out}")
    markdown = "\n".join(tb.to_markdown(t, wide=args.wide) for t in tables)
    if len(tables) > 1:
        markdown += "\n### Δm% per architecture\n\n" + tb.delta_m_by_arch_markdown(tables)
        markdown += "\n### MR per architecture\n\n" + tb.mr_by_arch_markdown(tables)
    mer = tb.mer_markdown(tables)
    if mer:
        markdown += "\n### MER diagnostics at the minimum mean validation loss (App. A.8)\n\n" + mer
    if notes:
        markdown += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    out_dir = args.output_dir or os.path.join(args.out, "tables")
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "results.md")) as handle:
        handle.write(markdown)
    with atomic_write(os.path.join(out_dir, "results.csv"), newline="") as handle:
        handle.write(tb.to_csv(tables))
    print(markdown)
    print(f"written: {os.path.join(out_dir, 'results.md')}, {os.path.join(out_dir, 'results.csv')}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from LibMTL_rgb.benchmark import plots

    tables, notes = _tables(args)
    out_dir = args.output_dir or os.path.join(args.out, "plots")
    paths = plots.plot_metric_curves(grid.load_results(args.out), out_dir, args.split)
    try:
        paths.append(plots.plot_delta_m_by_arch(tables, os.path.join(out_dir, "delta_m_by_arch.png")))
    except ValueError as err:
        notes.append(str(err))
    for note in notes:
        print(f"- {note}")
    print("written:\n" + "\n".join(f"  {p}" for p in paths))
    return 0


# ------------------------------------------------------------------ paper
def _cmd_paper(args: argparse.Namespace) -> int:
    names = args.tables or list(paper_tables())
    for name in names:
        table = paper_table(name)
        print(f"\n{table.source} ({name}, {table.dataset}); Δm% averaged per {table.delta_m_average}, "
              f"MR per {table.mr_average}, ties share the best rank")
        print(f"  {'method':<18} {'Δm% printed':>12} {'recomputed':>11} {'rounding range':>20}    "
              f"{'MR printed':>10} {'recomputed':>10}")
        dm = {c.method: c for c in check_delta_m(name)}
        mr = {c.method: c for c in check_mean_rank(name)}
        for method in table.rows:
            d, m = dm.get(method), mr.get(method)
            dm_text = (f"{d.reported:>12.2f} {d.recomputed:>11.2f} [{d.low:>8.2f}, {d.high:>8.2f}] "
                       f"{'ok' if d.consistent else 'NO'}" if d else " " * 48)
            mr_text = f"{m.reported:>10.2f} {m.recomputed:>10.2f} {'ok' if m.consistent else 'NO'}" if m else ""
            print(f"  {method:<18} {dm_text}    {mr_text}")
    if not args.tables:
        print("\nTable 7 (CelebA): printed average Δm% against the mean of the printed seeds")
        for c in check_seed_average():
            print(f"  {c.method:<18} {c.reported:>8.2f} {c.recomputed:>8.2f} {'ok' if c.consistent else 'NO'}")
        print("\nFigure 5: printed MER balance against Eq. 6 of the printed conflict, proximity, condition number")
        for dataset in ("nyuv2", "qm9", "celeba", "cityscapes3"):
            for c in check_mer_balance(dataset):
                print(f"  {dataset:<12} {c.method:<16} {c.reported:>10.6f} {c.recomputed:>10.6f} "
                      f"{'ok' if c.consistent else 'NO'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    if extra and args.command != "run":
        raise SystemExit("flags after '--' are passed to the example and only make sense with 'run'")
    try:
        if args.command == "run":
            return _cmd_run(args, extra)
        if args.command == "table":
            return _cmd_table(args)
        if args.command == "plot":
            return _cmd_plot(args)
        return _cmd_paper(args)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
