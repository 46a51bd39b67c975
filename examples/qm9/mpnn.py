"""The MPNN of Gilmer et al. (2017) as used for QM9 by Nash-MTL, FAMO and LibMTL: an
edge-conditioned convolution (NNConv) with a GRU update repeated ``mp_steps`` times, a Set2Set
readout, and one linear head per target."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import NNConv
from torch_geometric.nn.aggr import Set2Set
from torch_geometric.utils import to_dense_batch

from qm9_data import NUM_EDGE_FEATURES, NUM_NODE_FEATURES
from qm9_targets import GRAPH_ARCHITECTURES, unsupported_architectures  # noqa: F401



@dataclass(frozen=True)
class EdgesBySource:
    """A graph's edges grouped by source node, as ``NodeFirstNNConv`` reads them."""

    #: [N, H, S] the edge network's hidden features z(e) of each node's outgoing edges,
    #: zero-padded to S (the largest out-degree) slots per node
    hidden: Tensor
    #: [E] each edge's position in the N·S (node, slot) pairs, edges in source order
    slot: Tensor
    #: [E] each edge's target node, same order
    target: Tensor


class NodeFirstNNConv(NNConv):
    """PyG's ``NNConv``, ``x'_i = Θ x_i + b + aggr_{j→i} x_jᵀ W(e_ji)``, evaluated node-first.

    The edge network's last layer is linear, ``W(e) = A z(e) + c`` with ``z(e)`` its hidden
    features (H of them) and ``A``, ``c`` read as ``[in, out, H]`` and ``[in, out]``, so a
    message is ``x_jᵀ W(e) = (x_jᵀ A) z(e) + x_jᵀ c``: the kernel ``x_jᵀ A`` ([out, H]) is
    formed once per *node* and contracted with the hidden features of that node's outgoing
    edges. ``NNConv`` builds an ``[in, out]`` matrix per *edge* (E·in·out·H multiply-adds
    forward, twice that backward, and [E, in·out] tensors); here it is N·in·out·H + E·out·H,
    ≈ in·deg / (in + deg) times less for mean degree deg (≈ 13× on QM9's complete graphs).

    Same function, parameters, initialisation and ``state_dict`` names as ``NNConv``
    (``nn.*``, ``lin.weight``, ``bias``); the edge network must be an ``nn.Sequential`` ending in
    ``nn.Linear``; homogeneous graphs only. ``group_edges`` runs the edge network up to its
    last layer once per graph, so a model calling the convolution on the same edges in
    several steps does that once: ``conv(x, conv.group_edges(edge_index, edge_attr, N))``.
    """

    def __init__(self, in_channels: int, out_channels: int, nn: torch.nn.Sequential, aggr: str = "mean", **kwargs) -> None:
        if not isinstance(nn, torch.nn.Sequential) or not isinstance(nn[-1], torch.nn.Linear):
            raise TypeError(f"NodeFirstNNConv needs an nn.Sequential edge network ending in nn.Linear, got {nn!r}")
        if nn[-1].out_features != in_channels * out_channels:
            raise ValueError(f"the edge network must output in_channels·out_channels = {in_channels * out_channels} "
                             f"values per edge, not {nn[-1].out_features}")
        super().__init__(in_channels, out_channels, nn, aggr=aggr, **kwargs)

    def group_edges(self, edge_index: Tensor, edge_attr: Tensor, num_nodes: int) -> EdgesBySource:
        """Run the edge network up to its last layer and group the result by source node."""
        source, target = edge_index if self.flow == "source_to_target" else edge_index.flip(0)
        order = torch.argsort(source, stable=True)
        padded, mask = to_dense_batch(self.nn[:-1](edge_attr[order]), source[order], batch_size=num_nodes)
        return EdgesBySource(padded.transpose(1, 2).contiguous(), mask.view(-1).nonzero().squeeze(1), target[order])

    def forward(self, x: Tensor, edges: EdgesBySource) -> Tensor:
        nodes, hidden = edges.hidden.shape[:2]
        if x.shape[0] != nodes:
            raise ValueError(f"x has {x.shape[0]} nodes, the grouped edges {nodes}")
        last = self.nn[-1]
        # x_jᵀ A for every node j: [N, out, H] (A[i, o, k] = last.weight[i·out + o, k])
        kernels = (x @ last.weight.view(self.in_channels_l, -1)).view(nodes, self.out_channels, hidden)
        messages = torch.bmm(kernels, edges.hidden)  # [N, out, S]: one column per (source, slot)
        if last.bias is not None:
            messages = messages + (x @ last.bias.view(self.in_channels_l, self.out_channels)).unsqueeze(2)
        messages = messages.transpose(1, 2).reshape(-1, self.out_channels).index_select(0, edges.slot)
        out = self.aggr_module(messages, edges.target, dim_size=nodes)
        if self.root_weight:
            out = out + self.lin(x)
        if self.bias is not None:
            out = out + self.bias
        return out


class MPNNEncoder(nn.Module):
    """Shared encoder: a PyG batch of molecules -> one ``dim``-vector per molecule.

    ``h⁰ = ReLU(W₀ x)``; then ``mp_steps`` times ``m = ReLU(NNConv(h, edges))`` with the
    edge network ``Linear(edge_features, edge_hidden) → ReLU → Linear(edge_hidden, dim²)`` and
    mean aggregation, ``h ← GRU(m, h)`` (weights shared across steps); then
    ``ReLU(W₁ Set2Set(h))`` with ``s2s_steps`` processing steps.
    Defaults are those of Nash-MTL / FAMO: dim 64, edge_hidden 128, 3 and 3 steps.
    The convolution is computed by ``NodeFirstNNConv``: the same function, parameters and
    ``state_dict`` as ``NNConv`` (checkpoints of either load into the other), several times
    faster (``docs/performance.md``).
    """

    def __init__(
        self,
        dim: int = 64,
        edge_hidden: int = 128,
        mp_steps: int = 3,
        s2s_steps: int = 3,
        node_features: int = NUM_NODE_FEATURES,
        edge_features: int = NUM_EDGE_FEATURES,
    ) -> None:
        super().__init__()
        if min(dim, edge_hidden, mp_steps, s2s_steps) < 1:
            raise ValueError(f"dim, edge_hidden, mp_steps and s2s_steps must be >= 1, got {dim}, {edge_hidden}, {mp_steps}, {s2s_steps}")
        self.mp_steps = mp_steps
        self.embed = nn.Linear(node_features, dim)
        edge_network = nn.Sequential(nn.Linear(edge_features, edge_hidden), nn.ReLU(), nn.Linear(edge_hidden, dim * dim))
        self.conv = NodeFirstNNConv(dim, dim, edge_network, aggr="mean")
        self.gru = nn.GRUCell(dim, dim)
        self.readout = Set2Set(dim, processing_steps=s2s_steps)
        self.project = nn.Linear(2 * dim, dim)

    def forward(self, data) -> Tensor:
        h = F.relu(self.embed(data.x))
        edges = self.conv.group_edges(data.edge_index, data.edge_attr, h.shape[0])
        for _ in range(self.mp_steps):
            h = self.gru(F.relu(self.conv(h, edges)), h)
        pooled = self.readout(h, index=data.batch, dim_size=data.num_graphs)
        return F.relu(self.project(pooled))


def target_heads(task_name: Sequence[str], dim: int) -> nn.ModuleDict:
    """One ``Linear(dim, 1)`` per target."""
    return nn.ModuleDict({task: nn.Linear(dim, 1) for task in task_name})
