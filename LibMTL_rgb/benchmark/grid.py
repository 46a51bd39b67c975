"""The grid runner: an example script over weightings × architectures × seeds (and single-task
baselines), one subprocess per run, one JSON result per run.

Layout under the output directory ``OUT``::

    OUT/runs/<run_id>/      the run's --save_path (best.pt, last.pt, history.csv, summary.json,
                            diagnostics.csv...) and its stdout.log / stderr.log
    OUT/results/<run_id>.json   config, status, wall time, peak memory, per-epoch history,
                            best result, diagnostics summary (see :func:`run_one`)

A run whose JSON exists is skipped, so an interrupted grid resumes where it stopped (a run cut
off midway continues from its ``last.pt`` with ``--resume``); a failed run is recorded (status ``failed`` with the tail of its stderr) and the grid goes on.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from LibMTL_rgb.atomic_io import atomic_write_json
from LibMTL_rgb.checkpoint import LAST_CHECKPOINT
from LibMTL_rgb.progress import PROGRESS_ENV, progress_bar

RESULTS_DIR = "results"
RUNS_DIR = "runs"
STL_LABEL = "STL"
STDERR_TAIL_CHARS = 4000
#: argparse's exit code for a refused command line; with ``--arch`` in its message the example
#: says the combination cannot run (e.g. an image architecture on QM9's graphs): recorded as skipped.
USAGE_ERROR_EXIT_CODE = 2
#: Examples the runner knows by name (``examples/<name>/main.py``).
KNOWN_EXAMPLES = ("toy", "nyu", "cityscapes", "qm9", "celeba")

__all__ = [
    "MethodSpec", "RunSpec", "resolve_example", "plan_runs", "plan_stl_runs", "run_one", "run_grid",
    "load_results", "discover_tasks", "result_path", "run_dir", "pending_specs", "read_result",
]


@dataclass(frozen=True)
class MethodSpec:
    """A weighting and fixed options, written ``NAME`` or ``NAME:flag=value,flag=value``
    (e.g. ``RGB:rgb_steps=30,rgb_lambda=1``); the options become ``--flag value``."""

    weighting: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        name, _, rest = text.partition(":")
        if not name:
            raise ValueError(f"method {text!r}: expected NAME or NAME:flag=value,...")
        options = []
        for item in filter(None, rest.split(",")):
            flag, sep, value = item.partition("=")
            if not sep or not flag:
                raise ValueError(f"method {text!r}: option {item!r} is not flag=value")
            options.append((flag.lstrip("-"), value))
        return cls(name, tuple(options))

    @property
    def label(self) -> str:
        if not self.options:
            return self.weighting
        return f"{self.weighting}[{','.join(f'{k}={v}' for k, v in self.options)}]"

    def args(self) -> list[str]:
        out = ["--weighting", self.weighting]
        for flag, value in self.options:
            out += [f"--{flag}", value]
        return out


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid."""

    example: str
    method: MethodSpec
    arch: str
    seed: int
    stl_task: Optional[str] = None
    extra_args: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return STL_LABEL if self.stl_task is not None else self.method.label

    @property
    def run_id(self) -> str:
        head = f"{STL_LABEL}-{self.stl_task}" if self.stl_task is not None else self.method.label
        return re.sub(r"[^A-Za-z0-9._=,+\-\[\]]", "_", f"{head}__{self.arch}__seed{self.seed}")

    def command(self, save_path: str, python: str = sys.executable, nproc: int = 1) -> list[str]:
        """The example's command line; ``nproc > 1`` starts it under ``torchrun --standalone``
        with that many processes (one per GPU of the allocation)."""
        launcher = [python] if nproc <= 1 else [python, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", str(nproc)]
        cmd = [*launcher, self.example, *self.method.args(), "--arch", self.arch, "--seed", str(self.seed),
               "--save_path", save_path]
        if self.stl_task is not None:
            cmd += ["--stl_task", self.stl_task]
        return cmd + list(self.extra_args)

    def config(self) -> dict[str, Any]:
        return {
            "example": self.example, "label": self.label, "weighting": self.method.weighting,
            "options": dict(self.method.options), "arch": self.arch, "seed": self.seed,
            "stl_task": self.stl_task, "extra_args": list(self.extra_args),
        }


def resolve_example(name_or_path: str) -> str:
    """A script path, a directory holding ``main.py``, or a name in ``KNOWN_EXAMPLES`` looked
    up as ``examples/<name>/main.py`` in the current directory, then in the repository."""
    path = Path(name_or_path)
    if path.is_file():
        return str(path.resolve())
    if path.is_dir() and (path / "main.py").is_file():
        return str((path / "main.py").resolve())
    roots = [Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in roots:
        candidate = root / "examples" / name_or_path / "main.py"
        if candidate.is_file():
            return str(candidate.resolve())
    found = sorted({p.parent.name for root in roots for p in (root / "examples").glob("*/main.py")})
    raise FileNotFoundError(
        f"no example script {name_or_path!r}: give a path to a main.py, or one of the examples with a main.py: "
        f"{', '.join(found) or 'none found'} (known names: {', '.join(KNOWN_EXAMPLES)})"
    )


def plan_runs(example: str, methods: Sequence[MethodSpec], archs: Sequence[str], seeds: Sequence[int],
              extra_args: Sequence[str] = ()) -> list[RunSpec]:
    """The multi-task runs: every method × architecture × seed."""
    if not methods or not archs or not seeds:
        raise ValueError("the grid needs at least one weighting, one architecture and one seed")
    return [RunSpec(example, m, a, int(s), None, tuple(extra_args)) for m in methods for a in archs for s in seeds]


def plan_stl_runs(example: str, tasks: Sequence[str], seeds: Sequence[int], arch: str = "HPS",
                  extra_args: Sequence[str] = ()) -> list[RunSpec]:
    """Single-task baselines: the example once per task and seed (``--stl_task``, EW, ``arch``)."""
    return [RunSpec(example, MethodSpec("EW"), arch, int(s), t, tuple(extra_args)) for t in tasks for s in seeds]


def run_dir(out_dir: str, spec: RunSpec) -> str:
    """The folder one run of the grid writes into (its ``--save_path``)."""
    return os.path.join(out_dir, RUNS_DIR, spec.run_id)


def result_path(out_dir: str, spec: RunSpec) -> str:
    """The JSON record of one run of the grid (its status, times and outputs)."""
    return os.path.join(out_dir, RESULTS_DIR, f"{spec.run_id}.json")


# ---------------------------------------------------------------- one run
def _spawn(cmd: list[str], stdout_path: str, stderr_path: str, env: dict, timeout: Optional[float],
           append: bool = False) -> tuple[int, Optional[float], bool]:
    """Run ``cmd``; ``(exit code, peak RSS of the child in MiB or None, timed out)``. The logs
    are streams (not atomic files); ``append`` keeps an interrupted attempt's lines."""
    timed_out = threading.Event()
    mode = "ab" if append else "wb"
    with open(stdout_path, mode) as out, open(stderr_path, mode) as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            if hasattr(os, "wait4"):
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                # ru_maxrss is KiB on Linux, bytes on macOS
                peak = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
            else:  # pragma: no cover - Windows
                proc.wait()
                peak = None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer is not None:
                timer.cancel()
    return proc.returncode, peak, timed_out.is_set()


def read_result(out_dir: str, spec: RunSpec) -> Optional[dict[str, Any]]:
    """The result record of ``spec`` in ``out_dir``, or None when the run has not ended."""
    return _read_json(result_path(out_dir, spec))


def _read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _read_history(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({k: _parse_cell(v) for k, v in row.items()})
    return rows


def _parse_cell(value: Optional[str]) -> Any:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def _tail(path: str, chars: int = STDERR_TAIL_CHARS) -> str:
    if not os.path.isfile(path):
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - chars))
        return handle.read().decode("utf-8", errors="replace")


def _arch_refusal(code: int, stderr_path: str) -> Optional[str]:
    """The example's parse-time refusal of ``--arch`` (exit code 2, ``--arch`` in the last
    stderr line), or None."""
    if code != USAGE_ERROR_EXIT_CODE:
        return None
    lines = [line.strip() for line in _tail(stderr_path).splitlines() if line.strip()]
    return lines[-1] if lines and "--arch" in lines[-1] else None


def run_one(spec: RunSpec, out_dir: str, python: str = sys.executable, timeout: Optional[float] = None,
            env: Optional[dict] = None, nproc: int = 1) -> dict[str, Any]:
    """Run ``spec`` in a subprocess and write its JSON result; returns the record.

    The record holds ``config``, ``command``, ``status`` (``ok``/``failed``, or ``skipped``
    with ``skip_reason`` when the example refuses the architecture), ``returncode``,
    ``error`` (stderr tail, failures only), ``wall_time_s``, ``peak_rss_mb`` (the child's
    maxrss), ``peak_cuda_mb`` (the Trainer's ``torch.cuda.max_memory_allocated``), ``tasks``
    (metric names and ``weight``), ``history`` (history.csv rows), ``best`` (the Trainer's
    best epoch: ``epoch``, ``improvement``, ``result``, ``test``) and ``diagnostics`` (the
    Trainer's ``diagnostics_summary.json``, when run with ``--diagnostics``).
    """
    save_path = run_dir(out_dir, spec)
    os.makedirs(save_path, exist_ok=True)
    cmd = spec.command(save_path, python, nproc)
    resume_from = os.path.join(save_path, LAST_CHECKPOINT)
    resuming = os.path.isfile(resume_from)
    if resuming:  # an interrupted run continues after its last finished epoch
        cmd += ["--resume", resume_from]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault(PROGRESS_ENV, "off")  # keep the stderr tail readable (LibMTL_rgb.progress)
    child_env.setdefault("TQDM_DISABLE", "1")  # the same for tqdm bars that do not set ``disable``
    stderr_path = os.path.join(save_path, "stderr.log")
    started = time.time()
    t0 = time.perf_counter()
    code, peak_rss, timed_out = _spawn(cmd, os.path.join(save_path, "stdout.log"), stderr_path, child_env, timeout,
                                       append=resuming)
    wall = time.perf_counter() - t0
    if code in (-signal.SIGINT, 130):  # Ctrl-C (130: an example's clean exit): no result, the run continues on resume
        raise KeyboardInterrupt(f"run {spec.run_id} was interrupted")
    summary = _read_json(os.path.join(save_path, "summary.json"))
    record: dict[str, Any] = {
        "run_id": spec.run_id, "config": spec.config(), "command": cmd, "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "status": "ok", "returncode": code, "error": None, "wall_time_s": wall, "peak_rss_mb": peak_rss,
        "peak_cuda_mb": (summary or {}).get("peak_cuda_memory_mb"),
        "tasks": (summary or {}).get("tasks"), "best": (summary or {}).get("best"),
        "epochs_done": (summary or {}).get("epochs_done"),
        "history": _read_history(os.path.join(save_path, "history.csv")),
        "diagnostics": _read_json(os.path.join(save_path, "diagnostics_summary.json")),
    }
    refusal = _arch_refusal(code, stderr_path)
    if refusal is not None:
        record.update(status="skipped", skip_reason=refusal)
    elif timed_out:
        record.update(status="failed", error=f"timed out after {timeout} s\n" + _tail(stderr_path))
    elif code != 0:
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        record.update(status="failed", error=(_tail(stderr_path) + f"\n[{how}]").lstrip())
    elif summary is None:
        record.update(status="failed", error=(
            "the run finished but wrote no summary.json: the example must pass --save_path to the Trainer "
            "(save_path=params.save_path)"))
    path = result_path(out_dir, spec)
    atomic_write_json(path, record)  # a result file is complete or absent
    return record


def pending_specs(specs: Sequence[RunSpec], out_dir: str, retry_failed: bool = False) -> list[RunSpec]:
    """The specs still to run: no result JSON yet, or (with ``retry_failed``) a failed one."""
    todo = []
    for spec in specs:
        existing = _read_json(result_path(out_dir, spec))
        if existing is not None and not (retry_failed and existing.get("status") == "failed"):
            continue
        todo.append(spec)
    return todo


def run_grid(specs: Sequence[RunSpec], out_dir: str, *, python: str = sys.executable, timeout: Optional[float] = None,
             retry_failed: bool = False, dry_run: bool = False, env: Optional[dict] = None, jobs: int = 1,
             echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every spec whose result JSON is missing (or failed, with ``retry_failed``), ``jobs``
    at a time; returns the records of the runs started (in ``specs`` order). ``dry_run`` only
    prints the commands."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    todo = pending_specs(specs, out_dir, retry_failed)
    skipped = len(specs) - len(todo)
    if dry_run:
        echo(f"{len(todo)} run(s) to start, {skipped} already done:")
        for spec in todo:
            echo("  " + " ".join(_quote(a) for a in spec.command(run_dir(out_dir, spec), python)))
        return []
    if skipped:
        echo(f"skipping {skipped} run(s) with results in {os.path.join(out_dir, RESULTS_DIR)}")
    records: dict[str, dict[str, Any]] = {}
    bar = progress_bar(total=len(todo), desc="grid", unit="run")

    def finished(record: dict[str, Any]) -> None:
        records[record["run_id"]] = record
        bar.set_postfix_str(record["run_id"])
        bar.update(1)
        if record["status"] == "skipped":
            tqdm.write(f"skipped {record['run_id']}: {record['skip_reason']}", file=sys.stderr)
        elif record["status"] != "ok":
            last = (record["error"] or "").strip().splitlines()[-1:] or [""]
            tqdm.write(f"FAILED {record['run_id']}: {last[0]} (see {os.path.join(out_dir, RUNS_DIR, record['run_id'])}"
                       "/stderr.log)", file=sys.stderr)

    try:
        if jobs == 1:
            for spec in todo:
                finished(run_one(spec, out_dir, python, timeout, env))
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(run_one, spec, out_dir, python, timeout, env) for spec in todo]
                try:
                    for future in as_completed(futures):
                        finished(future.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    ordered = [records[s.run_id] for s in todo if s.run_id in records]
    failed = sum(r["status"] == "failed" for r in ordered)
    skipped_here = sum(r["status"] == "skipped" for r in ordered)
    echo(f"{len(ordered)} run(s) done, {failed} failed, {skipped_here} skipped (the example cannot run that "
         f"architecture); results in {os.path.join(out_dir, RESULTS_DIR)}")
    return ordered


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[A-Za-z0-9_./=:,+\-\[\]]+", arg) else repr(arg)


# ------------------------------------------------------------------ reading
def load_results(out_dir: str) -> list[dict[str, Any]]:
    """Every result record under ``out_dir/results`` (sorted by run id)."""
    folder = os.path.join(out_dir, RESULTS_DIR)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no results in {out_dir}: expected {folder}/<run>.json (run the grid first)")
    records = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as handle:
                records.append(json.load(handle))
    return records


def discover_tasks(records: Sequence[dict[str, Any]]) -> Optional[list[str]]:
    """The task names of the first successful multi-task run, or None."""
    for record in records:
        if record.get("status") == "ok" and record["config"].get("stl_task") is None and record.get("tasks"):
            return list(record["tasks"])
    return None
