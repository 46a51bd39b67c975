"""Backbones: plain and dilated ResNet encoders (torchvision-based)."""
from LibMTL_rgb.model.resnet import ResNetEncoder, pretrained_weight_files, resnet_encoder, resnet_stages

__all__ = ["ResNetEncoder", "resnet_encoder", "resnet_stages", "pretrained_weight_files"]
