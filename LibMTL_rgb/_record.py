"""LibMTL's private module ``LibMTL._record``: ``_PerformanceMeter`` is our
:class:`~LibMTL_rgb.meter.PerformanceMeter` (same constructor ``(task_dict, multi_input,
base_result=None)``, attributes and methods), for code that imports it by LibMTL's path."""
from __future__ import annotations

from LibMTL_rgb.meter import PerformanceMeter

_PerformanceMeter = PerformanceMeter

__all__ = ["_PerformanceMeter"]
