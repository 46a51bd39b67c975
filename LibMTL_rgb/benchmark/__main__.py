"""``python -m LibMTL_rgb.benchmark``: run a grid, render tables and figures, check the paper.

Sub-commands (each has ``--help``):

* ``run EXAMPLE [options] [-- example flags]`` — weightings × architectures × seeds (and, with
  ``--stl``, single-task baselines), one subprocess (``--launcher local``) or one SLURM job
  (``--launcher slurm``) per run, one JSON per run; resumes.
* ``status OUT`` — each run: pending / running / done / failed / skipped / missing, with job ids.
* ``cancel OUT`` — cancel the grid's queued and running SLURM jobs.
* ``table OUT`` — mean ± s.e. per metric, Δm% and MR per architecture (Markdown, CSV, LaTeX).
* ``plot OUT`` — metric vs epoch per method; Δm% per architecture (PNG, PDF, SVG).
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
from LibMTL_rgb.progress import PROGRESS_MODES, set_progress_mode

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
    run.add_argument("--progress", choices=PROGRESS_MODES, default=None,
                     help="progress bars: auto (only when stderr is a terminal; the default, or $LIBMTL_RGB_PROGRESS), "
                          "on, off; the runs themselves draw none (their stderr is a log file)")
    _add_slurm_args(run)

    status = sub.add_parser("status", formatter_class=FORMATTER, help="where each run of a grid stands",
                            description="Per run of the grid in OUT: pending / running (its SLURM job is queued or "
                                        "running), done / failed / skipped (its result says so) or missing (no result "
                                        "and no queued job: 'run' starts it again, from its last.pt if it has one).")
    status.add_argument("out", help="the grid's output directory")
    cancel = sub.add_parser("cancel", formatter_class=FORMATTER, help="cancel a grid's SLURM jobs",
                            description="scancel the queued and running SLURM jobs of the grid in OUT (runs cut off "
                                        "keep their last.pt: running the same 'run' command again resumes them).")
    cancel.add_argument("out", help="the grid's output directory")
    cancel.add_argument("--runs", nargs="+", default=None, help="only these run ids")

    table = sub.add_parser("table", formatter_class=FORMATTER, help="render result tables (Markdown, CSV, LaTeX)",
                           description="Per architecture: mean ± stderr over seeds of each metric (test metrics at the "
                                       "Trainer's best epoch), Δm% (paper §3.1) against the STL baseline and MR over the "
                                       "table's rows (STL included).")
    _add_table_args(table)
    table.add_argument("--wide", action="store_true", help="show every metric column in Markdown even when there are many")

    plot = sub.add_parser("plot", formatter_class=FORMATTER, help="draw figures (PNG, PDF, SVG)",
                          description="Metric vs epoch per method and architecture (one figure per metric: mean over "
                                      "seeds, ± s.e. band, the STL value as a dashed line) and, with a baseline, Δm% per "
                                      "architecture.")
    _add_table_args(plot)
    plot.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=["png", "pdf", "svg"],
                      help="file formats of each figure")

    paper = sub.add_parser("paper", formatter_class=FORMATTER, help="check the paper's tables",
                           description="Recompute the Δm% and MR columns of the paper's Tables 1-6 from their metric "
                                       "columns, Table 7's seed averages and Figure 5's MER balance (Eq. 6), and print "
                                       "them against the printed numbers ('ok' = equal up to the printed rounding).")
    paper.add_argument("tables", nargs="*", default=None, help=f"tables to check (default: all): {', '.join(paper_tables())}")
    return parser


def _add_slurm_args(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("SLURM (--launcher slurm; through submitit, one job per run, as a job array)")
    group.add_argument("--launcher", choices=["local", "slurm"], default="local",
                       help="local: subprocesses on this machine; slurm: one SLURM job per run")
    group.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    group.add_argument("--gpus_per_run", "--gpus-per-run", type=int, default=0,
                       help="GPUs per run; with more than one the example is started under torchrun, one process per GPU")
    group.add_argument("--cpus_per_run", "--cpus-per-run", type=int, default=1,
                       help="CPUs per run (also the run's OMP_NUM_THREADS unless set)")
    group.add_argument("--mem", default=None, help="memory per run, SLURM syntax (e.g. 32G)")
    group.add_argument("--time", type=int, default=60,
                       help="time limit per job in minutes; a run that reaches it is requeued and resumes from last.pt")
    group.add_argument("--account", default=None, help="SLURM account")
    group.add_argument("--qos", default=None, help="SLURM quality of service")
    group.add_argument("--slurm_arg", "--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. --slurm_arg constraint=a100 (repeatable)")
    group.add_argument("--max_timeouts", "--max-timeouts", type=int, default=3,
                       help="requeues after a timeout before a run is given up (preemptions do not count)")
    group.add_argument("--wait", action="store_true",
                       help="stay until every submitted job has left the queue (else submit and return)")
    group.add_argument("--poll", type=float, default=10.0, help="with --wait: seconds between squeue calls")


def _slurm_options(args: argparse.Namespace):
    from LibMTL_rgb.benchmark.slurm import SlurmOptions

    extra = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm_arg {item!r}: expected KEY=VALUE (an sbatch option without its dashes)")
        extra[key.lstrip("-")] = value
    for name in ("gpus_per_run", "cpus_per_run", "time", "max_timeouts"):
        if getattr(args, name) < (0 if name in ("gpus_per_run", "max_timeouts") else 1):
            raise ValueError(f"--{name} must be >= {0 if name in ('gpus_per_run', 'max_timeouts') else 1}")
    return SlurmOptions(partition=args.partition, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                        mem=args.mem, time_min=args.time, account=args.account, qos=args.qos, extra=extra,
                        max_timeouts=args.max_timeouts)


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
    from LibMTL_rgb.benchmark.status import record_plan

    if args.progress is not None:
        set_progress_mode(args.progress)
    example = grid.resolve_example(args.example)
    name = os.path.basename(os.path.dirname(example)) or "example"
    out = args.out or os.path.join("benchmark_runs", name)
    methods = [grid.MethodSpec.parse(m) for m in _expand_all(args.weightings, "weightings")]
    specs = grid.plan_runs(example, methods, _expand_all(args.archs, "archs"), args.seeds, extra)
    launch = _slurm_launch(args, out) if args.launcher == "slurm" else _local_launch(args, out)
    if not args.dry_run:
        record_plan(out, specs)
    records = launch(specs)
    if not args.stl:
        return _exit_code(records)
    tasks = args.stl_tasks
    if tasks is None:
        existing = grid.load_results(out) if os.path.isdir(os.path.join(out, grid.RESULTS_DIR)) else []
        tasks = grid.discover_tasks(existing)
    if tasks is None:
        print("STL runs: the task names are not known yet (no successful multi-task run); give --stl-tasks"
              + (", or run the same command again once a multi-task run is done" if args.launcher == "slurm" else ""),
              file=sys.stderr)
        return 1 if not args.dry_run and args.launcher == "local" else 0
    stl_specs = grid.plan_stl_runs(example, tasks, args.seeds, args.stl_arch, extra)
    if not args.dry_run:
        record_plan(out, stl_specs)
    records += launch(stl_specs)
    return _exit_code(records)


def _local_launch(args: argparse.Namespace, out: str):
    """Runs specs here (subprocesses); returns their records."""
    options = dict(python=args.python, timeout=args.timeout, retry_failed=args.retry_failed, dry_run=args.dry_run,
                   jobs=args.jobs)
    return lambda specs: grid.run_grid(specs, out, **options)


def _slurm_launch(args: argparse.Namespace, out: str):
    """Submits specs to SLURM; with --wait, returns the records of the submitted runs once their
    jobs have left the queue (a run without a result then counts as failed), else none."""
    from LibMTL_rgb.benchmark import slurm

    options = _slurm_options(args)

    def launch(specs: Sequence[grid.RunSpec]) -> list[dict]:
        submitted = slurm.submit_grid(specs, out, options, python=args.python, timeout=args.timeout,
                                      retry_failed=args.retry_failed, dry_run=args.dry_run)
        if not args.wait or args.dry_run:
            return []
        slurm.wait_for_jobs(out, [s.run_id for s in specs], args.poll)
        records = [grid.read_result(out, s) or {"run_id": s.run_id, "status": "failed"} for s in specs
                   if s.run_id in submitted]
        lost = [r["run_id"] for r in records if "config" not in r]
        if lost:
            print(f"{len(lost)} job(s) ended without a result (cancelled?): {', '.join(lost)}; "
                  "run the same command again to resubmit them", file=sys.stderr)
        return records

    return launch


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


# --------------------------------------------------------- status / cancel
def _cmd_status(args: argparse.Namespace) -> int:
    from LibMTL_rgb.benchmark.status import format_status, grid_status

    print(format_status(grid_status(args.out)))
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from LibMTL_rgb.benchmark.slurm import SLURM_DIR, cancel_jobs

    if not os.path.isdir(os.path.join(args.out, SLURM_DIR)):
        raise SystemExit(f"no SLURM jobs recorded in {args.out} (a local grid stops with Ctrl-C)")
    cancelled = cancel_jobs(args.out, args.runs)
    print(f"cancelled {len(cancelled)} job(s)" + (": " + " ".join(cancelled) if cancelled else " (none queued)"))
    return 0


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
    return tables, notes, baseline


def _cmd_table(args: argparse.Namespace) -> int:
    from LibMTL_rgb.benchmark import latex
    from LibMTL_rgb.benchmark import tables as tb

    tables, notes, baseline = _tables(args)
    source = baseline.source if baseline is not None else ""
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
    tex = "\n".join(latex.to_latex(t, wide=args.wide, baseline=source) for t in tables)
    if len(tables) > 1 and any(r.delta_m is not None for t in tables for r in t.rows):
        tex += "\n" + latex.delta_m_by_arch_latex(tables, source)
    with atomic_write(os.path.join(out_dir, "results.tex")) as handle:
        handle.write(tex)
    print(markdown)
    written = ", ".join(os.path.join(out_dir, f"results.{ext}") for ext in ("md", "csv", "tex"))
    print(f"written: {written} (LaTeX: \\usepackage{{booktabs}})")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from LibMTL_rgb.benchmark import plots

    tables, notes, baseline = _tables(args)
    out_dir = args.output_dir or os.path.join(args.out, "plots")
    formats = args.formats
    paths = plots.plot_metric_curves(grid.load_results(args.out), out_dir, args.split, baseline, formats)
    try:
        paths += plots.plot_delta_m_by_arch(tables, os.path.join(out_dir, "delta_m_by_arch"), formats)
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
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "cancel":
            return _cmd_cancel(args)
        if args.command == "table":
            return _cmd_table(args)
        if args.command == "plot":
            return _cmd_plot(args)
        return _cmd_paper(args)
    except (OSError, ValueError) as err:  # OSError: files, squeue / scancel
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
