"""HPS: hard parameter sharing — one shared encoder, one decoder per task."""
from __future__ import annotations

from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.registry import ARCHITECTURES


@ARCHITECTURES.register
class HPS(AbsArchitecture):
    """Hard parameter sharing (Caruana, 1993). Shared parameters: the whole encoder."""

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self.encoder = self.encoder_class()
