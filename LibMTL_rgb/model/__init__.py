"""Backbones: plain and dilated ResNet encoders (torchvision-based), SegNet encoder/decoders, and
LibMTL's model factories under LibMTL's names (``resnet18`` ... ``wide_resnet101_2``,
``resnet_dilated``, ``ResnetDilated``)."""
from LibMTL_rgb.model.resnet import (HeadlessResNet, ResNetEncoder, pretrained_weight_files, resnet18, resnet34, resnet50,
                                     resnet101, resnet152, resnet_encoder, resnet_stages, resnext50_32x4d,
                                     resnext101_32x8d, wide_resnet50_2, wide_resnet101_2)
from LibMTL_rgb.model.resnet_dilated import ResnetDilated, resnet_dilated
from LibMTL_rgb.model.segnet import SegNetDecoder, SegNetEncoder, segnet_model

#: LibMTL's ``LibMTL.model.__all__``, same names and signatures.
LIBMTL_MODEL_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                      "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "resnet_dilated"]

__all__ = ["ResNetEncoder", "resnet_encoder", "resnet_stages", "pretrained_weight_files",
           "SegNetEncoder", "SegNetDecoder", "segnet_model",
           "HeadlessResNet", "ResnetDilated", *LIBMTL_MODEL_NAMES]
