"""The toy figure (paper Fig. 6 style): per weighting, the trajectories in loss space (f1, f2)
with the Pareto front in dark gray (top), and in x-space over the contours of the mean loss
with the Pareto set in dark gray (bottom). Colour runs from light (early) to dark (late); a
legend on the figure says what every colour and marker means. matplotlib is imported when
a figure is drawn (``--help`` does not need it)."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from LibMTL_rgb.atomic_io import atomic_savefig
from pareto import ParetoFront
from toy_problem import DOMAIN_LIMIT, toy_losses
from toy_run import ToyRun

FRONT_COLOR = "#4a4a4f"
PATH_COLORMAP = "magma_r"
#: The part of the colour map a path runs through, from its first to its last step.
PATH_COLOR_RANGE = (0.15, 0.75)
MAX_POINTS_PER_PATH = 400
CONTOUR_RESOLUTION = 300


def _thinned(values: np.ndarray) -> np.ndarray:
    step = max(1, len(values) // MAX_POINTS_PER_PATH)
    return np.concatenate([values[::step], values[-1:]])


def _draw_paths(ax, runs: Sequence[ToyRun], key: str) -> None:
    from matplotlib import colormaps

    colors = colormaps[PATH_COLORMAP]
    for run in runs:
        values = _thinned(getattr(run, key))
        ax.scatter(values[:, 0], values[:, 1], c=colors(np.linspace(*PATH_COLOR_RANGE, len(values))), s=4, zorder=3)
        ax.scatter(*values[0], color="black", s=40, zorder=4)
        ax.scatter(*values[-1], color="tab:red", marker="*", s=60, zorder=5)


def _mean_loss_grid(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = torch.linspace(-DOMAIN_LIMIT, DOMAIN_LIMIT, CONTOUR_RESOLUTION, dtype=torch.float64)
    grid_x1, grid_x2 = torch.meshgrid(axis, axis, indexing="xy")
    mean = toy_losses(torch.stack([grid_x1, grid_x2], dim=-1), scale).mean(dim=-1)
    return grid_x1.numpy(), grid_x2.numpy(), mean.numpy()


def _legend_handles() -> list:
    """Proxy artists that name every colour and marker of the figure."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    colors = colormaps[PATH_COLORMAP]
    early, late = colors(PATH_COLOR_RANGE[0]), colors(PATH_COLOR_RANGE[1])

    def dot(color, label: str, marker: str = "o", size: float = 6) -> Line2D:
        return Line2D([], [], linestyle="none", marker=marker, color=color, markersize=size, label=label)

    return [
        dot(early, "path, early steps (light)"),
        dot(late, "path, late steps (dark)"),
        dot("black", "start", size=7),
        dot("tab:red", "end", marker="*", size=10),
        Line2D([], [], color=FRONT_COLOR, linewidth=4, label="Pareto front (top) / Pareto set (bottom)"),
        Line2D([], [], color=colormaps["viridis"](0.5), linewidth=1, label="contours of (f1 + f2) / 2, purple low to yellow high (bottom)"),
    ]


def plot_format_problem(path: str) -> Optional[str]:
    """None when matplotlib can write ``path``'s format (its extension), else why not."""
    from matplotlib.figure import Figure

    extension = os.path.splitext(path)[1].lstrip(".").lower()
    supported = Figure().canvas.get_supported_filetypes()
    if extension not in supported:
        return (f"{path}: matplotlib cannot write {'files without an extension' if not extension else '.' + extension}; "
                f"use one of {', '.join('.' + e for e in sorted(supported))}")
    return None


def plot_runs(results: Mapping[str, Sequence[ToyRun]], front: ParetoFront, scale: float, path: str) -> str:
    """Draw one column per weighting in ``results`` and save the PNG to ``path``."""
    if not results:
        raise ValueError("nothing to plot: no runs")
    from matplotlib.figure import Figure

    columns = len(results)
    fig = Figure(figsize=(4.2 * columns, 8.4), layout="constrained")
    axes = fig.subplots(2, columns, squeeze=False)
    grid = _mean_loss_grid(scale)
    front_losses, front_points = front.losses.numpy(), front.points.numpy()
    for column, (name, runs) in enumerate(results.items()):
        mean_distance = float(np.mean([run.end_distance for run in runs]))
        loss_ax, x_ax = axes[0, column], axes[1, column]
        loss_ax.plot(front_losses[:, 0], front_losses[:, 1], "-", color=FRONT_COLOR, linewidth=6,
                     solid_capstyle="round", zorder=1)
        _draw_paths(loss_ax, runs, "losses")
        loss_ax.set_title(f"{name}: loss space, mean distance to front {mean_distance:.3g}", fontsize="medium")
        loss_ax.set_xlabel(r"$\ell_1$" + (f" (f1 scaled by {scale:g})" if scale != 1 else ""))
        loss_ax.set_ylabel(r"$\ell_2$")

        contours = x_ax.contour(*grid, levels=20, cmap="viridis", linewidths=0.8, zorder=0)
        x_ax.clabel(contours, contours.levels[::3], fontsize=6, inline=True, fmt="%.1f")
        x_ax.plot(front_points[:, 0], front_points[:, 1], ".", color=FRONT_COLOR, markersize=3, zorder=1)
        _draw_paths(x_ax, runs, "path")
        x_ax.set_xlim(-DOMAIN_LIMIT, DOMAIN_LIMIT)
        x_ax.set_ylim(-DOMAIN_LIMIT, DOMAIN_LIMIT)
        x_ax.set_aspect("equal")
        x_ax.set_title(f"{name}: x-space, contours of (f1 + f2) / 2", fontsize="medium")
        x_ax.set_xlabel("$x_1$")
        x_ax.set_ylabel("$x_2$")
    fig.suptitle("Toy problem (RGB paper App. A.10, Fig. 6)", fontsize="medium")
    # one legend column per figure column (the labels are long), at most 3
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncols=min(3, columns), fontsize="small",
               frameon=False)
    atomic_savefig(fig, path, dpi=110, facecolor="white", bbox_inches="tight")
    return path
