"""LibMTL names that public research code imports (issue 18): ``_record._PerformanceMeter``,
``config._parser`` and the module path ``model.resnet_dilated``."""
from __future__ import annotations

import inspect
import subprocess
import sys

import torch

SCRIPT_BOTH_ORDERS = """
import sys, torch
first = sys.argv[1]
if first == "module":
    from LibMTL_rgb.model.resnet_dilated import resnet_dilated as from_module, ResnetDilated
    from LibMTL_rgb.model import resnet_dilated as from_package
else:
    from LibMTL_rgb.model import resnet_dilated as from_package
    from LibMTL_rgb.model.resnet_dilated import resnet_dilated as from_module, ResnetDilated
import LibMTL_rgb.model
for build in (from_module, from_package, LibMTL_rgb.model.resnet_dilated):
    torch.manual_seed(0)
    net = build("resnet18", pretrained=False, dilate_scale=16)
    assert isinstance(net, ResnetDilated), type(net)
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 2, 2)
print("ok")
"""


def test_record_performance_meter_is_ours():
    from LibMTL_rgb._record import _PerformanceMeter
    from LibMTL_rgb.meter import PerformanceMeter

    meter = _PerformanceMeter({"a": {"metrics": ["m"], "weight": [1], "loss_fn": None, "metrics_fn": None}}, False)
    assert isinstance(meter, PerformanceMeter) and meter.best_result["epoch"] == 0


def test_config_parser_is_libmtl_args():
    from LibMTL_rgb.config import LibMTL_args, _parser

    assert _parser is LibMTL_args
    assert _parser.parse_args(["--weighting", "RGB"]).weighting == "RGB"


def test_resnet_dilated_module_and_function_in_either_import_order():
    for first in ("module", "package"):
        done = subprocess.run([sys.executable, "-c", SCRIPT_BOTH_ORDERS, first], check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_resnet_dilated_module_builds_the_same_network_as_the_function():
    from LibMTL_rgb.model.dilated_resnet import resnet_dilated
    import LibMTL_rgb.model.resnet_dilated as module

    torch.manual_seed(1)
    a = module("resnet18", pretrained=False)
    torch.manual_seed(1)
    b = resnet_dilated("resnet18", pretrained=False)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name
    assert inspect.signature(module) == inspect.signature(resnet_dilated)
