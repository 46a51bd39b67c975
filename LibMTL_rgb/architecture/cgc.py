"""CGC: Customized Gate Control."""
from __future__ import annotations

from LibMTL_rgb.architecture._common import TASK_STAGES, architecture_name
from LibMTL_rgb.architecture._experts import GatedExperts, shared_and_task_counts
from LibMTL_rgb.registry import ARCHITECTURES


@ARCHITECTURES.register
class CGC(GatedExperts):
    """Customized Gate Control (Tang et al., "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020).

    ``num_experts = [shared, n_task1, n_task2, ...]`` copies of the encoder: the shared ones
    serve every task, the others only their task; each task's softmax gate on the flattened
    input mixes the shared experts and its own.

    Options: ``img_size`` (required: sizes the gates), ``num_experts`` (1 + T numbers; default 1 shared and 1 per task),
    ``task_stages`` (optional: the experts are only the encoder's last N stages, after a shared trunk of the
    others run once, whose output the gates read; default the whole encoder, LibMTL's).
    Shared parameters: the shared experts (and the trunk). Task parameters: task experts and gates.
    Works with ``rep_grad`` and with ``multi_input``.
    """

    hyperparameters = GatedExperts.hyperparameters + (TASK_STAGES,)

    def _expert_counts(self, num_experts):
        return shared_and_task_counts(architecture_name(self), num_experts, self.task_name)
