"""Stage-by-stage access to ResNet-like encoders (MTAN, Cross_stitch, PLE, LTB)."""
from __future__ import annotations

from typing import Any, Optional

import torch.nn as nn

#: The attributes of a torchvision-style ResNet that :func:`resnet_stages` reads.
RESNET_ATTRIBUTES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


#: The attribute of LibMTL's *wrapper encoder* (its Office-31 pattern) that holds the ResNet: the
#: wrapper's forward runs ``self.resnet_network(inputs)`` and then a head of its own.
WRAPPED_NETWORK = "resnet_network"


def wrapped_network(encoder: nn.Module) -> Optional[nn.Module]:
    """The ResNet inside a LibMTL wrapper encoder (``encoder.resnet_network``), or ``None`` when
    ``encoder`` runs stage by stage itself (it has ``stages`` or the ResNet attributes)."""
    if getattr(encoder, "stages", None) is not None or all(hasattr(encoder, n) for n in RESNET_ATTRIBUTES):
        return None
    network = getattr(encoder, WRAPPED_NETWORK, None)
    return network if isinstance(network, nn.Module) else None


class ComputedFeature(nn.Module):
    """Stands in for a wrapper encoder's ``resnet_network`` once an architecture runs that
    network's stages itself: its forward ignores the input and returns ``feature``, the network's
    output that the architecture computed (e.g. one task's attended feature in MTAN), so the
    wrapper's own head runs on it. The network stays a submodule (``network``): its parameters
    stay in the model."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.feature: Optional[Any] = None

    def forward(self, inputs: Any) -> Any:
        if self.feature is None:
            raise RuntimeError("the architecture runs this network stage by stage; call the architecture, "
                               "not its encoder")
        return self.feature


def encoder_stages(encoder: nn.Module, arch: str, stem_apart: bool = False) -> list[nn.Module]:
    """The encoder's stages, in order: ``encoder.stages`` (e.g. ``resnet_encoder``), else the
    stages of a torchvision-style ResNet (``conv1`` ... ``layer4``).

    ``stem_apart`` (PLE, LTB: LibMTL's five levels): a ResNet's stem is a stage of its own
    (:func:`~LibMTL_rgb.model.resnet.resnet_stages`), whether or not the encoder has ``stages``;
    an encoder without ResNet attributes (e.g. SegNet) gives its ``stages`` as they are.

    Raises ``TypeError`` when the encoder has neither, and ``ValueError`` when some of its
    parameters are in no stage (the architecture runs only the stages, so they would be unused).
    """
    has_resnet_attributes = all(hasattr(encoder, name) for name in RESNET_ATTRIBUTES)
    stages = None if stem_apart and has_resnet_attributes else getattr(encoder, "stages", None)
    if stages is None:
        missing = [name for name in RESNET_ATTRIBUTES if not hasattr(encoder, name)]
        if missing:
            raise TypeError(
                f"{arch} needs a ResNet-like encoder that it can run stage by stage: encoder_class() must "
                f"return a module with a `stages` attribute (e.g. LibMTL_rgb.model.resnet_encoder) or the "
                f"torchvision ResNet attributes {', '.join(RESNET_ATTRIBUTES)}; {type(encoder).__name__} has no "
                f"`stages` and lacks {', '.join(missing)}"
                + (f" (a LibMTL wrapper encoder holding `{WRAPPED_NETWORK}`: as in LibMTL, only MTAN accepts it)"
                   if hasattr(encoder, WRAPPED_NETWORK) else "")
            )
        from LibMTL_rgb.model.resnet import resnet_stages  # torchvision: only for such encoders

        stages = resnet_stages(encoder, stem_apart=stem_apart)
    stages = list(stages)
    if not stages:
        raise ValueError(f"{arch}: the encoder has no stages")
    in_stages = {id(p) for stage in stages for p in stage.parameters()}
    outside = [name for name, p in encoder.named_parameters() if id(p) not in in_stages]
    if outside:
        raise ValueError(
            f"{arch} runs the encoder stage by stage, but its parameters {outside[:4]} belong to no stage "
            "(a classifier head?); use an encoder whose forward is its stages in order, such as "
            "LibMTL_rgb.model.resnet_encoder"
        )
    return stages


def split_last(stage: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(body, last)`` with ``last(body(x)) == stage(x)``: an ``nn.Sequential`` of two or more
    children splits before its last child (for a ResNet stage: before its last block); any other
    stage is all body."""
    if isinstance(stage, nn.Sequential) and len(stage) >= 2:
        return stage[:-1], stage[-1]
    return stage, nn.Identity()


def build_task_columns(arch: nn.Module, name: str, why: str, stem_apart: bool = False) -> list[list[nn.Module]]:
    """One copy of the encoder per task (a *column*), as ``arch.encoder`` (a ``ModuleDict`` by
    task), and each column's stage views in task order (kept out of the module tree; ``stem_apart``
    as :func:`encoder_stages`). ``multi_input=True`` is refused with ``why`` (the columns read one
    shared input)."""
    if arch.multi_input:
        raise ValueError(f"{name} {why}, so all tasks must read the same input: multi_input=True is not "
                         "supported (use HPS, MTAN, MMoE, CGC, PLE or DSelect_k)")
    arch.encoder = nn.ModuleDict({task: arch.encoder_class() for task in arch.task_name})
    return [encoder_stages(arch.encoder[task], name, stem_apart) for task in arch.task_name]


def decode_columns(arch: nn.Module, features: list, tasks) -> dict:
    """Each of ``tasks``' decoder on its own column's output (``features`` in task order)."""
    out = {}
    for task in tasks:
        rep = arch._prepare_rep(features[arch.task_name.index(task)], task, same_rep=False)
        out[task] = arch.decoders[task](rep)
    return out
