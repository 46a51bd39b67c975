"""Architectures: ``AbsArchitecture`` and one module per architecture (registered by name)."""
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.architecture.cgc import CGC
from LibMTL_rgb.architecture.cross_stitch import Cross_stitch
from LibMTL_rgb.architecture.dselect_k import DSelect_k
from LibMTL_rgb.architecture.hps import HPS
from LibMTL_rgb.architecture.ltb import LTB
from LibMTL_rgb.architecture.mmoe import MMoE
from LibMTL_rgb.architecture.mtan import MTAN
from LibMTL_rgb.architecture.ple import PLE

__all__ = ["AbsArchitecture", "HPS", "MTAN", "MMoE", "CGC", "PLE", "Cross_stitch", "DSelect_k", "LTB"]
