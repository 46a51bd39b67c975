"""The toy example (paper App. A.10): the problem, the computed Pareto front, the command line
and RGB's convergence towards the front."""
from __future__ import annotations

import csv
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

TOY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "toy")
sys.path.insert(0, TOY_DIR)

import LibMTL_rgb.weighting  # noqa: E402,F401  (registers the weightings)
from LibMTL_rgb.benchmark import grid  # noqa: E402
from LibMTL_rgb.benchmark.__main__ import main as benchmark_main  # noqa: E402
from LibMTL_rgb.registry import WEIGHTINGS  # noqa: E402
from pareto import ParetoFront, distance_to_front, non_dominated_mask  # noqa: E402
from toy_problem import FAMO_STARTS, parse_starts, toy_decoders, toy_loss, toy_losses  # noqa: E402
from toy_results import evaluation_steps  # noqa: E402
from toy_run import optimize_toy, toy_front  # noqa: E402

from example_loading import load_example  # noqa: E402

ADAM = {"optim": "adam", "lr": 2e-2, "weight_decay": 0.0}


def load_toy_main():
    return load_example("toy")[0]


@pytest.fixture(scope="module")
def front() -> ParetoFront:
    return toy_front()


# ------------------------------------------------------------------ the problem
def test_toy_losses_match_the_formula_at_known_points():
    # Bowl region, x = (7, -8): f1 = 0.1 * tanh(4) * (-20), f2 = tanh(4) * (196 / 10 - 20).
    losses = toy_losses(torch.tensor([7.0, -8.0], dtype=torch.float64))
    assert losses.tolist() == pytest.approx([0.1 * math.tanh(4.0) * -20.0, math.tanh(4.0) * (19.6 - 20.0)])
    # Valley region, x = (1, 2): f1 = 0.1 * tanh(1) * (log|-4 + tanh(2)| + 6).
    f1 = toy_loss(torch.tensor([1.0, 2.0], dtype=torch.float64), 0)
    assert float(f1) == pytest.approx(0.1 * math.tanh(1.0) * (math.log(abs(-4.0 + math.tanh(2.0))) + 6.0))
    # On f1's valley floor the clamp keeps the loss finite: log(5e-6) + 6.
    floor = torch.tensor([-7.0 - 2.0 * math.tanh(-3.0), 3.0], dtype=torch.float64)
    assert float(toy_loss(floor, 0, scale=1.0)) == pytest.approx(math.tanh(1.5) * (math.log(5e-6) + 6.0), rel=1e-6)


def test_the_start_at_the_origin_has_a_gradient():
    x = torch.zeros(2, requires_grad=True)
    (grad,) = torch.autograd.grad(toy_loss(x, 1), x)
    assert float(grad[1]) > 1.0  # both gates are 0 at x2 = 0, yet f2 grows with x2 there


def test_the_weighting_sees_positive_shifted_losses_with_unchanged_gradients():
    points = torch.rand(4000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 22 - 11
    decoders = toy_decoders()
    shifted = torch.stack([decoders[t](points.unsqueeze(0)) for t in ("f1", "f2")], dim=-1)
    assert float(shifted.min()) > 0.0  # FAMO / SI / DWA take logs or ratios of the losses
    x = torch.tensor([[3.0, -2.0]], requires_grad=True)
    (shifted_grad,) = torch.autograd.grad(decoders["f2"](x), x)
    (raw_grad,) = torch.autograd.grad(toy_loss(x[0], 1), x)
    assert torch.allclose(shifted_grad, raw_grad)


def test_parse_starts_reads_names_and_points_and_rejects_junk():
    assert parse_starts("famo") == FAMO_STARTS
    assert parse_starts("1,2; -3.5,4") == ((1.0, 2.0), (-3.5, 4.0))
    with pytest.raises(ValueError, match="bad start point"):
        parse_starts("1,2,3")


# -------------------------------------------------------------- the Pareto front
def test_non_dominated_mask_on_known_points():
    losses = torch.tensor([[0.0, 3.0], [1.0, 1.0], [3.0, 0.0], [2.0, 2.0], [1.0, 1.5], [3.0, 0.0]])
    mask = non_dominated_mask(losses)
    # (2, 2) and (1, 1.5) are dominated by (1, 1); of the duplicate (3, 0) one is kept.
    assert mask.tolist()[:5] == [True, True, True, False, False]
    assert int(mask[2]) + int(mask[5]) == 1


def test_non_dominated_mask_agrees_with_brute_force():
    losses = torch.rand(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = non_dominated_mask(losses)
    dominated_by = (losses[None, :, :] <= losses[:, None, :]).all(-1) & (losses[None, :, :] < losses[:, None, :]).any(-1)
    assert torch.equal(mask, ~dominated_by.any(dim=1))


def test_front_points_are_non_dominated_and_a_dominated_point_is_not_on_it(front):
    losses = front.losses
    assert torch.all(losses[1:, 0] >= losses[:-1, 0]) and torch.all(losses[1:, 1] <= losses[:-1, 1])
    dominated_by = (losses[None, :, :] <= losses[:, None, :]).all(-1) & (losses[None, :, :] < losses[:, None, :]).any(-1)
    assert not dominated_by.any()
    # No random point of the domain beats a front point in both losses (beyond grid accuracy).
    samples = toy_losses(torch.rand(5000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 22 - 11)
    assert not (samples[:, None] < losses[None] - 1e-3).all(-1).any()
    better = losses[::100] - 0.05  # points beyond the front would be caught
    assert (better[:, None] < losses[None] - 1e-3).all(-1).any()
    # The front lies in the bowls (x2 < 0) and the points attain the losses.
    assert torch.all(front.points[:, 1] < 0)
    assert torch.allclose(toy_losses(front.points), losses)
    # Distances: zero on the front, positive for a dominated point (the start (9, 9)).
    assert float(distance_to_front(losses[::50], front).max()) < 1e-9
    assert float(distance_to_front(toy_losses(torch.tensor([[9.0, 9.0]], dtype=torch.float64)), front)) > 1.0


# ---------------------------------------------------------------- the example
def test_main_runs_ew_and_rgb_prints_distances_and_writes_the_png(tmp_path, capsys):
    out = tmp_path / "toy.png"
    results = load_toy_main().main(["--compare", "EW,RGB", "--steps", "15", "--out", str(out)])
    assert list(results) == ["EW", "RGB"]
    for runs in results.values():
        assert len(runs) == len(FAMO_STARTS)
        assert all(np.isfinite(run.end_distance) and np.isfinite(run.final_losses).all() for run in runs)
        assert all(run.path.shape == (16, 2) for run in runs)
    printed = capsys.readouterr().out
    assert printed.count("(9, 9)") == 2 and "distance to front" in printed
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_weighting_lists_the_registered_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_toy_main().main(["--weighting", "NoSuchMethod", "--steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown weighting 'NoSuchMethod'" in err and "EW" in err and "RGB" in err


def test_every_flag_is_explained():
    parser = load_toy_main().build_parser()
    undocumented = [a.dest for a in parser._actions if a.dest != "help" and not (a.help or "").strip()]
    assert undocumented == []
    for flag in ("--steps", "--out", "--lr", "--seed", "--device", "--compare", "--rgb_steps", "--rgb_lr"):
        assert flag in parser.format_help()


@pytest.mark.parametrize("weighting", WEIGHTINGS.names())
def test_every_registered_weighting_runs_on_the_toy(weighting, front):
    run = optimize_toy(weighting, (9.0, -1.0), 3, ADAM, {}, front)
    assert np.isfinite(run.path).all() and np.isfinite(run.end_distance)
    assert not np.array_equal(run.path[0], run.path[-1])  # x moved


def test_rgb_ends_much_closer_to_the_front_than_it_starts(front):
    run = optimize_toy("RGB", (9.0, -1.0), 120, ADAM, {}, front)
    assert run.end_distance < 0.1 * run.start_distance
    assert run.start_distance > 3.0


# ------------------------------------------------- --save_path and the benchmark grid
def test_evaluation_steps_spread_over_the_run_and_end_at_the_last_step():
    assert evaluation_steps(200) == list(range(20, 201, 20))
    assert evaluation_steps(15, 4) == [3, 7, 11, 15]
    assert evaluation_steps(3, 10) == [1, 2, 3]  # never more points than steps
    with pytest.raises(ValueError, match="must be >= 1"):
        evaluation_steps(0)


def test_save_path_writes_the_trainer_files_the_grid_reads(tmp_path, capsys):
    save = tmp_path / "run"
    results = load_toy_main().main(["--weighting", "EW", "--steps", "30", "--eval_points", "4",
                                    "--starts", "9,-1;0,0", "--save_path", str(save)])
    runs = results["EW"]
    with open(save / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["epoch"]), r["mode"], int(r["step"])) for r in rows] == [(0, "test", 7), (1, "test", 15),
                                                                           (2, "test", 22), (3, "test", 30)]
    for row in rows:  # means over the starts of f1, f2 and of the distance to the front at that step
        step = int(row["step"])
        assert float(row["f1_value"]) == pytest.approx(np.mean([run.losses[step, 0] for run in runs]))
        assert float(row["f2_loss"]) == pytest.approx(np.mean([run.losses[step, 1] for run in runs]))
    assert float(rows[-1]["front_distance"]) == pytest.approx(np.mean([run.end_distance for run in runs]))
    assert float(rows[0]["front_distance"]) > float(rows[-1]["front_distance"])  # EW moves towards the front

    summary = json.loads((save / "summary.json").read_text())
    assert summary["tasks"] == {"f1": {"metrics": ["value"], "weight": [0]}, "f2": {"metrics": ["value"], "weight": [0]},
                                "front": {"metrics": ["distance"], "weight": [0]}}
    assert summary["epochs_done"] == 4 and summary["best"]["epoch"] == 3
    final = {"f1": [float(rows[-1]["f1_value"])], "f2": [float(rows[-1]["f2_value"])],
             "front": [float(rows[-1]["front_distance"])]}
    assert summary["best"]["test"] == pytest.approx(final) and summary["best"]["result"] == summary["best"]["test"]
    assert (save / "toy_EW.png").read_bytes()[:4] == b"\x89PNG"  # the PNG goes with the run, not to the cwd
    assert "Saved history.csv (4 evaluation points) and summary.json" in capsys.readouterr().out


def test_save_path_takes_one_weighting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_toy_main().main(["--compare", "EW,RGB", "--steps", "1", "--save_path", str(tmp_path)])
    assert exit_info.value.code == 2 and "--save_path records one weighting" in capsys.readouterr().err


def test_benchmark_grid_runs_the_toy_and_tabulates_every_method(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = str(tmp_path)
    code = benchmark_main(["run", "toy", "--weightings", "EW", "RGB", "--archs", "HPS", "--seeds", "0", "--out", out,
                           "--jobs", "2", "--", "--steps", "50"])
    records = {r["run_id"]: r for r in grid.load_results(out)}
    assert code == 0, [r["error"] for r in records.values()]
    assert sorted(records) == ["EW__HPS__seed0", "RGB__HPS__seed0"]
    assert all(r["epochs_done"] == 10 and [h["step"] for h in r["history"]] == list(range(5, 51, 5))
               for r in records.values())
    capsys.readouterr()
    assert benchmark_main(["table", out]) == 0
    printed = capsys.readouterr().out
    assert "| Method | f1 value ↓ | f2 value ↓ | front distance ↓ | Δm% ↓ | MR ↓ | seeds | failed |" in printed
    for label in ("EW", "RGB"):
        distance = records[f"{label}__HPS__seed0"]["best"]["test"]["front"][0]
        row = next(line for line in printed.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {distance:.4g} |" in row and row.endswith("| 1 | 0 |")  # one seed, no failure
