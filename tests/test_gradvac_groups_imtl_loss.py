"""GradVac per parameter group (``--GradVac_group_type``) against a literal float64 GradVac
(Wang et al. 2021, Algorithm 1, as LibMTL main writes it) run group by group, and IMTL-L
(``--IMTL_mode``) against its formulas and against PyPI LibMTL 1.1.5's IMTL (IMTL-L + IMTL-G)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting.gradvac_groups import parameter_groups
from jacobian_model import LinearLoss, jacobian_model, random_jacobian, set_task, step
from libmtl_oracle import libmtl_model, libmtl_step

T, D = 3, 6
LOSSES = [0.5, 2.0, 4.0]


class VectorPiece(nn.Module):
    """Parameters that are the representation (one row per sample)."""

    def __init__(self, *sizes: int) -> None:
        super().__init__()
        self.pieces = nn.ParameterList([nn.Parameter(torch.zeros(1, n, dtype=torch.float64)) for n in sizes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p for p in self.pieces], dim=1).expand(x.shape[0], -1)


class TwoLayerVector(nn.Module):
    """Layer ``first`` owns two tensors (2 + 2 entries), layer ``second`` one (2 entries)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = VectorPiece(2, 2)
        self.second = VectorPiece(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first(x), self.second(x)], dim=1)


def gradvac_model(G: torch.Tensor):
    tasks = [f"t{i}" for i in range(len(G))]
    decoders = nn.ModuleDict({t: LinearLoss(G[i], LOSSES[i]) for i, t in enumerate(tasks)})
    return build_mtl_model("GradVac", "HPS", tasks, TwoLayerVector, decoders, False, False, torch.device("cpu"))


def gradvac_step(model, **args) -> np.ndarray:
    model.zero_grad(set_to_none=True)
    out = model(torch.zeros(1, 1, dtype=torch.float64))
    model.backward(torch.stack([out[t] for t in model.task_name]), **args)
    return torch.cat([p.grad.reshape(-1) for p in model.get_share_params()]).numpy()


def gradvac_reference(G: np.ndarray, targets: np.ndarray, beta: float, orders: list[list[int]]):
    """GradVac on one group, literally: returns (Σ_i g_i^PC, new targets)."""
    targets = targets.copy()
    pc = G.copy()
    norm = lambda v: math.sqrt(sum(x * x for x in v))  # noqa: E731
    for i in range(len(G)):
        for j in orders[i]:
            phi = float(pc[i] @ G[j]) / (norm(pc[i]) * norm(G[j]) + 1e-8)
            goal = targets[i, j]
            if phi < goal:
                w = norm(pc[i]) * (goal * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - goal**2)) / (norm(G[j]) * math.sqrt(1 - goal**2) + 1e-8)
                pc[i] = pc[i] + w * G[j]
            targets[i, j] = (1 - beta) * goal + beta * phi
    return pc.sum(axis=0), targets


def torch_orders(task_num: int) -> list[list[int]]:
    """The order of the other tasks for every task, as torchjd's GradVac draws it."""
    orders = []
    for i in range(task_num):
        others = [j for j in range(task_num) if j != i]
        orders.append([others[k] for k in torch.randperm(task_num - 1).tolist()])
    return orders


GROUPS = {0: [(0, 6)], 1: [(0, 4), (4, 6)], 2: [(0, 2), (2, 4), (4, 6)]}


def test_parameter_groups_of_each_type():
    model = gradvac_model(random_jacobian(0, T, D))
    params = list(model.get_share_params())
    for group_type, expected in GROUPS.items():
        assert parameter_groups(model, params, group_type) == expected
    mlp = build_mtl_model("GradVac", "HPS", ["a", "b"], lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
                          nn.ModuleDict({t: nn.Linear(2, 1) for t in ("a", "b")}), False, False, torch.device("cpu"))
    mlp_params = list(mlp.get_share_params())
    assert parameter_groups(mlp, mlp_params, 1) == [(0, 16), (16, 18 + 8)]  # (W1, b1), (W2, b2)
    assert parameter_groups(mlp, mlp_params, 2) == [(0, 12), (12, 16), (16, 24), (24, 26)]
    with pytest.raises(ValueError, match="GradVac_group_type"):
        parameter_groups(mlp, mlp_params, 3)


@pytest.mark.parametrize("group_type", [0, 1, 2])
def test_grouped_gradvac_matches_literal_gradvac_per_group(group_type):
    Gs = [random_jacobian(seed, T, D) for seed in (3, 4, 5, 6)]
    model = gradvac_model(Gs[0])
    targets = [np.zeros((T, T)) for _ in GROUPS[group_type]]
    corrected = False
    for step_index, G in enumerate(Gs):
        for i in range(T):
            set_task(model, i, G[i])
        torch.manual_seed(100 + step_index)
        got = gradvac_step(model, GradVac_beta=0.5, GradVac_group_type=group_type)
        torch.manual_seed(100 + step_index)
        expected = np.empty(D)
        for k, (begin, end) in enumerate(GROUPS[group_type]):
            block = G.numpy()[:, begin:end]
            expected[begin:end], targets[k] = gradvac_reference(block, targets[k], 0.5, torch_orders(T))
            corrected |= not np.allclose(expected[begin:end], block.sum(axis=0))
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert corrected  # some vaccine correction happened
    stored = model.gradvac_targets if group_type == 0 else model.gradvac_group_targets
    np.testing.assert_allclose(stored.numpy().reshape(-1, T, T), np.stack(targets), rtol=1e-10, atol=1e-12)


def test_grouped_gradvac_state_survives_a_checkpoint():
    Gs = [random_jacobian(seed, T, D) for seed in (7, 8, 9)]
    original = gradvac_model(Gs[0])
    for G in Gs[:2]:
        for i in range(T):
            set_task(original, i, G[i])
        gradvac_step(original, GradVac_group_type=2)
    restored = gradvac_model(Gs[0])
    restored.load_state_dict(original.state_dict())
    results = []
    for model in (original, restored):
        for i in range(T):
            set_task(model, i, Gs[2][i])
        torch.manual_seed(0)
        results.append(gradvac_step(model, GradVac_group_type=2))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_grouped_gradvac_refuses_rep_grad():
    tasks = ["a", "b"]
    model = build_mtl_model("GradVac", "HPS", tasks, lambda: nn.Linear(3, 4), nn.ModuleDict({t: nn.Linear(4, 1) for t in tasks}),
                            True, False, torch.device("cpu"))
    out = model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="rep_grad"):
        model.backward(torch.stack([out[t].mean() for t in tasks]), GradVac_group_type=1)


# ------------------------------------------------------------------------------ IMTL-L
def imtl_g_reference(G: np.ndarray) -> np.ndarray:
    """IMTL-G's closed form (Liu et al. 2021): α_{2:T} = g_1 Uᵀ (D Uᵀ)^{-1}, α_1 = 1 − Σ α_{2:T},
    with D_t = g_1 − g_t and U_t = u_1 − u_t (u = unit gradients)."""
    units = G / np.linalg.norm(G, axis=1, keepdims=True)
    Dm, U = G[0] - G[1:], units[0] - units[1:]
    alpha = G[0] @ U.T @ np.linalg.inv(Dm @ U.T)
    return np.concatenate([[1 - alpha.sum()], alpha])


def test_imtl_loss_mode_scales_the_losses():
    G = random_jacobian(11)
    model = jacobian_model("IMTL", G, LOSSES)
    with torch.no_grad():
        model.imtl_log_scales.copy_(torch.tensor([0.3, -0.2, 0.1]))
    s = model.imtl_log_scales.detach().double().numpy()
    weights, grad = step(model, IMTL_mode="loss")
    np.testing.assert_array_equal(weights, np.ones(T))
    np.testing.assert_allclose(grad.numpy(), np.exp(s) @ G.numpy(), rtol=1e-12)
    # ∂(e^s L − s)/∂s = e^s L − 1: descent drives the scaled losses e^s L toward 1
    np.testing.assert_allclose(model.imtl_log_scales.grad.numpy(), np.exp(s) * np.array(LOSSES) - 1, rtol=1e-6)


def test_imtl_gradient_mode_is_imtl_g_and_hybrid_applies_it_to_scaled_gradients():
    G = random_jacobian(12)
    weights, grad = step(jacobian_model("IMTL", G, LOSSES), IMTL_mode="gradient")
    alpha = imtl_g_reference(G.numpy())
    np.testing.assert_allclose(weights, alpha, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grad.numpy(), alpha @ G.numpy(), rtol=1e-8, atol=1e-10)
    model = jacobian_model("IMTL", G, LOSSES)
    with torch.no_grad():
        model.imtl_log_scales.copy_(torch.tensor([0.5, -0.5, 0.0]))
    scaled = np.exp(model.imtl_log_scales.detach().double().numpy())[:, None] * G.numpy()
    weights, grad = step(model)  # hybrid by default
    alpha = imtl_g_reference(scaled)
    np.testing.assert_allclose(weights, alpha, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grad.numpy(), alpha @ scaled, rtol=1e-8, atol=1e-10)


def test_imtl_hybrid_agrees_with_libmtl_1_1_5():
    for seed, scales in ((13, [0.0, 0.0, 0.0]), (14, [0.3, -0.2, 0.1]), (15, [-1.0, 0.5, 0.2])):
        G = random_jacobian(seed)
        ours, theirs = jacobian_model("IMTL", G, LOSSES), libmtl_model("IMTL", *G.shape)
        with torch.no_grad():
            ours.imtl_log_scales.copy_(torch.tensor(scales))
            theirs.loss_scale.copy_(torch.tensor(scales))
        our_weights, our_grad = step(ours)
        their_weights, their_grad = libmtl_step(theirs, G, LOSSES)
        np.testing.assert_allclose(our_weights, their_weights, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(our_grad.numpy(), their_grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.imtl_log_scales.grad.numpy(), theirs.loss_scale.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("weighting, weight_args", [
    ("GradVac", {"GradVac_group_type": 1}), ("GradVac", {"GradVac_group_type": 2}),
    ("IMTL", {"IMTL_mode": "loss"}), ("IMTL", {"IMTL_mode": "gradient"}), ("IMTL", {"IMTL_mode": "hybrid"}),
])
def test_options_train_two_steps_with_the_trainer(weighting, weight_args):
    from LibMTL_rgb import Trainer
    from test_arch_weighting_matrix import IMG, TASKS, TinyConvEncoder, decoders, loader, task_dict
    from test_architectures import arch_args

    torch.manual_seed(0)
    trainer = Trainer(task_dict(), weighting, "HPS", TinyConvEncoder, decoders(), False, False, {"optim": "adam", "lr": 1e-2},
                      device="cpu", arch_args=arch_args("HPS", TASKS, IMG), weight_args=weight_args)
    before = [p.detach().clone() for p in trainer.model.get_share_params()]
    weights = trainer.train(loader(8, False), loader(4, False), epochs=1, return_weight=True)
    assert np.isfinite(weights).all() and np.isfinite(trainer.model.train_loss_buffer).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.model.get_share_params()))
    if weighting == "GradVac":
        groups = parameter_groups(trainer.model, list(trainer.model.get_share_params()), weight_args["GradVac_group_type"])
        assert trainer.model.gradvac_group_targets.shape == (len(groups), 2, 2) and len(groups) > 1
        assert trainer.model.gradvac_group_targets.abs().sum() > 0
    elif weight_args["IMTL_mode"] != "gradient":
        assert trainer.model.imtl_log_scales.abs().sum() > 0  # the optimizer moved the loss scales
