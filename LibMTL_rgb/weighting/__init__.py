"""Weightings: ``AbsWeighting`` and one module per method (registered by LibMTL's names)."""
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting
from LibMTL_rgb.weighting.ew import EW
from LibMTL_rgb.weighting.rgb import RGB

__all__ = ["AbsWeighting", "EW", "RGB"]
