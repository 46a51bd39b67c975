"""ResNet encoders: plain vs dilated output stride, stages, width, local pretrained weights."""
import os

import pytest
import torch
import torchvision

from LibMTL_rgb.model import pretrained_weight_files, resnet_encoder, resnet_stages



@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("dilated, stride", [(False, 32), (True, 8)])
def test_output_stride_and_stages(depth, dilated, stride):
    torch.manual_seed(0)
    encoder = resnet_encoder(depth, dilated=dilated, width=4)
    x = torch.randn(2, 3, 64, 64)
    out = encoder(x)
    expansion = 4 if depth == 50 else 1
    assert encoder.stage_channels == [4 * expansion, 8 * expansion, 16 * expansion, 32 * expansion]
    assert out.shape == (2, encoder.out_channels, 64 // stride, 64 // stride)
    assert encoder.output_stride == stride
    h = x
    sizes = []
    for stage in encoder.stages:
        h = stage(h)
        sizes.append(h.shape[-1])
    assert torch.equal(h, out)  # the stages in order are the forward pass
    assert sizes == ([16, 8, 4, 2] if not dilated else [16, 8, 8, 8])
    # LibMTL's five levels (PLE, LTB): the stem apart, then layer1 ... layer4, the same forward pass
    h = x
    levels = resnet_stages(encoder, stem_apart=True)
    for level in levels:
        h = level(h)
    assert len(levels) == 5 and list(levels[0]) == [encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool]
    assert torch.equal(h, out)


def test_dilated_basic_blocks_use_dilation_not_stride():
    encoder = resnet_encoder(18, dilated=True, width=4)
    first, second = encoder.layer4[0], encoder.layer4[1]
    assert first.conv1.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    assert first.conv1.dilation == (2, 2) and second.conv1.dilation == (4, 4) and second.conv2.padding == (4, 4)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A fresh torchvision ResNet-18 (eval mode, no head) and its state_dict saved to disk."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("weights") / "my_resnet18.pth"
    torch.save(reference.state_dict(), path)
    reference.fc = torch.nn.Identity()
    reference.avgpool = torch.nn.Identity()
    return reference.eval(), path


def test_loads_a_local_weights_file(resnet18_file):
    reference, path = resnet18_file
    encoder = resnet_encoder(18, weights_path=str(path)).eval()  # strict load: torchvision's names
    x = torch.randn(1, 3, 64, 64)
    assert encoder.out_channels == 512
    assert torch.allclose(encoder(x).flatten(1), reference(x), atol=1e-6)


def test_loads_from_the_torch_hub_cache(resnet18_file, tmp_path, monkeypatch):
    reference, path = resnet18_file
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    os.makedirs(tmp_path / "checkpoints")
    os.symlink(path, tmp_path / "checkpoints" / pretrained_weight_files(18)[0][0])
    encoder = resnet_encoder(18, dilated=True, pretrained=True)
    assert torch.equal(encoder.conv1.weight, reference.conv1.weight)


def test_missing_pretrained_weights_name_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        resnet_encoder(50, dilated=True, pretrained=True)
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert str(tmp_path / "checkpoints") in message
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resnet_encoder(18, weights_path=str(tmp_path / "nowhere.pth"))


def test_wrong_checkpoint_and_bad_options_are_clear_errors(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(ValueError, match="not a torchvision resnet34 state_dict"):
        resnet_encoder(34, weights_path=str(path))  # ResNet-18 weights
    with pytest.raises(ValueError, match="depth must be one of"):
        resnet_encoder(20)
    with pytest.raises(ValueError, match="width 64"):
        resnet_encoder(18, width=8, weights_path=str(path))
