"""Architectures: ``AbsArchitecture`` and one module per architecture (registered by name)."""
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.architecture.hps import HPS

__all__ = ["AbsArchitecture", "HPS"]
