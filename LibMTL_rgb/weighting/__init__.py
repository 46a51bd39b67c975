"""Weightings: ``AbsWeighting`` and one module per method (registered by LibMTL's names).

Loss weightings are written here (EW, SI, RLW, DWA, UW, GradNorm, FAMO); the gradient
methods that torchjd implements are wrapped (``torchjd_methods.py``); Nash-MTL solves the authors'
program on the Gramian (``nash_mtl.py``); RGB is ours.
"""
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting, BatchedGradFallbackWarning
from LibMTL_rgb.weighting.autolambda import AutoLambda
from LibMTL_rgb.weighting.bilevel import BilevelWeighting
from LibMTL_rgb.weighting.dwa import DWA
from LibMTL_rgb.weighting.ew import EW
from LibMTL_rgb.weighting.famo import FAMO
from LibMTL_rgb.weighting.forum import FORUM
from LibMTL_rgb.weighting.gradnorm import GradNorm
from LibMTL_rgb.weighting.graddrop import GradDrop
from LibMTL_rgb.weighting.moml import MOML
from LibMTL_rgb.weighting.rgb import RGB
from LibMTL_rgb.weighting.rlw import RLW
from LibMTL_rgb.weighting.si import SI
from LibMTL_rgb.weighting.torchjd_adapter import TorchJDAggregation
from LibMTL_rgb.weighting.torchjd_methods import (
    CAGrad,
    DualProj,
    FairGrad,
    GradVac,
    IMTL,
    MGDA,
    Aligned_MTL,
    PCGrad,
    UPGrad,
)
from LibMTL_rgb.weighting.nash_mtl import Nash_MTL
from LibMTL_rgb.weighting.uw import UW
from LibMTL_rgb.weighting.gls import GLS
from LibMTL_rgb.weighting.moco import MoCo
from LibMTL_rgb.weighting.db_mtl import DB_MTL
from LibMTL_rgb.weighting.stch import STCH
from LibMTL_rgb.weighting.excess_mtl import ExcessMTL
from LibMTL_rgb.weighting.modo import MoDo
from LibMTL_rgb.weighting.sdmgrad import SDMGrad

__all__ = [
    "AbsWeighting",
    "BatchedGradFallbackWarning",
    "TorchJDAggregation",
    "EW",
    "RGB",
    "SI",
    "RLW",
    "DWA",
    "UW",
    "GradNorm",
    "FAMO",
    "MGDA",
    "PCGrad",
    "GradDrop",
    "GradVac",
    "CAGrad",
    "IMTL",
    "Nash_MTL",
    "FairGrad",
    "Aligned_MTL",
    "UPGrad",
    "DualProj",
    "BilevelWeighting",
    "MOML",
    "FORUM",
    "AutoLambda",
    "GLS",
    "MoCo",
    "DB_MTL",
    "STCH",
    "ExcessMTL",
    "MoDo",
    "SDMGrad",
]
