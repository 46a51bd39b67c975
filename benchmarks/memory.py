"""Peak extra memory of RGB (target 4): of the aggregation alone (``rgb_step`` on G, K = 5 and
K = 50, against one Gram product), and of a whole training step beyond EW's on the QM9 MPNN,
next to PCGrad and MGDA. RGB may add the T×D gradient matrix plus O(D), and nothing that
grows with K.

    python benchmarks/memory.py                        # T = 11, D = 2·10⁶; QM9 MPNN, 4 molecules
    python benchmarks/memory.py --device cuda --molecules 120
    python benchmarks/memory.py --paths --examples celeba --task_counts 40   # issue 22: both gradient paths

``--paths`` (issue 22, ``gradient_paths.py``): a training step of EW, the per-task-gradient
floor, and Gramian methods on the matrix and on the Gramian path, on the CelebA and NYUv2
example models with T tasks, as ratios to EW's; PASS/FAIL rows: each Gramian-path step at
T >= 40 within 2x EW's (the process's peak, and the step's peak above the resident set).

Every configuration runs in a fresh subprocess: it builds its inputs, runs the measured call
once (warm-up), then measures a second call. On CPU the peak is the process's peak resident
set (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident set just before
the call, with glibc's malloc told to return every block of 64 KiB or more to the system
(``MALLOC_MMAP_THRESHOLD_``) so that freed memory does not hide new peaks. On CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from typing import Callable, Optional, Sequence

import torch

import gradient_paths
from _timing import Check, checks_table, machine_line, markdown_table
from gradient_paths import EW, IncrementalTable, cases_for, cells, ratio, setting_line

MIB = 2.0**20
#: O(D) allowance of target 4, in D-vectors of the gradient dtype.
O_D_VECTORS = 4
#: Measurement noise allowed (page granularity, allocator bookkeeping, interpreter).
SLACK_BYTES = 2 * MIB


# ------------------------------------------------------------------------- measuring
def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_bytes(call: Callable[[], object], device: torch.device) -> int:
    """Peak memory of ``call()`` above what was in use just before it (bytes)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    before = _proc_status_kib("VmRSS")
    call()
    return (_proc_status_kib("VmHWM") - before) * 1024


# -------------------------------------------------------------- worker configurations
def aggregation_call(config: dict, device: torch.device) -> Callable[[], object]:
    from rgb_aggregation import previous_ema, random_gradients
    from LibMTL_rgb.rgb import rgb_step

    grads = random_gradients(config["tasks"], config["dim"], device, torch.float32, config["seed"])
    ema = previous_ema(grads)
    if config["case"] == "gram":
        return lambda: grads @ grads.T
    steps = config["steps"]
    return lambda: rgb_step(grads, ema, steps=steps)


def step_call(config: dict, device: torch.device) -> Callable[[], object]:
    from train_step import StepCase, make_step, qm9_workload

    work = qm9_workload(config["molecules"], device, config["seed"])
    weight_args = {"rgb_steps": config["rgb_steps"]} if config["weighting"] == "RGB" else {}
    case = StepCase(config["weighting"], config["weighting"], weight_args, config["grad_method"])
    step, _ = make_step(case, work)
    return step


def path_call(config: dict, device: torch.device) -> tuple[Callable[[], object], dict]:
    """A training step of one case of ``gradient_paths`` (CelebA / NYUv2 example model)."""
    import gradient_paths

    sizes = gradient_paths.example_sizes(config["example"], argparse.Namespace(**config["sizes"]))
    cell = gradient_paths.Cell(config["example"], config["arch"], config["tasks"], sizes)
    case = gradient_paths.cases_for(config["methods"], config["sizes"].get("chunk_fraction", 0.25))[config["case"]]
    step, model = cell.step(case)
    return step, {"path": gradient_paths.taken_path(model), "dim": gradient_paths.shared_dim(model)}


def worker(config: dict) -> None:
    torch.set_num_threads(1)
    device = torch.device(config["device"])
    info: dict = {}
    if config["kind"] == "path":
        call, info = path_call(config, device)
    else:
        call = (aggregation_call if config["kind"] == "aggregation" else step_call)(config, device)
    call()  # warm-up: lazy initialisation, optimizer state, .grad buffers
    gc.collect()
    resident = _proc_status_kib("VmRSS") * 1024 if device.type == "cpu" else torch.cuda.memory_allocated(device)
    print(json.dumps({"peak_extra": peak_extra_bytes(call, device), "resident": resident, **info}))


def measure_full(config: dict) -> dict:
    """Run one configuration in a fresh interpreter: ``peak_extra`` (bytes above the resident
    set just before the measured call), ``resident`` (that resident set) and the worker's notes."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"configuration {config} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(config: dict) -> int:
    """Run one configuration in a fresh interpreter; its peak extra memory in bytes."""
    return int(measure_full(config)["peak_extra"])


# -------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", type=int, default=11, help="T of the aggregation measurement")
    parser.add_argument("--dim", type=int, default=2_000_000, help="D of the aggregation measurement")
    parser.add_argument("--small_steps", type=int, default=5, help="the small K")
    parser.add_argument("--large_steps", type=int, default=50, help="the large K")
    parser.add_argument("--molecules", type=int, default=4, help="molecules per batch of the QM9 training step")
    parser.add_argument("--rgb_steps", type=int, default=30, help="RGB's K in the training step")
    parser.add_argument("--step", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure whole QM9 training steps (EW, RGB, PCGrad, MGDA)")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    gradient_paths.add_path_flags(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> list[Check]:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker))
        return []
    torch.set_num_threads(1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available here")
    if device.type == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        raise SystemExit("CPU peaks are read from /proc (Linux only); use --device cuda elsewhere")
    print(machine_line(device))
    base = {"device": args.device, "seed": args.seed}
    if args.paths:
        checks = paths_section(args, base)
        print("\n" + checks_table(checks))
        return checks
    checks = aggregation_section(args, base)
    if args.step:
        checks += step_section(args, base)
    print(checks_table(checks))
    return checks


def aggregation_section(args: argparse.Namespace, base: dict) -> list[Check]:
    T, D = args.tasks, args.dim
    vector = 4 * D  # one float32 D-vector
    config = dict(base, kind="aggregation", tasks=T, dim=D)
    peaks = {"Gram G·Gᵀ": measure(dict(config, case="gram"))}
    for k in (args.small_steps, args.large_steps):
        peaks[f"rgb_step K={k}"] = measure(dict(config, case="rgb", steps=k))
    print(f"\nAggregation on a given G (T = {T}, D = {D:,}, float32; G itself is {T * vector / MIB:.1f} MiB):")
    rows = [[name, f"{b / MIB:.1f}", f"{b / vector:.2f}"] for name, b in peaks.items()]
    print(markdown_table(["call", "peak extra MiB", "in D-vectors"], rows) + "\n")
    small, large = peaks[f"rgb_step K={args.small_steps}"], peaks[f"rgb_step K={args.large_steps}"]
    return [
        Check("4", f"rgb_step K={args.large_steps} extra, in D-vectors (O(D))", large / vector, O_D_VECTORS),
        Check("4", f"K={args.large_steps} minus K={args.small_steps} extra, in D-vectors (no K growth)",
              (large - small) / vector, SLACK_BYTES / vector),
    ]


def step_section(args: argparse.Namespace, base: dict) -> list[Check]:
    from LibMTL_rgb.registry import WEIGHTINGS
    from train_step import qm9_workload

    probe = qm9_workload(args.molecules, torch.device("cpu"), args.seed).build("EW")
    probe._compute_grad_dim()
    T, D = probe.task_num, probe.grad_dim
    matrix, vector = 4 * T * D, 4 * D
    config = dict(base, kind="step", molecules=args.molecules, rgb_steps=args.rgb_steps, grad_method="auto")
    names = ["EW", "RGB"] + [peer for peer in ("PCGrad", "MGDA") if peer in WEIGHTINGS]
    peaks = {name: measure(dict(config, weighting=name)) for name in names}
    peaks["RGB, grad_method='batched'"] = measure(dict(config, weighting="RGB", grad_method="batched"))
    ew = peaks["EW"]
    print(f"Whole training step, QM9 MPNN, {args.molecules} molecules (T = {T}, D = {D:,}; "
          f"the T×D matrix is {matrix / MIB:.1f} MiB, a D-vector {vector / MIB:.1f} MiB):")
    rows = [[name, f"{b / MIB:.1f}", f"{(b - ew) / MIB:+.1f}", f"{(b - ew) / matrix:+.2f}"] for name, b in peaks.items()]
    print(markdown_table(["step", "peak extra MiB", "beyond EW, MiB", "beyond EW, in T×D matrices"], rows) + "\n")
    allowed = matrix + O_D_VECTORS * vector + SLACK_BYTES
    return [Check("4", f"RGB step beyond EW, in T×D matrices (limit: 1 + {O_D_VECTORS} D-vectors)",
                  (peaks["RGB"] - ew) / matrix, allowed / matrix)]


def paths_section(args: argparse.Namespace, base: dict) -> list[Check]:
    """Issue 22: a training step's peak memory on the example models, every case of
    ``gradient_paths.CASES`` in its own interpreter; a table per (example, T)."""
    gradient_paths.check_path_flags(args)
    cases = cases_for(args.gramian_methods, args.chunk_fraction)
    gramian = [c for c in cases if c.grad_method == "gramian"]
    header = (["arch", "D", "EW step MiB", "EW resident MiB"] + [f"{c.label} ×EW" for c in cases if c.label != EW]
              + [f"{c.label}: resident + step ×EW" for c in gramian] + ["paths taken"])
    checks, current = [], None
    for example, tasks, arch in cells(args):
        if current != (example, tasks):
            current = (example, tasks)
            IncrementalTable(f"Peak memory of a training step (above the resident set before it; each case in a fresh "
                             f"process, after one warm-up step), {setting_line(example, tasks, args)}; ratios to EW's:",
                             header)
        config = dict(base, kind="path", example=example, arch=arch, tasks=tasks, methods=list(args.gramian_methods),
                      sizes=gradient_paths.size_flags(args))
        results: dict = {}
        for index, case in enumerate(cases):
            try:
                results[case.label] = measure_full(dict(config, case=index))
            except RuntimeError as err:
                last = [line for line in str(err).splitlines() if line.strip()][-1:] or ["?"]
                print(f"  {example} {arch} T={tasks} {case.label}: failed: {last[0][:200]}", flush=True)
        ew = results.get(EW)
        extra = {label: r["peak_extra"] for label, r in results.items()}
        total = {label: r["peak_extra"] + r["resident"] for label, r in results.items()}
        dim = next((r["dim"] for r in results.values()), 0)
        row = [arch, f"{dim:,}", f"{ew['peak_extra'] / MIB:.0f}" if ew else "—", f"{ew['resident'] / MIB:.0f}" if ew else "—"]
        row += [ratio(extra.get(c.label), extra.get(EW)) for c in cases if c.label != EW]
        row += [ratio(total.get(c.label), total.get(EW)) for c in gramian]
        row.append(", ".join(sorted({f"{r['path']}" for r in results.values() if r["path"] != "—"})))
        IncrementalTable.row(row)
        if tasks >= 40:
            for c in gramian:
                for what, peaks in (("process peak", total), ("step peak above resident", extra)):
                    value = peaks[c.label] / peaks[EW] if c.label in peaks and peaks.get(EW) else float("inf")
                    checks.append(Check("22", f"{example} {arch} T={tasks}: {c.label} {what} / EW's", value, 2.0))
    return checks


if __name__ == "__main__":
    checks = main()
    sys.exit(0 if all(c.passed for c in checks) else 1)
