"""LibMTL_rgb: a LibMTL-style multi-task-learning library built around Rotation-Based
Gradient Balancing (RGB)."""
from LibMTL_rgb import architecture, weighting
from LibMTL_rgb.config import LibMTL_args, make_parser, prepare_args
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS
from LibMTL_rgb.trainer import Trainer

__version__ = "0.1.0"
__all__ = ["Trainer", "LibMTL_args", "make_parser", "prepare_args", "WEIGHTINGS", "ARCHITECTURES", "weighting", "architecture"]
