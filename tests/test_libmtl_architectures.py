"""Architectures as LibMTL main builds them: parameter counts on its NYUv2 setting (numbers
measured on LibMTL main), and MTAN's and PLE's forward pass against PyPI LibMTL 1.1.5's (whose
MTAN.py and PLE.py compute what main's do: they differ in docstrings and ``zero_grad`` only),
float64, same weights."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.model import resnet18, resnet_dilated
from LibMTL_rgb.registry import ARCHITECTURES
from libmtl_oracle import float64_default, libmtl_available

TASKS = ["segmentation", "depth", "normal"]
NYU_IMG = [3, 288, 384]
#: LibMTL's NYUv2 example options for the architectures that need some.
NYU_OPTIONS = {
    "MMoE": {"img_size": NYU_IMG, "num_experts": [2]},
    "DSelect_k": {"img_size": NYU_IMG, "num_experts": [2], "num_nonzeros": 2, "kgamma": 1.0},
    "CGC": {"img_size": NYU_IMG, "num_experts": [1, 1, 1, 1]},
    "PLE": {"img_size": NYU_IMG, "num_experts": [1, 1, 1, 1]},
}

#: Parameters of LibMTL main's architectures (github.com/median-research-group/LibMTL at commit
#: 4336804, fetched and never vendored), measured as
#: ``sum(p.numel() for p in getattr(LibMTL.architecture, arch)(task_name=TASKS,
#: encoder_class=lambda: LibMTL.model.resnet_dilated(f'resnet{depth}', pretrained=False),
#: decoders=nn.ModuleDict({t: nn.Identity() for t in TASKS}), rep_grad=False, multi_input=False,
#: device='cpu', **NYU_OPTIONS.get(arch, {})).parameters())`` (decoders excluded).
LIBMTL_MAIN_PARAMETERS = {
    ("HPS", 18): 11_176_512, ("HPS", 50): 23_508_032,
    ("MTAN", 18): 19_137_216, ("MTAN", 50): 43_967_232,
    ("Cross_stitch", 18): 33_529_572, ("Cross_stitch", 50): 70_524_132,
    ("LTB", 18): 33_529_590, ("LTB", 50): 70_524_150,
    ("MMoE", 18): 24_343_686, ("MMoE", 50): 49_006_726,
    ("CGC", 18): 46_696_710, ("CGC", 50): 96_022_790,
    ("PLE", 18): 55_986_462, ("PLE", 50): 125_219_102,
    ("DSelect_k", 18): 26_334_348, ("DSelect_k", 50): 50_997_388,
}
#: Parameters LibMTL main allocates and never uses: Cross_stitch's ``cross_unit`` is [4, T, T]
#: with row 3 unread (three stitches, after layer1-3); LTB's ``alpha`` is [6, T, T] with rows 0
#: and 5 unread (four branchings, before layer1-4). Ours has only the rows that are used.
LIBMTL_UNUSED = {"Cross_stitch": 1 * len(TASKS) ** 2, "LTB": 2 * len(TASKS) ** 2}


def count_parameters(arch: str, depth: int) -> int:
    """Our ``arch`` on LibMTL's NYUv2 setting, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = ARCHITECTURES.get(arch)(
            TASKS, lambda: resnet_dilated(f"resnet{depth}", pretrained=False),
            nn.ModuleDict({t: nn.Identity() for t in TASKS}), False, False, "meta", **NYU_OPTIONS.get(arch, {}))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,depth", sorted(LIBMTL_MAIN_PARAMETERS))
def test_parameter_counts_are_libmtl_main_s(arch, depth):
    assert count_parameters(arch, depth) == LIBMTL_MAIN_PARAMETERS[arch, depth] - LIBMTL_UNUSED.get(arch, 0)


def test_every_libmtl_architecture_is_counted():
    assert {arch for arch, _ in LIBMTL_MAIN_PARAMETERS} == set(ARCHITECTURES.names())


# ------------------------------------------------------------------ same function as LibMTL's


@pytest.fixture(scope="module")
def libmtl_architecture():
    if not libmtl_available():
        pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)")
    from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

    ensure_torchvision_models_utils()
    import LibMTL.architecture

    return LibMTL.architecture


def encoders_from(pool: list[nn.Module]):
    """An ``encoder_class`` handing out copies of ``pool``'s encoders in order (both libraries
    build their encoders in the same order, so they get the same weights)."""
    it = iter(pool)
    return lambda: next(it)


def assert_same_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    for mode in ("eval", "train"):  # running statistics, then batch statistics
        getattr(ours, mode)(), getattr(theirs, mode)()
        out, expected = ours(x), theirs(x)
        for task in TASKS:
            torch.testing.assert_close(out[task], expected[task], rtol=1e-12, atol=1e-12)


def test_mtan_is_libmtl_s_mtan(libmtl_architecture):
    """Same modules (per-task masks, residual transitions), same outputs: a dilated ResNet-18."""
    torch.manual_seed(0)
    encoder = resnet_dilated("resnet18", pretrained=False).double()
    identity = nn.ModuleDict({t: nn.Identity() for t in TASKS})
    theirs = libmtl_architecture.MTAN(TASKS, encoders_from([encoder]), identity, False, False, "cpu").double()
    ours = ARCHITECTURES.get("MTAN")(TASKS, encoders_from([copy.deepcopy(encoder)]), identity, False, False, "cpu").double()
    for stage in range(4):
        for t, task in enumerate(TASKS):
            ours.attention[task][stage].load_state_dict(theirs.encoder.encoder_att[str(stage)][t].state_dict())
        if stage < 3:
            ours.transitions[stage].load_state_dict(theirs.encoder.encoder_block_att[stage].state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert_same_outputs(ours, theirs, torch.randn(2, 3, 32, 48, dtype=torch.float64))


def test_ple_is_libmtl_s_ple(libmtl_architecture):
    """Five levels (the stem apart), same gates, same outputs: ResNet-18 experts, 1 shared + 1 per task."""
    torch.manual_seed(0)
    img = [3, 32, 32]
    pool = [resnet18().double() for _ in range(1 + len(TASKS))]  # both build shared first, then task order
    identity = nn.ModuleDict({t: nn.Identity() for t in TASKS})
    options = {"img_size": img, "num_experts": [1] * (1 + len(TASKS))}
    with float64_default():  # LibMTL's PLE traces its gate sizes with a default-dtype tensor
        theirs = libmtl_architecture.PLE(TASKS, encoders_from(pool), identity, False, False, "cpu", **options)
    ours = ARCHITECTURES.get("PLE")(TASKS, encoders_from([copy.deepcopy(e) for e in pool]), identity, False, False,
                                    "cpu", **options).double()
    assert ours.num_levels == 5
    for task, level in itertools.product(TASKS, range(5)):
        ours.gate_specific[task][level].linear.load_state_dict(theirs.encoder.gate_specific[task][level][0].state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert_same_outputs(ours, theirs, torch.randn(2, *img, dtype=torch.float64))


class OfficeWrapperEncoder(nn.Module):
    """LibMTL's Office-31 encoder pattern, tiny: ``resnet_network`` then a pooled linear head."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.resnet_network = network
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.hidden_layer = nn.Sequential(nn.Linear(512, 8), nn.ReLU())

    def forward(self, inputs):
        return self.hidden_layer(torch.flatten(self.avgpool(self.resnet_network(inputs)), 1))


def test_mtan_on_libmtl_s_wrapper_encoder_is_libmtl_s_mtan(libmtl_architecture):
    """LibMTL's Office-31 pattern (a wrapper holding ``resnet_network``, ``multi_input``): same
    parameter count, same outputs per task; the wrapper's head is shared as in LibMTL."""
    torch.manual_seed(0)
    wrapper = OfficeWrapperEncoder(resnet18()).double()
    identity = nn.ModuleDict({t: nn.Identity() for t in TASKS})
    ours = ARCHITECTURES.get("MTAN")(TASKS, encoders_from([copy.deepcopy(wrapper)]), identity, False, True,
                                     "cpu").double()
    theirs = libmtl_architecture.MTAN(TASKS, encoders_from([wrapper]), identity, False, True, "cpu").double()
    for stage in range(4):
        for t, task in enumerate(TASKS):
            ours.attention[task][stage].load_state_dict(
                theirs.encoder.resnet_network.encoder_att[str(stage)][t].state_dict())
        if stage < 3:
            ours.transitions[stage].load_state_dict(theirs.encoder.resnet_network.encoder_block_att[stage].state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    head = {id(p) for p in ours.encoder.hidden_layer.parameters()}
    assert head <= {id(p) for p in ours.get_share_params()}
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for mode in ("eval", "train"):
        ours.train(mode == "train"), theirs.train(mode == "train")
        for task in TASKS:
            out, expected = ours(x, task)[task], theirs(x, task)[task]
            assert out.shape == (2, 8)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
