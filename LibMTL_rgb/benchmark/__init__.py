"""Benchmarking like the paper: Δm% and MR (§3.1), the paper's reference numbers, a grid
runner over weightings × architectures × seeds, and result tables / figures.

Command line: ``python -m LibMTL_rgb.benchmark {run,table,plot,paper} --help``
(see docs/benchmark.md).
"""
from LibMTL_rgb.benchmark.delta_m import delta_m, delta_m_bounds, delta_m_per_metric, delta_m_per_task
from LibMTL_rgb.benchmark.paper_results import paper_stl, paper_table, paper_tables
from LibMTL_rgb.benchmark.ranking import mean_rank, metric_ranks

__all__ = [
    "delta_m", "delta_m_per_task", "delta_m_per_metric", "delta_m_bounds",
    "mean_rank", "metric_ranks", "paper_stl", "paper_table", "paper_tables",
]
