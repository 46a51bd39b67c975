"""MMoE: Multi-gate Mixture-of-Experts."""
from __future__ import annotations

from LibMTL_rgb.architecture._common import architecture_name
from LibMTL_rgb.architecture._experts import GatedExperts, single_count
from LibMTL_rgb.registry import ARCHITECTURES


@ARCHITECTURES.register
class MMoE(GatedExperts):
    """Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task
    Learning with Multi-gate Mixture-of-Experts", KDD 2018).

    ``num_experts[0]`` copies of the encoder are shared by all tasks; each task mixes their
    outputs with its own softmax gate on the flattened input, ``rep_t = Σ_e g_t(x)_e f_e(x)``.

    Options (``arch_args`` / flags): ``img_size`` (required: sizes the gates),
    ``num_experts`` (one number, default 2).
    Shared parameters: the experts. Task parameters: the gates (and decoders).
    Works with any encoder whose output shape does not depend on the expert, with
    ``rep_grad`` and with ``multi_input``.
    """

    def _expert_counts(self, num_experts):
        return single_count(architecture_name(self), num_experts, self.task_name)
