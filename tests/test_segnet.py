"""SegNet backbone: VGG16 layout, stage-by-stage shapes, decoder output sizes and unit normals,
MTAN / HPS on it (gradients reach every shared parameter), and the --backbone flag."""
import argparse

import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.architecture._stages import encoder_stages
from LibMTL_rgb.model import SegNetDecoder, SegNetEncoder, segnet_model
from LibMTL_rgb.model.aspp import DeepLabHead, add_deeplab_args, deeplab_model
from LibMTL_rgb.trainer import build_mtl_model

NYU_OUTPUTS = {"segmentation": 13, "depth": 1, "normal": 3}


def conv_layers(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_width_64_is_vgg16_bn():
    encoder = SegNetEncoder()
    assert encoder.stage_channels == [64, 128, 256, 512, 512] and encoder.out_channels == 512
    assert [len(conv_layers(stage)) for stage in encoder.stages] == [2, 2, 3, 3, 3]
    assert all(conv.kernel_size == (3, 3) for conv in conv_layers(encoder))
    assert [sum(isinstance(m, nn.BatchNorm2d) for m in stage.modules()) for stage in encoder.stages] == [2, 2, 3, 3, 3]
    # max-pooling opens every block but the first
    assert [isinstance(stage[0], nn.MaxPool2d) for stage in encoder.stages] == [False, True, True, True, True]


@pytest.mark.parametrize("size", [(32, 48), (45, 61)])
def test_stages_are_the_forward_pass_and_halve_the_resolution(size):
    torch.manual_seed(0)
    encoder = SegNetEncoder(width=4).eval()
    x = torch.randn(2, 3, *size)
    h, shapes = x, []
    for stage in encoder.stages:
        h = stage(h)
        shapes.append(tuple(h.shape[1:]))
    assert torch.equal(h, encoder(x))
    assert encoder.stage_channels == [4, 8, 16, 32, 32] and encoder.output_stride == 16
    assert shapes == [(c, size[0] >> k, size[1] >> k) for k, c in enumerate(encoder.stage_channels)]
    assert encoder_stages(encoder, "MTAN") == list(encoder.stages)  # every parameter is in a stage


@pytest.mark.parametrize("size", [(32, 48), (45, 61)])
def test_decoders_predict_at_the_label_size_with_unit_normals(size):
    torch.manual_seed(0)
    encoder_class, decoders = segnet_model(NYU_OUTPUTS, size, unit_normal_tasks=["normal"], width=4)
    features = encoder_class()(torch.randn(2, 3, *size))
    out = {task: decoder(features) for task, decoder in decoders.items()}
    assert {task: tuple(o.shape) for task, o in out.items()} == {t: (2, c, *size) for t, c in NYU_OUTPUTS.items()}
    torch.testing.assert_close(out["normal"].norm(dim=1), torch.ones(2, *size))
    assert not torch.allclose(out["depth"].abs(), torch.ones_like(out["depth"]))  # only normals are scaled
    # the decoder mirrors the encoder: as many 3x3 convs, plus the 1x1 output
    assert len(conv_layers(decoders["depth"])) == len(conv_layers(encoder_class())) + 1


def test_decoder_without_output_size_doubles_per_block():
    encoder = SegNetEncoder(width=2)
    decoder = SegNetDecoder(encoder, 2)
    assert decoder(encoder(torch.randn(1, 3, 32, 16))).shape == (1, 2, 32, 16)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="at least 16×16"):
        SegNetEncoder(width=2)(torch.randn(1, 3, 8, 32))
    with pytest.raises(ValueError, match="width must be >= 1"):
        SegNetEncoder(width=0)
    with pytest.raises(ValueError, match=r"unit_normal_tasks \['normals'\]"):
        segnet_model(NYU_OUTPUTS, unit_normal_tasks=["normals"], width=2)


@pytest.mark.parametrize("arch", ["MTAN", "HPS"])
def test_architectures_run_on_segnet_and_every_shared_parameter_learns(arch):
    torch.manual_seed(0)
    size = (16, 32)
    encoder_class, decoders = segnet_model(NYU_OUTPUTS, size, unit_normal_tasks=["normal"], width=2)
    model = build_mtl_model("EW", arch, list(NYU_OUTPUTS), encoder_class, decoders, False, False, "cpu",
                            {"img_size": [3, *size]})
    out = model(torch.randn(2, 3, *size))
    assert {t: tuple(o.shape) for t, o in out.items()} == {t: (2, c, *size) for t, c in NYU_OUTPUTS.items()}
    if arch == "MTAN":  # one mask per task and SegNet block, a transition between blocks
        assert [len(model.attention[t]) for t in NYU_OUTPUTS] == [5, 5, 5] and len(model.transitions) == 4
    model.backward(torch.stack([o.pow(2).mean() for o in out.values()]))
    shared = list(model.get_share_params())
    assert shared and all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared)


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_deeplab_args(parser)
    return parser.parse_args(list(flags))


def test_backbone_flag_picks_the_model():
    assert parse().backbone == "resnet"
    encoder_class, decoders = deeplab_model(parse("--backbone", "segnet", "--backbone_width", "2"), NYU_OUTPUTS, (16, 16))
    assert isinstance(encoder_class(), SegNetEncoder) and all(isinstance(d, SegNetDecoder) for d in decoders.values())
    encoder_class, decoders = deeplab_model(
        parse("--backbone_depth", "18", "--backbone_width", "2", "--no_pretrained"), NYU_OUTPUTS, (16, 16))
    assert isinstance(decoders["depth"], DeepLabHead)
    with pytest.raises(SystemExit, match="segnet trains from scratch"):
        deeplab_model(parse("--backbone", "segnet", "--weights_path", "w.pth"), NYU_OUTPUTS, (16, 16))
    with pytest.raises(SystemExit, match="width must be >= 1"):
        deeplab_model(parse("--backbone", "segnet", "--backbone_width", "0"), NYU_OUTPUTS, (16, 16))
