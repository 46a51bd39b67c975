"""Dense-prediction metrics, losses and augmentation against hand-computed values."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb_examples.dense_augment import CLASS_MAP, DEPTH, DISPARITY, NORMAL, OFFSET_YX, DenseAugmentation, resize_target
from LibMTL_rgb_examples.dense_metrics import (DepthLoss, DepthMetric, DisparityMSEMetric, NormalLoss, NormalMetric, OffsetL1Metric,
                                      OffsetLoss, SegLoss, SegMetric)
from LibMTL_rgb.model.aspp import AtrousConv2d, DeepLabHead


def one_hot_logits(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits [1, C, H, W] whose argmax is ``classes`` [H, W]."""
    return torch.nn.functional.one_hot(classes, num_classes).permute(2, 0, 1)[None].float()


# ------------------------------------------------------------------ segmentation
def test_seg_metric_ignores_pixels_and_absent_classes():
    gt = torch.tensor([[[0, 1], [1, -1]]])
    pred = one_hot_logits(torch.tensor([[0, 1], [0, 1]]), 3)  # class 2: never seen
    metric = SegMetric(3)
    metric.update_fun(pred, gt)
    miou, pix_acc = metric.score_fun()
    # class 0: hit 1, union 2 (gt 1 + pred 2 - 1); class 1: hit 1, union 2; class 2 absent
    assert miou == pytest.approx(0.5)
    assert pix_acc == pytest.approx(2 / 3)


def test_seg_metric_accumulates_batches_like_one_batch():
    torch.manual_seed(0)
    logits, gt = torch.randn(4, 5, 6, 7), torch.randint(-1, 5, (4, 6, 7))
    whole, parts = SegMetric(5), SegMetric(5)
    whole.update_fun(logits, gt)
    parts.update_fun(logits[:1], gt[:1])
    parts.update_fun(logits[1:], gt[1:])
    assert parts.score_fun() == pytest.approx(whole.score_fun())
    parts.reinit()
    assert all(math.isnan(v) for v in parts.score_fun())


def test_seg_metric_without_pixel_accuracy_reports_miou_only():
    metric = SegMetric(2, pixel_accuracy=False)
    metric.update_fun(one_hot_logits(torch.tensor([[0, 1]]), 2), torch.tensor([[[0, 0]]]))
    assert metric.metric_names == ["mIoU"]
    assert metric.score_fun() == pytest.approx([0.25])  # class 0: 1/2, class 1: 0/1


def test_seg_loss_ignores_minus_one_and_survives_all_ignored():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    gt = torch.tensor([[[0, 2], [-1, 1]]])
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[gt >= 0], gt[gt >= 0])
    assert SegLoss().compute_loss(logits, gt).item() == pytest.approx(expected.item())
    empty = SegLoss().compute_loss(logits, torch.full((1, 2, 2), -1))
    empty.backward()
    assert empty.item() == 0.0 and logits.grad is not None


# ------------------------------------------------------------------------- depth
def test_depth_metric_and_loss_use_valid_pixels_only():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    gt = torch.tensor([2.0, 0.0, 1.0, 4.0]).view(1, 1, 2, 2)  # 0: no measurement
    metric = DepthMetric()
    metric.update_fun(pred, gt)
    abs_err, rel_err = metric.score_fun()
    assert abs_err == pytest.approx((1 + 2 + 0) / 3)
    assert rel_err == pytest.approx((1 / 2 + 2 / 1 + 0) / 3)
    assert DepthLoss().compute_loss(pred, gt).item() == pytest.approx(1.0)


def test_depth_metric_pools_pixels_over_batches():
    metric = DepthMetric()
    metric.update_fun(torch.ones(1, 1, 1, 2), torch.tensor([[[[2.0, 0.0]]]]))  # one valid pixel, error 1
    metric.update_fun(torch.ones(1, 1, 1, 2), torch.tensor([[[[4.0, 4.0]]]]))  # two valid pixels, error 3
    assert metric.score_fun()[0] == pytest.approx((1 + 3 + 3) / 3)


def test_disparity_mse_and_offset_l1():
    mse = DisparityMSEMetric()
    mse.update_fun(torch.tensor([1.0, 5.0, 2.0]).view(1, 1, 1, 3), torch.tensor([3.0, 0.0, 2.5]).view(1, 1, 1, 3))
    assert mse.score_fun() == pytest.approx([(4 + 0.25) / 2])

    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    gt = torch.tensor([[0.0, float("nan")], [1.0, float("nan")]]).view(1, 2, 1, 2)
    l1 = OffsetL1Metric()
    l1.update_fun(pred, gt)
    assert l1.score_fun() == pytest.approx([(1 + 2) / 2])
    pred.requires_grad_(True)
    loss = OffsetLoss().compute_loss(pred, gt)
    loss.backward()
    assert loss.item() == pytest.approx(1.5)
    assert torch.equal(pred.grad.view(2, 2), torch.tensor([[0.5, 0.0], [0.5, 0.0]]))  # NaN entries: no gradient


def test_losses_are_zero_without_valid_pixels():
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = DepthLoss().compute_loss(pred, torch.zeros(1, 1, 2, 2))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


# ----------------------------------------------------------------------- normals
def _normals_at_angles(degrees):
    """Unit normals at the given angles from (0, 0, 1) in the x-z plane, as [1, 3, 1, N]."""
    radians = np.deg2rad(degrees)
    vectors = np.stack([np.sin(radians), np.zeros_like(radians), np.cos(radians)])
    return torch.tensor(vectors, dtype=torch.float64).view(1, 3, 1, -1)


def test_normal_metric_angles_and_thresholds():
    gt = _normals_at_angles([0, 0, 0, 0, 0])
    gt[..., -1] = 0  # the last pixel has no ground truth
    pred = 3.0 * _normals_at_angles([0, 10, 20, 45, 90])  # not unit: the metric normalises
    metric = NormalMetric()
    metric.update_fun(pred, gt)
    mean, median, within_11, within_22, within_30 = metric.score_fun()
    assert mean == pytest.approx((0 + 10 + 20 + 45) / 4)
    assert median == pytest.approx(15.0)
    assert (within_11, within_22, within_30) == pytest.approx((0.5, 0.75, 0.75))


def test_normal_loss_is_one_minus_cosine_on_valid_pixels():
    gt = _normals_at_angles([0, 0, 0]).float()
    gt[..., 2] = 0
    pred = 2.0 * _normals_at_angles([0, 60, 180]).float()
    assert NormalLoss().compute_loss(pred, gt).item() == pytest.approx(1 - (1 + 0.5) / 2)


# ------------------------------------------------------------------ augmentation
def test_scale_crop_treats_image_and_labels_alike():
    positions = torch.arange(64).view(8, 8)
    image = positions.float().expand(3, 8, 8)
    targets = {"seg": positions.clone(), "depth": torch.full((1, 8, 8), 4.0), "disparity": torch.full((1, 8, 8), 4.0)}
    kinds = {"seg": CLASS_MAP, "depth": DEPTH, "disparity": DISPARITY}
    augment = DenseAugmentation(scales=(2.0,), flip=False, generator=torch.Generator().manual_seed(3))
    out_image, out = augment(image, targets, kinds)
    seg = out["seg"]
    assert seg.dtype == torch.int64 and seg.shape == (8, 8)
    top, left = divmod(int(seg[0, 0]), 8)
    assert torch.equal(seg[::2, ::2], positions[top:top + 4, left:left + 4])  # a 4×4 window, zoomed ×2
    assert out_image[0, 0, 0] == seg[0, 0] and out_image[0, -1, -1] == seg[-1, -1]  # same window as the image
    assert torch.all(out["depth"] == 2.0) and torch.all(out["disparity"] == 8.0)


def test_flip_negates_x_of_normals_and_offsets():
    normal = torch.zeros(3, 2, 2)
    normal[0, :, 0], normal[2] = 0.6, 0.8
    offset = torch.tensor([[[1.0, float("nan")], [2.0, 3.0]], [[5.0, float("nan")], [6.0, 7.0]]])
    augment = DenseAugmentation(scales=(1.0,), flip=True, generator=torch.Generator().manual_seed(0))
    while True:  # draw until the flip happens (probability 1/2 per call)
        _, out = augment(torch.zeros(3, 2, 2), {"normal": normal, "offset": offset}, {"normal": NORMAL, "offset": OFFSET_YX})
        if out["normal"][0, 0, 1] != 0:
            break
    assert torch.equal(out["normal"][0, :, 1], torch.tensor([-0.6, -0.6]))
    assert torch.equal(out["normal"][2], normal[2])
    assert torch.equal(out["offset"][0, 1], torch.tensor([3.0, 2.0]))  # dy: moved, same sign
    assert torch.equal(out["offset"][1, 1], torch.tensor([-7.0, -6.0]))  # dx: moved, negated
    assert torch.isnan(out["offset"][:, 0, 0]).all()


def test_resize_target_keeps_nan_and_class_ids():
    target = torch.tensor([[0, -1], [5, 2]])
    assert torch.equal(resize_target(target, (4, 4))[::2, ::2], target)
    offsets = torch.tensor([[[float("nan"), 1.0]]])
    assert torch.isnan(resize_target(offsets, (2, 4))[0, :, :2]).all()


# ------------------------------------------------------------------------- heads
def test_deeplab_head_upsamples_and_unit_normalises():
    head = DeepLabHead(8, 3, output_size=(12, 20), unit_normal=True, channels=8).eval()
    out = head(torch.randn(2, 8, 3, 5))
    assert out.shape == (2, 3, 12, 20)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 12, 20), atol=1e-5)


@pytest.mark.parametrize("rate, size", [(1, (5, 7)), (12, (16, 32)), (24, (16, 32)), (36, (16, 32)), (36, (36, 48))])
def test_atrous_conv_skips_padding_taps_without_changing_results(rate, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=rate, dilation=rate).double()
    atrous = AtrousConv2d.sharing_parameters(copy.deepcopy(conv))
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, *size, dtype=torch.float64)
    ref = torch.autograd.grad(conv(x), (x, conv.weight, conv.bias), g)
    got = torch.autograd.grad(atrous(x), (x, atrous.weight, atrous.bias), g)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
