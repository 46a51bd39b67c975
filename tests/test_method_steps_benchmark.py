"""``benchmarks/train_step.py --methods`` (issue 23): every gradient method's step next to
LibMTL's, over RGB's and over the per-task-gradient floor, on a tiny MLP."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import method_steps  # noqa: E402
import train_step  # noqa: E402


def test_the_methods_table_has_every_method_the_floor_and_libmtl_where_it_has_the_method(capsys):
    work = train_step.mlp_workload(3, 8, 4, torch.device("cpu"), 0)
    table = train_step.methods_table(work, torch.device("cpu"), repeats=1, warmup=0, seed=0)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert method_steps.FLOOR in rows and rows[method_steps.FLOOR][-1].strip(" |") == "1.00"
    for name in method_steps.METHODS:
        assert name in rows, name
        assert float(rows[name][2]) > 0  # ours ms
    assert rows["RGB"][5] == "1.00"  # ours/RGB
    if method_steps.libmtl_weighting("MGDA") is None:
        pytest.skip("no LibMTL on the path")
    assert float(rows["MGDA"][1]) > 0 and float(rows["MGDA"][4]) > 0  # LibMTL ms, ours/LibMTL
    assert rows["Nash_MTL"][1] == "—" or method_steps.libmtl_weighting("Nash_MTL") is not None
    assert "G check: row sums" in table


def test_the_floor_writes_the_sum_of_the_task_gradients():
    work = train_step.mlp_workload(3, 8, 4, torch.device("cpu"), 0)
    model = work.build(method_steps.PerTaskGradientFloor)
    losses = train_step.task_losses(model, work)
    shared = [p for p in model.get_share_params()]
    expected = torch.autograd.grad(losses.sum(), shared, retain_graph=True)
    model.backward(losses)
    assert max((p.grad - g).abs().max().item() for p, g in zip(shared, expected)) <= 1e-6
