"""CelebA's default size of the task-specific branches of CGC, MTAN and PLE: on the encoder's
last ``task_stages`` stages only, chosen from the task count (README.md, "Task-specific
branches sized for 40 tasks")."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

#: Architectures whose task-specific branches ``--branch_size tasks`` sizes (``--task_stages``).
SIZED_ARCHS = ("CGC", "MTAN", "PLE")
#: The task-specific branches of all T tasks together may cost this many encoders (in
#: multiply-accumulates of the encoder stages they cover). With 3, LibMTL's sizes (every stage)
#: are what the rule gives for up to 3 tasks, the task counts LibMTL's examples have.
ENCODER_BUDGET = 3


def task_stages_for(num_tasks: int, stage_costs: Sequence[float], budget: float = ENCODER_BUDGET) -> int:
    """The largest N (at least 1) such that ``num_tasks`` copies of the encoder's last N stages
    cost at most ``budget`` encoders: ``T · Σ cost[-N:] ≤ budget · Σ cost``.

    >>> task_stages_for(3, [7, 226, 226, 226, 0.5]), task_stages_for(9, [7, 226, 226, 226, 0.5])
    (5, 2)
    >>> task_stages_for(40, [7, 226, 226, 226, 0.5]), task_stages_for(1000, [7, 226, 226, 226, 0.5])
    (1, 1)
    """
    total = sum(stage_costs)
    fitting = [n for n in range(1, len(stage_costs) + 1) if num_tasks * sum(stage_costs[-n:]) <= budget * total]
    return max(fitting, default=1)


def add_branch_size_arg(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--branch_size", type=str, default="tasks", choices=["tasks", "libmtl"],
        help="CGC, MTAN, PLE: 'tasks' gives each task its own branch (experts / attention masks) only on the "
             "encoder's last --task_stages stages, the most whose T copies cost at most "
             f"{ENCODER_BUDGET} encoders (with 40 tasks: the last, dense stage), so a step stays within a few "
             "times HPS's; 'libmtl': LibMTL's sizes (every stage; 40 task copies). An explicit --task_stages, "
             "or --num_experts for CGC / PLE, is used as given (LibMTL's meaning)")


def apply_branch_size(params: argparse.Namespace, arch_args: dict, num_tasks: int,
                      stage_costs: Sequence[float]) -> Optional[int]:
    """Set ``arch_args['task_stages']`` by :func:`task_stages_for` for ``--branch_size tasks``
    with CGC / MTAN / PLE, unless the user gave ``--task_stages`` or (CGC / PLE) ``--num_experts``
    or the rule gives every stage (LibMTL's sizes); the value set, or None when nothing changed."""
    if params.branch_size != "tasks" or params.arch not in SIZED_ARCHS:
        return None
    if arch_args.get("task_stages") is not None or (params.arch != "MTAN" and arch_args.get("num_experts") is not None):
        return None
    stages = task_stages_for(num_tasks, stage_costs)
    if stages == len(stage_costs):
        return None
    arch_args["task_stages"] = stages
    return stages
