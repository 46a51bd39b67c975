"""LibMTL's model factories in LibMTL_rgb.model: names, signatures, the modules they build
(against PyPI LibMTL 1.1.5's own factories), and where ``pretrained=True`` finds weights
(tiny fake checkpoints under LibMTL's and torchvision's hub-cache names in a temporary
TORCH_HOME)."""
from __future__ import annotations

import importlib.util
import inspect
import os
import warnings

import pytest
import torch
import torch.nn as nn

import LibMTL_rgb.model as ours
from LibMTL_rgb.model import ResnetDilated, pretrained_weight_files, resnet18, resnet_dilated, resnet_encoder
from LibMTL_rgb.model.pretrained_weights import LIBMTL_FILES

NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
         "wide_resnet50_2", "wide_resnet101_2"]


@pytest.fixture(scope="module")
def libmtl_model():
    """PyPI LibMTL 1.1.5's ``LibMTL.model`` (its resnet.py needs a stand-in torchvision.models.utils)."""
    if importlib.util.find_spec("LibMTL") is None:
        pytest.skip("LibMTL is not installed (python -m pip install --no-deps LibMTL==1.1.5)")
    from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

    ensure_torchvision_models_utils()
    import LibMTL.model
    import LibMTL.model.resnet

    return LibMTL.model


def test_every_libmtl_model_name_exists_with_libmtl_signature(libmtl_model):
    assert set(libmtl_model.__all__) <= set(ours.__all__)
    for name in libmtl_model.__all__:
        theirs, mine = inspect.signature(getattr(libmtl_model, name)), inspect.signature(getattr(ours, name))
        assert [(p.name, p.kind, p.default) for p in mine.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.parameters.values()], name
    from LibMTL.model.resnet_dilated import ResnetDilated as TheirResnetDilated

    assert list(inspect.signature(ResnetDilated).parameters) == list(inspect.signature(TheirResnetDilated).parameters)
    assert LIBMTL_FILES == {name: url.rsplit("/", 1)[-1] for name, url in libmtl_model.resnet.model_urls.items()}


@pytest.mark.parametrize("name", NAMES)
def test_factories_build_libmtl_s_modules(libmtl_model, name):
    """Same parameter and buffer names and shapes, same feature_dim (built on the meta device:
    no memory for the big ones)."""
    with torch.device("meta"):
        mine, theirs = getattr(ours, name)(), getattr(libmtl_model, name)()
    assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert mine.feature_dim == theirs.feature_dim


def conv_layout(model: nn.Module) -> list[tuple]:
    return [(n, m.stride, m.dilation, m.padding) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("dilate_scale", [8, 16])
def test_resnet_dilated_computes_what_libmtl_s_computes(libmtl_model, name, dilate_scale):
    torch.manual_seed(0)
    theirs = libmtl_model.resnet_dilated(name, pretrained=False, dilate_scale=dilate_scale).double().eval()
    mine = resnet_dilated(name, pretrained=False, dilate_scale=dilate_scale).double().eval()
    assert conv_layout(mine) == conv_layout(theirs)
    mine.load_state_dict(theirs.state_dict())  # strict: same names
    x = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    out = mine(x)
    assert out.shape == (2, theirs.feature_dim, 48 // dilate_scale, 64 // dilate_scale)
    torch.testing.assert_close(out, theirs(x), rtol=1e-10, atol=1e-12)
    assert mine.feature_dim == theirs.feature_dim and mine.output_stride == dilate_scale
    for attribute in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        assert isinstance(getattr(mine, attribute), nn.Module)


def test_resnet_dilated_accepts_libmtl_s_own_resnet(libmtl_model):
    torch.manual_seed(0)
    model = ResnetDilated(libmtl_model.resnet18(), dilate_scale=8)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    assert model.stage_channels == [64, 128, 256, 512]


def test_dilated_encoder_and_torchvision_dilation_agree_for_bottlenecks():
    """LibMTL's dilation rule is torchvision's replace_stride_with_dilation for Bottleneck ResNets."""
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
        encoder = resnet_encoder(50, dilated=True)
    assert conv_layout(encoder) == conv_layout(reference)


def test_dilate_scale_is_checked_and_unknown_basenet_refused():
    with pytest.raises(ValueError, match="dilate_scale"):
        resnet_dilated("resnet18", pretrained=False, dilate_scale=4)
    with pytest.raises(ValueError, match="resnet50"):
        resnet_dilated("resnet20", pretrained=False)
    plain = resnet_dilated("resnet18", pretrained=False, dilate_scale=32)
    assert plain(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


# ----------------------------------------------------------------- pretrained lookup
OLD_NAME, NEW_V1 = "resnet18-5c106cde.pth", "resnet18-f37072fd.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache: ``$TORCH_HOME/hub/checkpoints``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    directory = tmp_path / "torch" / "hub" / "checkpoints"
    directory.mkdir(parents=True)
    return directory


def tiny_checkpoint(path, seed: int, legacy: bool = False) -> dict:
    """A width-4 ResNet-18 state_dict with a classifier (as ImageNet files have), saved at ``path``."""
    torch.manual_seed(seed)
    state = resnet18(width=4).state_dict()
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 32), torch.randn(1000)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return state


def test_pretrained_loads_libmtl_s_file_name_first(hub):
    old = tiny_checkpoint(hub / OLD_NAME, seed=1, legacy=True)  # the legacy format LibMTL's file has
    tiny_checkpoint(hub / NEW_V1, seed=2)
    model = resnet18(pretrained=True, width=4)
    assert torch.equal(model.conv1.weight, old["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_var, old["layer4.1.bn2.running_var"])


def test_pretrained_loads_today_s_torchvision_names(hub):
    new = tiny_checkpoint(hub / NEW_V1, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # V1: the same weights as LibMTL's, no warning
        model = resnet18(pretrained=True, width=4)
    assert torch.equal(model.conv1.weight, new["conv1.weight"])
    files = dict(pretrained_weight_files("resnet50"))
    assert list(files)[:3] == ["resnet50-19c8e357.pth", "resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"]
    assert pretrained_weight_files(50) == pretrained_weight_files("resnet50")


def test_v2_weights_load_with_a_warning(hub, monkeypatch):
    from LibMTL_rgb.model import pretrained_weights

    v2 = pretrained_weights.WeightFile("resnet18-v2.pth", "https://example/resnet18-v2.pth", "IMAGENET1K_V2")
    real = pretrained_weights.weight_files
    monkeypatch.setattr(pretrained_weights, "weight_files", lambda arch: [*real(arch), v2])
    state = tiny_checkpoint(hub / v2.name, seed=3)
    with pytest.warns(UserWarning, match="IMAGENET1K_V2"):
        model = resnet18(pretrained=True, width=4)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_missing_weights_say_which_file_to_get_and_where(hub):
    with pytest.raises(FileNotFoundError) as info:
        resnet_dilated("resnet50")  # LibMTL's default: pretrained=True
    message = str(info.value)
    assert "Download https://download.pytorch.org/models/resnet50-19c8e357.pth" in message
    assert os.path.join(str(hub), "resnet50-19c8e357.pth") in message
    for name in ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "TORCH_HOME"):
        assert name in message
    with pytest.raises(FileNotFoundError, match="wide_resnet50_2-95faca4d.pth"):
        ours.wide_resnet50_2(pretrained=True)


def test_a_wrong_checkpoint_is_a_clear_error(hub):
    tiny_checkpoint(hub / "resnet34-333f7ec4.pth", seed=0)  # a ResNet-18 under ResNet-34's name
    with pytest.raises(ValueError, match="not a torchvision resnet34 state_dict"):
        ours.resnet34(pretrained=True, width=4)


@pytest.mark.parametrize("depth", [18, 50])
def test_our_dilated_encoder_is_libmtl_s_dilated_resnet(depth):
    with torch.device("meta"):
        encoder, dilated = resnet_encoder(depth, dilated=True), resnet_dilated(f"resnet{depth}", pretrained=False)
    assert conv_layout(encoder) == conv_layout(dilated)
    assert list(encoder.state_dict()) == list(dilated.state_dict())


def test_nostride_dilate_matches_libmtl_s_on_every_kind_of_conv(libmtl_model):
    from LibMTL.model.resnet_dilated import ResnetDilated as TheirResnetDilated

    mine = resnet_dilated("resnet18", pretrained=False)
    theirs = TheirResnetDilated.__new__(TheirResnetDilated)  # only its method is needed
    for stride in (1, 2):
        for kernel in (1, 3):
            for rate in (2, 4):
                a, b = (nn.Conv2d(2, 2, kernel, stride=stride, padding=kernel // 2) for _ in range(2))
                mine._nostride_dilate(a, rate)
                theirs._nostride_dilate(b, rate)
                assert (a.stride, a.dilation, a.padding) == (b.stride, b.dilation, b.padding), (stride, kernel, rate)
