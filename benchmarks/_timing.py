"""Shared helpers of the benchmark scripts: robust timing, the machine line, result tables.

Timings are medians of interleaved rounds: every round runs each case once, in order, so a
burst of load from other processes hits all cases alike and the ratios stay meaningful on a
shared machine. On CUDA every timed call is bracketed by ``torch.cuda.synchronize``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Timing:
    """Seconds of the timed calls of one case."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Relative half-width of the middle half of the samples (IQR / 2 / median)."""
        if len(self.samples) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return (q3 - q1) / 2.0 / self.median


@dataclass(frozen=True)
class Check:
    """One target: ``value`` must be ``<= limit`` (or ``< limit`` when ``strict``)."""

    target: str
    what: str
    value: float
    limit: float
    strict: bool = False

    @property
    def passed(self) -> bool:
        return self.value < self.limit if self.strict else self.value <= self.limit

    def row(self) -> list[str]:
        relation = "<" if self.strict else "≤"
        return [self.target, self.what, f"{self.value:.3f}", f"{relation} {self.limit:g}", "PASS" if self.passed else "FAIL"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    cases: Mapping[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 7,
    warmup: int = 1,
    desc: str = "timing",
) -> dict[str, Timing]:
    """Warm every case up ``warmup`` times, then ``repeats`` rounds of one timed call per case."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in tqdm(range(repeats), desc=desc, leave=False, dynamic_ncols=True):
        for name, fn in cases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def machine_line(device: torch.device) -> str:
    """CPU model, cores, torch threads, torch version, and the GPU when on CUDA."""
    parts = [f"CPU: {_cpu_model()}", f"{os.cpu_count()} logical cores", f"torch {torch.__version__}",
             f"{torch.get_num_threads()} torch threads", f"Python {platform.python_version()}"]
    if device.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.strip().lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def checks_table(checks: Sequence[Check]) -> str:
    return markdown_table(["target", "checks", "measured", "limit", "result"], [c.row() for c in checks])


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def add_common_flags(parser: argparse.ArgumentParser, repeats: int, warmup: int = 1) -> None:
    """``--device``, ``--repeats``, ``--warmup``, ``--threads``, ``--seed``."""
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (the median is reported)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls per case before timing")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 keeps the ratios steady on a shared machine (raise it on a dedicated one)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")


def setup_from_flags(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and ``--seed``; return the checked ``--device``."""
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available here")
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    return device


def describe(timings: Mapping[str, Timing], name: str, reference: Optional[str] = None) -> list[str]:
    """``[median ms, ±spread, ratio to reference]`` of one case."""
    t = timings[name]
    ratio = "" if reference is None else f"{t.median / timings[reference].median:.2f}"
    return [milliseconds(t.median), f"±{t.spread * 100:.0f}%", ratio]
