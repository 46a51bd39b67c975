"""DSelect-k: differentiable top-k selection of experts."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.architecture._experts import flatten_for_gate
from LibMTL_rgb.architecture.mmoe import MMoE
from LibMTL_rgb.registry import ARCHITECTURES, Hyperparameter

DEFAULT_NUM_NONZEROS = 2
DEFAULT_KGAMMA = 1.0


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """The cubic smooth step of DSelect-k: 0 below ``-γ/2``, 1 above ``γ/2``,
    ``-2 t³/γ³ + 3 t/(2γ) + 1/2`` between (continuously differentiable)."""
    t = t.clamp(-gamma / 2, gamma / 2)
    return -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5


class DSelectKGate(nn.Module):
    """Per-sample DSelect-k gate: ``k`` selectors, each a soft binary code over the experts,
    combined by softmax weights; returns expert weights ``[B, num_experts]`` summing to 1."""

    def __init__(self, in_features: int, num_experts: int, num_nonzeros: int, gamma: float) -> None:
        super().__init__()
        self.num_nonzeros = num_nonzeros
        self.gamma = gamma
        self.num_bits = max(1, math.ceil(math.log2(num_experts)))
        codes = torch.arange(2**self.num_bits)
        bits = (codes.unsqueeze(1) >> torch.arange(self.num_bits)) & 1
        self.register_buffer("code_bits", bits.bool(), persistent=False)  # [2^m, m]
        # code c selects expert c mod E: every code is a real expert, so weights sum to 1.
        self.register_buffer("code_to_expert", nn.functional.one_hot(codes % num_experts, num_experts).float(), persistent=False)
        self.z_logits = nn.Linear(in_features, num_nonzeros * self.num_bits)
        self.w_logits = nn.Linear(in_features, num_nonzeros)
        nn.init.uniform_(self.z_logits.weight, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.z_logits.bias, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.w_logits.weight, -0.05, 0.05)
        nn.init.uniform_(self.w_logits.bias, -0.05, 0.05)

    def forward(self, x: Tensor) -> Tensor:
        x = flatten_for_gate(x, self.w_logits.in_features)
        steps = smooth_step(self.z_logits(x), self.gamma).view(-1, self.num_nonzeros, 1, self.num_bits)
        code_probs = torch.where(self.code_bits, steps, 1 - steps).prod(dim=-1)  # [B, k, 2^m]
        expert_probs = code_probs @ self.code_to_expert.to(code_probs.dtype)  # [B, k, E]
        selector_weights = torch.softmax(self.w_logits(x), dim=-1)  # [B, k]
        return torch.einsum("bk,bke->be", selector_weights, expert_probs)


@ARCHITECTURES.register
class DSelect_k(MMoE):
    """DSelect-k (Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of
    Experts with Applications to Multi-Task Learning", NeurIPS 2021): MMoE whose task gates
    are DSelect-k gates, ``num_nonzeros`` soft binary selectors (smooth step with scale
    ``kgamma``) that converge to picking ``num_nonzeros`` experts per task.

    Options: ``img_size`` (required), ``num_experts`` (one number, default 2), ``num_nonzeros``, ``kgamma``.
    Shared parameters: the experts. Task parameters: the gates.
    Differences from the paper, on purpose: no entropy regulariser (optional in the paper; its
    gradient never reaches LibMTL's parameters either, as LibMTL's Trainer zeroes gradients after
    the forward pass that adds it), and when ``num_experts`` is not a power of two the unused
    binary codes select expert ``code mod num_experts`` instead of being penalised, so the
    weights always sum to 1. Works with ``rep_grad`` and ``multi_input``.
    """

    hyperparameters = (
        Hyperparameter("num_nonzeros", DEFAULT_NUM_NONZEROS, "DSelect_k: number of experts each task selects (k)", minimum=1),
        Hyperparameter("kgamma", DEFAULT_KGAMMA, "DSelect_k: γ, the width of the smooth-step function", minimum=0.0, exclusive_minimum=True),
    )

    def _make_gate(self, in_features: int, num_experts: int) -> nn.Module:
        num_nonzeros = int(self.kwargs.get("num_nonzeros", DEFAULT_NUM_NONZEROS))
        gamma = float(self.kwargs.get("kgamma", DEFAULT_KGAMMA))
        if num_nonzeros < 1:
            raise ValueError(f"DSelect_k: num_nonzeros must be >= 1, got {num_nonzeros}")
        if gamma <= 0:
            raise ValueError(f"DSelect_k: kgamma must be > 0, got {gamma}")
        return DSelectKGate(in_features, num_experts, num_nonzeros, gamma)
