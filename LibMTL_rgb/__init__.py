"""LibMTL_rgb: a LibMTL-style multi-task-learning library built around Rotation-Based
Gradient Balancing (RGB).

The top level holds LibMTL's public names (``architecture``, ``model``, ``weighting``,
``Trainer``, ``config``, ``loss``, ``metrics``, ``utils``), so ``from LibMTL import ...``
becomes ``from LibMTL_rgb import ...`` (docs/migrating_from_libmtl.md)."""
from LibMTL_rgb import architecture, weighting
from LibMTL_rgb import config, loss, metrics, model, utils
from LibMTL_rgb.config import LibMTL_args, make_parser, prepare_args
from LibMTL_rgb.libmtl_compat import alias_libmtl_module_paths
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS
from LibMTL_rgb.trainer import Trainer

alias_libmtl_module_paths()

__version__ = "0.1.0"
__all__ = ["Trainer", "LibMTL_args", "make_parser", "prepare_args", "WEIGHTINGS", "ARCHITECTURES", "weighting",
           "architecture", "model", "config", "loss", "metrics", "utils"]
