"""Mixture-of-experts machinery shared by MMoE, CGC, PLE and DSelect_k.

One *expert* is an ``encoder_class()`` instance (for PLE: its stages, one per level; a ResNet's
five levels are LibMTL's: the stem, then layer1 ... layer4). At every
level each task mixes the outputs of the shared experts and of its own experts with a gate that
reads the task's input to that level, flattened (LibMTL's design, hence ``--img_size``):

    rep_t^(l+1) = Σ_e gate_t^l(rep_t^l)_e · expert_e^l(rep_t^l),   rep_t^0 = inputs.

Only the shared experts receive gradients from more than one task, so they are exactly the
shared parameters (``get_share_params``); task-specific experts and gates are task parameters.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.architecture._common import IMG_SIZE, architecture_name, first_task_stage, flat_size, probing, require_img_size, selected_tasks
from LibMTL_rgb.architecture._stages import encoder_stages
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.registry import Hyperparameter

#: Shared experts of MMoE / DSelect_k when ``num_experts`` is not given (DSelect_k's default
#: k = 2 experts are then all selected; any larger count makes the selection sparse).
DEFAULT_SHARED_EXPERTS = 2
#: CGC / PLE without ``num_experts``: one shared expert and one expert per task (LibMTL's examples).
DEFAULT_CGC_EXPERTS = (1, 1)

NUM_EXPERTS = Hyperparameter(
    "num_experts", None,
    "number of experts (each a copy of the encoder): MMoE / DSelect_k: one number, the shared experts "
    f"(default {DEFAULT_SHARED_EXPERTS}); CGC / PLE: the shared experts followed by one number per task, "
    "e.g. 1 1 1 1 for 3 tasks (default: 1 shared and 1 per task)",
    type=int, nargs="+", minimum=1,
)


class SoftmaxGate(nn.Module):
    """``softmax(W flatten(x) + b)``: one weight per expert and sample, ``[B, num_experts]``."""

    def __init__(self, in_features: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.linear(flatten_for_gate(x, self.linear.in_features)), dim=-1)


def flatten_for_gate(x: Tensor, in_features: int) -> Tensor:
    """``x`` as ``[B, in_features]``, or a ``ValueError`` pointing at ``--img_size``."""
    flat = torch.flatten(x, start_dim=1)
    if flat.shape[1] != in_features:
        raise ValueError(
            f"a gate sized for {in_features} features per sample got input of shape {tuple(x.shape[1:])} "
            f"({flat.shape[1]} features): set img_size (--img_size) to the size of one input sample"
        )
    return flat


def mix(expert_outputs: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``Σ_e weights[:, e] · expert_outputs[e]`` per sample (outputs ``[B, ...]``, weights ``[B, E]``)."""
    return torch.einsum("eb...,be->b...", torch.stack(list(expert_outputs)), weights)


class GatedExperts(AbsArchitecture):
    """Base of the gated mixture-of-experts architectures (not registered itself).

    Subclasses choose how ``num_experts`` reads (``_expert_counts``), the gate (``_make_gate``)
    and whether experts are split into levels (``multi_level``: PLE).
    """

    hyperparameters: tuple[Hyperparameter, ...] = (IMG_SIZE, NUM_EXPERTS)
    #: Split every expert into its encoder's stages and gate between them (PLE).
    multi_level: bool = False

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        arch = architecture_name(self)
        self.img_size = require_img_size(kwargs.get("img_size"), arch)
        shared, specific = self._expert_counts(kwargs.get("num_experts"))
        self.num_experts = {"share": shared, **specific}
        self.task_stages = self._effective_task_stages(kwargs.get("task_stages"))
        #: The encoder's first stages, run once before the experts (``task_stages``), or None.
        self.trunk: Optional[nn.Sequential] = None
        if self.task_stages is not None:
            stages = self._stages(self.encoder_class())
            self.trunk = nn.Sequential(*stages[:len(stages) - self.task_stages])
        self.experts_shared = nn.ModuleList([self._make_expert() for _ in range(shared)])
        self.experts_specific = nn.ModuleDict(
            {task: nn.ModuleList([self._make_expert() for _ in range(count)]) for task, count in specific.items()}
        )
        self.num_levels = len(self.experts_shared[0])
        sizes = self._gate_input_sizes()
        self.gate_specific = nn.ModuleDict(
            {task: nn.ModuleList([self._make_gate(size, shared + specific[task]) for size in sizes]) for task in self.task_name}
        )

    # ------------------------------------------------------------ building
    def _expert_counts(self, num_experts: Optional[Sequence[int]]) -> tuple[int, dict[str, int]]:
        """``(shared experts, {task: task-specific experts})`` from ``num_experts``."""
        raise NotImplementedError

    def _make_gate(self, in_features: int, num_experts: int) -> nn.Module:
        return SoftmaxGate(in_features, num_experts)

    def _effective_task_stages(self, task_stages: Optional[int]) -> Optional[int]:
        """``task_stages``, or None when it covers every stage of the encoder (LibMTL's model)."""
        if task_stages is None:
            return None
        with torch.random.fork_rng(devices=[]):  # counting the stages leaves the random state as it was
            count = len(self._stages(self.encoder_class()))
        return None if first_task_stage(count, task_stages) == 0 else int(task_stages)

    def _stages(self, encoder: nn.Module) -> list[nn.Module]:
        return encoder_stages(encoder, architecture_name(self), stem_apart=True)

    def _make_expert(self) -> nn.ModuleList:
        """One expert as a list of levels: the whole encoder, or its stages (``multi_level``);
        with ``task_stages``, only its last stages (those the trunk leaves)."""
        encoder = self.encoder_class()
        if self.task_stages is not None:
            stages = self._stages(encoder)[-self.task_stages:]
            return nn.ModuleList(stages if self.multi_level else [nn.Sequential(*stages)])
        if not self.multi_level:
            return nn.ModuleList([encoder])
        return nn.ModuleList(self._stages(encoder))

    def _gate_input_sizes(self) -> list[int]:
        """Flattened per-sample size of every level's input, traced through the trunk and a shared expert."""
        expert = self.experts_shared[0]
        param = next(expert.parameters(), None)
        x = torch.zeros(2, *self.img_size, **({} if param is None else {"device": param.device, "dtype": param.dtype}))
        if self.trunk is not None:
            with probing(self.trunk):
                x = self.trunk(x)
        sizes = [flat_size(x.shape[1:])]
        with probing(expert):
            for level in expert[:-1]:
                x = level(x)
                sizes.append(flat_size(x.shape[1:]))
        return sizes

    # ------------------------------------------------------------ running
    def forward(self, inputs: Tensor, task_name: Optional[str] = None) -> dict[str, Tensor]:
        out = {}
        if self.trunk is not None:
            inputs = self.trunk(inputs)
        first_level = [expert[0](inputs) for expert in self.experts_shared]  # every task reads `inputs`
        for task in selected_tasks(self.task_name, task_name):
            rep = inputs
            for level in range(self.num_levels):
                shared = first_level if level == 0 else [expert[level](rep) for expert in self.experts_shared]
                own = [expert[level](rep) for expert in self.experts_specific[task]]
                rep = mix(shared + own, self.gate_specific[task][level](rep))
            rep = self._prepare_rep(rep, task, same_rep=False)
            out[task] = self.decoders[task](rep)
        return out

    def get_share_params(self):
        """The shared experts' parameters (and the trunk's, with ``task_stages``)."""
        if self.trunk is None:
            return self.experts_shared.parameters()
        return itertools.chain(self.trunk.parameters(), self.experts_shared.parameters())


def _check_counts(arch: str, counts: Sequence[int], shared: int) -> None:
    if shared < 1:
        raise ValueError(f"{arch} needs at least one shared expert (the first --num_experts value), got {shared}")
    if any(c < 0 for c in counts):
        raise ValueError(f"{arch}: expert counts must be >= 0, got {list(counts)}")


def single_count(arch: str, num_experts: Optional[Sequence[int]], task_name: Sequence[str]) -> tuple[int, dict[str, int]]:
    """MMoE / DSelect_k: ``num_experts`` is one number, the shared experts (default
    ``DEFAULT_SHARED_EXPERTS``); no task experts."""
    if num_experts is None:
        num_experts = [DEFAULT_SHARED_EXPERTS]
    if len(num_experts) != 1:
        raise ValueError(
            f"{arch} takes one --num_experts value (arch_args['num_experts'] = [n]), the number of shared "
            f"experts; got {num_experts}"
        )
    shared = int(num_experts[0])
    _check_counts(arch, [shared], shared)
    return shared, {task: 0 for task in task_name}


def shared_and_task_counts(
    arch: str, num_experts: Optional[Sequence[int]], task_name: Sequence[str]
) -> tuple[int, dict[str, int]]:
    """CGC / PLE: ``num_experts`` is the shared count followed by one count per task (default:
    ``DEFAULT_CGC_EXPERTS``, one shared expert and one per task). Extra values are ignored
    with a warning, as LibMTL ignores them; too few are an error."""
    if num_experts is None:
        shared, per_task = DEFAULT_CGC_EXPERTS
        num_experts = [shared] + [per_task] * len(task_name)
    if len(num_experts) < 1 + len(task_name):
        raise ValueError(
            f"{arch} takes 1 + {len(task_name)} --num_experts values: the shared experts, then one count per "
            f"task in the order {list(task_name)}; got {num_experts}"
        )
    if len(num_experts) > 1 + len(task_name):
        warnings.warn(f"{arch}: --num_experts {list(num_experts)} has more than 1 + {len(task_name)} values; "
                      f"the extra {list(num_experts[1 + len(task_name):])} are ignored (as LibMTL does)", stacklevel=2)
    counts = [int(n) for n in num_experts[:1 + len(task_name)]]
    _check_counts(arch, counts, counts[0])
    return counts[0], dict(zip(task_name, counts[1:]))
