"""LTB (Learning to Branch): hard parent choices, the learned tree in eval mode, pruned
branches, straight-through gradients to the branching logits, LibMTL's schedule, and
training through the Trainer."""
import math

import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.architecture.ltb import in_warmup, temperature
from LibMTL_rgb.model import resnet_encoder
from LibMTL_rgb.trainer import build_mtl_model
from test_arch_weighting_matrix import loader, make_trainer

TASKS = ["seg", "depth", "normal"]
IMG = (3, 16, 16)


def build(**kwargs):
    decoders = nn.ModuleDict({t: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2)) for t in TASKS})
    return build_mtl_model("EW", "LTB", TASKS, lambda: resnet_encoder(18, width=4), decoders, False, False, "cpu", kwargs)


def set_tree(model, parents):
    """Logits that make ``parents[s][t]`` by far the most likely parent."""
    with torch.no_grad():
        model.branch_logits.fill_(-30.0)
        for s, row in enumerate(parents):
            for t, j in enumerate(row):
                model.branch_logits[s, t, j] = 30.0


def manual_forward(model, x, parents):
    """Column t's stage s + 1 reads column parents[s][t]'s stage s, literally."""
    features = [column[0](x) for column in model._columns]
    for s in range(1, model.num_stages):
        features = [model._columns[t][s](features[parents[s - 1][t]]) for t in range(len(TASKS))]
    return {task: model.decoders[task](features[t]) for t, task in enumerate(TASKS)}


TREE = [[0, 0, 0], [0, 0, 2], [1, 1, 2], [0, 1, 2]]  # TREE[s][t]: the column whose stage s feeds column t's stage s + 1


def test_branches_before_each_of_layer1_to_layer4_as_libmtl():
    """A column's stages are the stem, then layer1 ... layer4: one branching choice before each layer."""
    model = build()
    encoder = model.encoder["seg"]
    assert model.num_stages == 5 and model.branch_logits.shape == (4, 3, 3)
    assert list(model._columns[0][0]) == [encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool]
    assert model._columns[0][1:] == [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]


def test_eval_mode_runs_the_most_likely_tree():
    torch.manual_seed(0)
    model = build().eval()
    set_tree(model, TREE)
    assert model.selected_parents() == TREE
    x = torch.randn(2, *IMG)
    with torch.no_grad():
        out, expected = model(x), manual_forward(model, x, TREE)
    for task in TASKS:
        torch.testing.assert_close(out[task], expected[task])


def test_training_samples_one_parent_per_child_with_straight_through_gradients():
    torch.manual_seed(0)
    model = build().train()
    weights = model.branching_weights()
    assert weights.shape == (4, 3, 3)
    assert torch.all((weights == 0) | (weights == 1)) and torch.all(weights.sum(-1) == 1)  # one-hot rows
    # equal logits: every parent gets picked sometimes
    picks = torch.stack([model.branching_weights().argmax(-1) for _ in range(200)])
    assert all(int((picks == j).sum()) > 0 for j in range(3))
    # a strongly preferred tree is sampled as such; the forward equals the literal tree
    set_tree(model, TREE)
    x = torch.randn(2, *IMG)
    out = model(x)
    expected = manual_forward(model, x, TREE)
    for task in TASKS:
        torch.testing.assert_close(out[task], expected[task])
    # the hard choice is differentiable w.r.t. the logits (straight-through Gumbel-softmax)
    with torch.no_grad():
        model.branch_logits.zero_()
    sum(o.pow(2).sum() for o in model(x).values()).backward()
    assert model.branch_logits.grad is not None and bool(model.branch_logits.grad.abs().sum() > 0)


def test_pruned_branches_get_no_gradient():
    torch.manual_seed(0)
    model = build().train()
    set_tree(model, TREE)
    sum(o.pow(2).sum() for o in model(torch.randn(2, *IMG)).values()).backward()

    def grad_norm(column, stage):
        return sum(float(p.grad.abs().sum()) for p in model._columns[column][stage].parameters() if p.grad is not None)

    # TREE: stage 1 reads column 0's stage 0 (stem) only; stage 2 reads columns 0 and 2's stage 1;
    # stage 3 reads columns 1 and 2's stage 2; stage 4 every column's stage 3. Every other node
    # is a pruned branch.
    assert grad_norm(0, 0) > 0 and grad_norm(1, 0) == 0 and grad_norm(2, 0) == 0
    assert grad_norm(0, 1) > 0 and grad_norm(1, 1) == 0 and grad_norm(2, 1) > 0
    assert grad_norm(0, 2) == 0 and grad_norm(1, 2) > 0 and grad_norm(2, 2) > 0
    assert all(grad_norm(t, 3) > 0 for t in range(3))
    assert all(grad_norm(t, 4) > 0 for t in range(3))  # every task's own last stage


def test_libmtl_schedule_warmup_then_decaying_temperature():
    assert in_warmup(0, 100) and not in_warmup(1, 100) and not in_warmup(None, None)
    assert temperature(0, 100) == pytest.approx(5.0) and temperature(99, 100) == pytest.approx(0.5)
    assert temperature(3, 40) == pytest.approx(40 / 20 / math.sqrt(4))
    model = build().train()
    model.epoch, model.epochs = 0, 200  # warm-up: every child averages all parents
    torch.testing.assert_close(model.branching_weights(), torch.full((4, 3, 3), 1 / 3))


def test_trains_through_the_trainer_and_learns_the_logits_after_warmup():
    torch.manual_seed(0)
    warmup_only = make_trainer("LTB", "EW")
    start = warmup_only.model.branch_logits.detach().clone()
    warmup_only.train(loader(8, False), loader(4, False), epochs=1)  # all warm-up: no branching gradient
    assert torch.equal(start, warmup_only.model.branch_logits.detach())
    torch.manual_seed(0)
    trainer = make_trainer("LTB", "EW")
    logits = trainer.model.branch_logits
    start = logits.detach().clone()
    trainer.train(loader(8, False), loader(4, False), epochs=2)  # epoch 0: warm-up, epoch 1: sampling
    assert torch.isfinite(logits).all() and not torch.equal(start, logits.detach())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_multi_input_is_refused():
    with pytest.raises(ValueError, match="multi_input=True is not supported"):
        build_mtl_model("EW", "LTB", TASKS, lambda: resnet_encoder(18, width=4),
                        nn.ModuleDict({t: nn.Identity() for t in TASKS}), False, True, "cpu", {})
