"""Names people read for the metric keys of the examples (``abs_err`` -> "absolute error"), for
table headers and figure titles; unknown keys are shown as they are."""
from __future__ import annotations

#: metric key -> (readable name, unit); the keys are those of the examples' metrics (LibMTL's).
READABLE_METRICS: dict[str, tuple[str, str]] = {
    "mIoU": ("mIoU", ""),
    "pixAcc": ("pixel accuracy", ""),
    "abs_err": ("absolute error", ""),
    "rel_err": ("relative error", ""),
    "mean": ("mean angle error", "°"),
    "median": ("median angle error", "°"),
    "<11.25": ("within 11.25°", ""),
    "<22.5": ("within 22.5°", ""),
    "<30": ("within 30°", ""),
    "acc": ("accuracy", ""),
    "Acc": ("accuracy", ""),
    "mae": ("MAE", ""),
    "MAE": ("MAE", ""),
    "L1": ("L1 error", ""),
    "L1_px": ("L1 error", "px"),
    "MSE": ("MSE", ""),
    "loss": ("loss", ""),
    "value": ("objective value", ""),
    "distance": ("distance to the Pareto front", ""),
}
#: QM9's PyG target columns (LibMTL's task names) -> the property's symbol
#: (the 11 tasks of the paper's Table 2: mu alpha homo lumo r2 zpve U0 U H G cv)
QM9_TARGETS = {"0": "μ", "1": "α", "2": "ε_HOMO", "3": "ε_LUMO", "5": "⟨R²⟩", "6": "ZPVE", "12": "U₀", "13": "U",
               "14": "H", "15": "G", "11": "c_v"}

__all__ = ["READABLE_METRICS", "readable_task", "readable_metric"]


def readable_task(task: str) -> str:
    """``segmentation`` -> "Segmentation", QM9's ``"0"`` -> "μ"; other names unchanged but the first letter."""
    if task in QM9_TARGETS:
        return QM9_TARGETS[task]
    return task[:1].upper() + task[1:]


def readable_metric(task: str, metric: str, higher_is_better: bool | None = None) -> str:
    """``("depth", "abs_err", False)`` -> "Depth: absolute error ↓" (unit in brackets when known)."""
    name, unit = READABLE_METRICS.get(metric, (metric.replace("_", " "), ""))
    text = f"{readable_task(task)}: {name}" + (f" [{unit}]" if unit else "")
    if higher_is_better is not None:
        text += " ↑" if higher_is_better else " ↓"
    return text
