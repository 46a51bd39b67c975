"""The MPNN of Gilmer et al. (2017) as used for QM9 by Nash-MTL, FAMO and LibMTL: an
edge-conditioned convolution (NNConv) with a GRU update repeated ``mp_steps`` times, a Set2Set
readout, and one linear head per target."""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import NNConv
from torch_geometric.nn.aggr import Set2Set

from qm9_data import NUM_EDGE_FEATURES, NUM_NODE_FEATURES


class MPNNEncoder(nn.Module):
    """Shared encoder: a PyG batch of molecules -> one ``dim``-vector per molecule.

    ``h⁰ = ReLU(W₀ x)``; then ``mp_steps`` times ``m = ReLU(NNConv(h, edges))`` with the
    edge network ``Linear(edge_features, edge_hidden) → ReLU → Linear(edge_hidden, dim²)`` and
    mean aggregation, ``h ← GRU(m, h)`` (weights shared across steps); then
    ``ReLU(W₁ Set2Set(h))`` with ``s2s_steps`` processing steps.
    Defaults are those of Nash-MTL / FAMO: dim 64, edge_hidden 128, 3 and 3 steps.
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
        self.conv = NNConv(dim, dim, edge_network, aggr="mean")
        self.gru = nn.GRUCell(dim, dim)
        self.readout = Set2Set(dim, processing_steps=s2s_steps)
        self.project = nn.Linear(2 * dim, dim)

    def forward(self, data) -> Tensor:
        h = F.relu(self.embed(data.x))
        for _ in range(self.mp_steps):
            message = F.relu(self.conv(h, data.edge_index, data.edge_attr))
            h = self.gru(message, h)
        pooled = self.readout(h, index=data.batch, dim_size=data.num_graphs)
        return F.relu(self.project(pooled))


def target_heads(task_name: Sequence[str], dim: int) -> nn.ModuleDict:
    """One ``Linear(dim, 1)`` per target."""
    return nn.ModuleDict({task: nn.Linear(dim, 1) for task in task_name})
