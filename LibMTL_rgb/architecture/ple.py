"""PLE: Progressive Layered Extraction."""
from __future__ import annotations

from LibMTL_rgb.architecture.cgc import CGC
from LibMTL_rgb.registry import ARCHITECTURES


@ARCHITECTURES.register
class PLE(CGC):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): CGC stacked over the
    encoder's stages.

    Every expert is an encoder split into its stages (ResNet: LibMTL's five extraction levels,
    the stem, layer1, layer2, layer3, layer4). At level ``l`` each task applies the level-``l``
    parts of the shared experts and of its own experts to its current representation and mixes
    them with its gate on that representation, flattened. As in LibMTL, the shared experts run on each task's
    representation and there is no separate shared gate (the paper's shared path), so tasks
    interact only through the shared experts' weights.

    Options: ``img_size`` (required: sizes the gates of every stage, traced at construction),
    ``num_experts`` (1 + T numbers, as CGC), ``task_stages`` (optional: extraction levels only on
    the encoder's last N stages, after a shared trunk of the others run once; default every stage).
    Shared parameters: the shared experts (all their stages) and the trunk. Task parameters: task experts, gates.
    Requires a ResNet-like encoder (``stages``, or torchvision's ``conv1`` ... ``layer4``);
    works with ``rep_grad`` and ``multi_input``.
    """

    multi_level = True
