"""Backbones: plain and dilated ResNet encoders (torchvision-based), SegNet encoder/decoders."""
from LibMTL_rgb.model.resnet import ResNetEncoder, pretrained_weight_files, resnet_encoder, resnet_stages
from LibMTL_rgb.model.segnet import SegNetDecoder, SegNetEncoder, segnet_model

__all__ = ["ResNetEncoder", "resnet_encoder", "resnet_stages", "pretrained_weight_files",
           "SegNetEncoder", "SegNetDecoder", "segnet_model"]
