"""Time the operations the library replaced for speed next to what they replaced, on the
examples' sizes (the "before / after" rows of docs/performance.md).

    python benchmarks/replaced_ops.py                 # every case, 7 rounds
    python benchmarks/replaced_ops.py --repeats 15

Cases (each "before" is the plain PyTorch / PyG form the library used or would use):

- unit normals, forward + backward on NYUv2's normals (2×3×288×384): ``F.normalize(x, dim=1)``
  vs ``LibMTL_rgb_examples.dense_metrics.unit_normals``;
- class indices of NYUv2's logits (2×13×288×384): ``argmax(dim=1)`` vs ``max(dim=1).indices``
  (what ``SegMetric.update_fun`` uses);
- one DeepLab ASPP head (``LibMTL_rgb.model.aspp.DeepLabHead``), forward + backward, batch 2,
  on feature maps of Cityscapes (16×32), Cityscapes-3 (32×64) and NYUv2 (36×48): the atrous
  branches as plain ``nn.Conv2d`` vs ``AtrousConv2d`` (which skips the taps that read only
  padding);
- the QM9 MPNN encoder (``examples/qm9/mpnn.py``), forward + backward: PyG's per-edge
  ``NNConv`` vs ``NodeFirstNNConv`` (the same parameters, loaded into both).

Each pair is checked to give the same result before it is timed.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from _timing import add_common_flags, describe, machine_line, markdown_table, setup_from_flags, time_interleaved
from LibMTL_rgb.model.normals import unit_normals
from LibMTL_rgb.model.aspp import AtrousConv2d, DeepLabHead

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "qm9"))

NYU_BATCH = (2, 3, 288, 384)
NYU_CLASSES = 13
ASPP_SIZES = {"Cityscapes 16×32": (16, 32), "Cityscapes-3 32×64": (32, 64), "NYUv2 36×48": (36, 48)}
ASPP_IN_CHANNELS = 128
ASPP_CHANNELS = 64


def forward_backward(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def call() -> None:
        fn().square().sum().backward()

    return call


def normals_cases(device: torch.device) -> dict[str, Callable[[], None]]:
    x = torch.randn(*NYU_BATCH, device=device, requires_grad=True)
    torch.testing.assert_close(F.normalize(x, dim=1), unit_normals(x))
    return {"unit normals: F.normalize": forward_backward(lambda: F.normalize(x, dim=1)),
            "unit normals: unit_normals": forward_backward(lambda: unit_normals(x))}


def argmax_cases(device: torch.device) -> dict[str, Callable[[], None]]:
    logits = torch.randn(NYU_BATCH[0], NYU_CLASSES, *NYU_BATCH[2:], device=device)
    assert torch.equal(logits.argmax(dim=1), logits.max(dim=1).indices)
    return {"class indices: argmax(dim=1)": lambda: logits.argmax(dim=1),
            "class indices: max(dim=1).indices": lambda: logits.max(dim=1).indices}


def with_plain_convs(head: nn.Module) -> nn.Module:
    """A copy of ``head`` whose ``AtrousConv2d`` modules are plain ``nn.Conv2d`` (same tensors)."""
    plain = copy.deepcopy(head)
    for module in plain.modules():
        for name, child in module.named_children():
            if isinstance(child, AtrousConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                                 dilation=child.dilation, groups=child.groups, bias=child.bias is not None)
                conv.weight, conv.bias = child.weight, child.bias
                setattr(module, name, conv)
    return plain


def aspp_cases(device: torch.device) -> list[dict[str, Callable[[], None]]]:
    pairs = []
    for label, size in ASPP_SIZES.items():
        head = DeepLabHead(ASPP_IN_CHANNELS, NYU_CLASSES, channels=ASPP_CHANNELS).to(device).eval()
        plain = with_plain_convs(head)
        x = torch.randn(2, ASPP_IN_CHANNELS, *size, device=device)
        torch.testing.assert_close(plain(x), head(x))
        pairs.append({f"ASPP head {label}: nn.Conv2d": forward_backward(lambda m=plain, x=x: m(x)),
                      f"ASPP head {label}: AtrousConv2d": forward_backward(lambda m=head, x=x: m(x))})
    return pairs


class PerEdgeMPNN(nn.Module):
    """``MPNNEncoder``'s function computed by PyG's ``NNConv`` (its edge network evaluated on
    every edge in every message-passing step), with the parameters of a given encoder."""

    def __init__(self, encoder: nn.Module) -> None:
        from torch_geometric.nn import NNConv

        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        conv = encoder.conv
        self.conv = NNConv(conv.in_channels, conv.out_channels, copy.deepcopy(conv.nn), aggr=conv.aggr)
        self.conv.load_state_dict(conv.state_dict())

    def forward(self, data) -> torch.Tensor:
        e = self.encoder
        h = F.relu(e.embed(data.x))
        for _ in range(e.mp_steps):
            h = e.gru(F.relu(self.conv(h, data.edge_index, data.edge_attr)), h)
        return F.relu(e.project(e.readout(h, index=data.batch, dim_size=data.num_graphs)))


def mpnn_cases(device: torch.device, molecules: int, seed: int) -> dict[str, Callable[[], None]]:
    from mpnn import MPNNEncoder
    from train_step import random_molecules

    batch = random_molecules(molecules, seed).to(device)
    torch.manual_seed(seed)
    node_first = MPNNEncoder().to(device)
    per_edge = PerEdgeMPNN(node_first).to(device)
    torch.testing.assert_close(per_edge(batch), node_first(batch), rtol=1e-4, atol=1e-4)
    label = f"MPNN encoder, {molecules} molecules"
    return {f"{label}: NNConv (per edge)": forward_backward(lambda: per_edge(batch)),
            f"{label}: NodeFirstNNConv": forward_backward(lambda: node_first(batch))}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, nargs="+", default=[4, 32], help="molecules per MPNN batch")
    parser.add_argument("--mpnn", action=argparse.BooleanOptionalAction, default=True, help="include the MPNN cases (needs torch_geometric)")
    add_common_flags(parser, repeats=7)
    args = parser.parse_args(argv)
    device = setup_from_flags(args)
    groups = [normals_cases(device), argmax_cases(device), *aspp_cases(device)]
    if args.mpnn:
        groups += [mpnn_cases(device, count, args.seed) for count in args.molecules]
    print(machine_line(device))
    print(f"medians of {args.repeats} interleaved rounds; each pair: before, then after (ratio = after / before)\n")
    rows = []
    for cases in groups:
        timings = time_interleaved(cases, device, repeats=args.repeats, warmup=args.warmup, desc="replaced ops")
        before, after = list(cases)  # each group is one pair
        rows.append([f"`{before}`", *describe(timings, before)[:2], ""])
        speed_up = timings[before].median / timings[after].median
        rows.append([f"`{after}`", *describe(timings, after, before)[:2], f"{speed_up:.2f}× faster"])
    print(markdown_table(["case", "median ms", "spread", "speed-up"], rows))


if __name__ == "__main__":
    main()
