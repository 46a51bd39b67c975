"""The grid runner (``python -m LibMTL_rgb.benchmark``): planning, JSON records, failures,
resume, STL baselines, tables and plots. Exact bookkeeping runs on ``fixtures/fake_example.py``
(no torch: milliseconds per run); the end-to-end grid trains ``fixtures/tiny_example.py``."""
import json
import os

import pytest

from LibMTL_rgb.benchmark import grid
from LibMTL_rgb.benchmark.__main__ import main
from LibMTL_rgb.benchmark.delta_m import delta_m
from LibMTL_rgb.benchmark.tables import build_tables, paper_baseline, stl_baseline, to_csv, to_markdown

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FAKE = os.path.join(FIXTURES, "fake_example.py")
TINY = os.path.join(FIXTURES, "tiny_example.py")
WEIGHT = {"t0": [0], "t1": [1]}


def fake_metrics(weighting, seed):
    rgb = weighting == "RGB"
    return {"t0": [1.0 + 0.1 * seed - 0.2 * rgb], "t1": [0.5 + 0.01 * seed + 0.1 * rgb]}


def fake_stl(seed):
    return {"t0": [1.1 + 0.1 * seed], "t1": [0.55 + 0.01 * seed]}


# ------------------------------------------------------------------------ planning
def test_method_spec_and_run_ids():
    spec = grid.MethodSpec.parse("RGB:rgb_steps=30,--rgb_lambda=1")
    assert spec.weighting == "RGB" and spec.options == (("rgb_steps", "30"), ("rgb_lambda", "1"))
    assert spec.label == "RGB[rgb_steps=30,rgb_lambda=1]"
    assert spec.args() == ["--weighting", "RGB", "--rgb_steps", "30", "--rgb_lambda", "1"]
    for bad in (":x=1", "RGB:rgb_steps"):
        with pytest.raises(ValueError):
            grid.MethodSpec.parse(bad)
    runs = grid.plan_runs("ex.py", [grid.MethodSpec("EW"), spec], ["HPS", "MTAN"], [0, 1], ["--epochs", "3"])
    assert len(runs) == 8 and len({r.run_id for r in runs}) == 8
    assert runs[0].command("/out/x", "py") == ["py", "ex.py", "--weighting", "EW", "--arch", "HPS", "--seed", "0",
                                                "--save_path", "/out/x", "--epochs", "3"]
    stl = grid.plan_stl_runs("ex.py", ["t0", "t1"], [0], "HPS")
    assert [r.run_id for r in stl] == ["STL-t0__HPS__seed0", "STL-t1__HPS__seed0"]
    assert stl[0].command("/o")[-2:] == ["--stl_task", "t0"] and stl[0].label == "STL"


def test_resolve_example(tmp_path):
    assert grid.resolve_example(FAKE) == os.path.realpath(FAKE)
    (tmp_path / "main.py").write_text("")
    assert grid.resolve_example(str(tmp_path)) == str(tmp_path / "main.py")
    with pytest.raises(FileNotFoundError, match="known names"):
        grid.resolve_example("no_such_example")


def test_dry_run_starts_nothing(tmp_path, capsys):
    assert main(["run", FAKE, "--weightings", "EW", "RGB", "--seeds", "0", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) to start" in out and "--weighting RGB" in out
    assert not (tmp_path / grid.RESULTS_DIR).exists()


# -------------------------------------------------- the grid on the fake example
def test_grid_records_stl_failures_and_tables(tmp_path, capsys):
    out = str(tmp_path)
    code = main(["run", FAKE, "--weightings", "EW", "RGB", "--seeds", "0", "1", "--out", out, "--stl"])
    assert code == 0
    records = {r["run_id"]: r for r in grid.load_results(out)}
    assert sorted(records) == sorted(["EW__HPS__seed0", "EW__HPS__seed1", "RGB__HPS__seed0", "RGB__HPS__seed1",
                                      "STL-t0__HPS__seed0", "STL-t0__HPS__seed1", "STL-t1__HPS__seed0", "STL-t1__HPS__seed1"])
    ew = records["EW__HPS__seed1"]
    assert ew["status"] == "ok" and ew["returncode"] == 0 and ew["wall_time_s"] > 0 and ew["peak_rss_mb"] > 0
    assert ew["best"]["test"] == pytest.approx(fake_metrics("EW", 1))
    assert [(row["epoch"], row["mode"]) for row in ew["history"]] == [(0, "train"), (0, "test"), (1, "train"), (1, "test")]
    assert records["STL-t1__HPS__seed0"]["tasks"] == {"t1": {"metrics": ["acc"], "weight": [1]}}

    # a failing run is recorded with its stderr and does not stop the grid
    fail = main(["run", FAKE, "--weightings", "UW", "EW", "--seeds", "5", "--out", out, "--", "--fail"])
    assert fail == 1
    failed = json.load(open(os.path.join(out, "results", "UW__HPS__seed5.json")))
    assert failed["status"] == "failed" and failed["returncode"] == 3 and "failing as asked" in failed["error"]
    assert os.path.isfile(os.path.join(out, "results", "EW__HPS__seed5.json"))
    assert "FAILED UW__HPS__seed5" in capsys.readouterr().err

    # tables: Δm% per seed against the same seed's STL runs, then mean ± stderr
    records = [r for r in grid.load_results(out) if r["config"]["seed"] != 5]
    baseline = stl_baseline(records)
    assert baseline.by_seed[1] == pytest.approx(fake_stl(1))
    (table,) = build_tables(records, baseline)
    rows = {r.label: r for r in table.rows}
    assert list(rows) == ["STL", "EW", "RGB"]
    for label in ("EW", "RGB"):
        per_seed = [delta_m(fake_metrics(label, s), fake_stl(s), WEIGHT) for s in (0, 1)]
        assert rows[label].delta_m == pytest.approx(sum(per_seed) / 2)
        assert rows[label].delta_m_stderr == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
        assert rows[label].mean["t0"] == pytest.approx([(fake_metrics(label, 0)["t0"][0] + fake_metrics(label, 1)["t0"][0]) / 2])
    # MR over STL, EW, RGB: t0 (↓) ranks 3, 2, 1; t1 (↑) ranks 2, 3, 1
    assert (rows["STL"].mr, rows["EW"].mr, rows["RGB"].mr) == pytest.approx((2.5, 2.5, 1.0))
    assert rows["EW"].delta_m_tasks["t0"] == pytest.approx((-0.1 / 1.1 - 0.1 / 1.2) / 2 * 100)

    markdown = to_markdown(table)
    assert "| t0 mae ↓ | t1 acc ↑ | Δm% ↓ | MR ↓ |" in markdown and "| RGB |" in markdown
    csv_text = to_csv([table])
    assert csv_text.splitlines()[0].startswith("arch,method,seeds,failed,t0/mae,t0/mae_stderr")

    # the CLI writes the same tables
    assert main(["table", out]) == 0
    written = open(os.path.join(out, "tables", "results.md")).read()
    assert "Δm% baseline: STL runs of this grid" in written and "| UW |" in written  # UW: failed, listed


def test_paper_baseline_matches_tasks_and_units():
    tasks = {"seg": {"metrics": ["mIoU"], "weight": [1]}, "disp": {"metrics": ["L1"], "weight": [0]},
             "inst": {"metrics": ["MSE"], "weight": [0]}}
    base, notes = paper_baseline("cityscapes3", tasks, [{"seg": [0.65], "disp": [9.9], "inst": [0.32]}])
    assert base.mean == pytest.approx({"seg": [0.6673], "disp": [10.55], "inst": [0.33]})
    assert any("by position" in n for n in notes) and any("divided by 100" in n for n in notes)
    base, _ = paper_baseline("cityscapes3", tasks, [{"seg": [65.0], "disp": [9.9], "inst": [0.32]}])
    assert base.mean["seg"] == [66.73]
    with pytest.raises(ValueError, match="do not match"):
        paper_baseline("nyuv2", tasks, [])


def test_all_archs_and_weightings_run_the_grid_and_record_skips(tmp_path, capsys):
    """``--archs all --weightings all`` plans every registered pair; a pair the example refuses
    at parse time is recorded as skipped with its reason (not failed), left out of the tables
    and named in their notes; the tables put every method under every architecture."""
    from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS

    out = str(tmp_path)
    assert main(["run", FAKE, "--archs", "all", "--weightings", "all", "--seeds", "0", "--out", out, "--dry-run"]) == 0
    planned = len(ARCHITECTURES.names()) * len(WEIGHTINGS.names())
    assert f"{planned} run(s) to start" in capsys.readouterr().out

    assert main(["run", FAKE, "--archs", "all", "--weightings", "EW", "RGB", "--seeds", "0", "--out", out, "--jobs", "4"]) == 0
    records = grid.load_results(out)
    assert len(records) == 2 * len(ARCHITECTURES.names())
    by_status = {s: [r for r in records if r["status"] == s] for s in ("ok", "skipped", "failed")}
    assert not by_status["failed"]
    assert {r["config"]["arch"] for r in by_status["skipped"]} == {"MTAN"}
    assert all("the fake example has no stages" in r["skip_reason"] for r in by_status["skipped"])
    assert "skipped RGB__MTAN__seed0" in capsys.readouterr().err
    main(["run", FAKE, "--archs", "MTAN", "--weightings", "RGB", "--seeds", "0", "--out", out, "--retry-failed"])
    assert "skipping 1 run(s) with results" in capsys.readouterr().out  # skips are final: nothing reruns
    tables = build_tables(records)
    assert sorted(t.arch for t in tables) == sorted(a for a in ARCHITECTURES.names() if a != "MTAN")
    assert all([r.label for r in t.rows] == ["EW", "RGB"] and all(r.mr for r in t.rows) for t in tables)
    assert main(["table", out]) == 0
    written = open(os.path.join(out, "tables", "results.md")).read()
    assert "### MR per architecture" in written and "| RGB |" in written
    assert "skipped, RGB on MTAN: " in written


# ------------------------------------------------- end to end with the Trainer
def test_tiny_grid_end_to_end_resumes_and_renders(tmp_path):
    out = str(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    specs = grid.plan_runs(TINY, [grid.MethodSpec("EW"), grid.MethodSpec("RGB")], ["HPS"], [0, 1], ["--epochs", "2"])
    records = grid.run_grid(specs, out, env=env, jobs=2)
    assert [r["run_id"] for r in records] == [s.run_id for s in specs]
    assert [r["status"] for r in records] == ["ok"] * 4, [r["error"] for r in records]
    assert all(r["epochs_done"] == 2 and len(r["history"]) == 6 for r in records)  # train/val/test × 2

    # resume: only the run whose JSON is gone runs again
    gone = grid.result_path(out, specs[3])
    kept = {s.run_id: os.path.getmtime(grid.result_path(out, s)) for s in specs[:3]}
    os.remove(gone)
    rerun = grid.run_grid(specs, out, env=env)
    assert [r["run_id"] for r in rerun] == [specs[3].run_id] and rerun[0]["status"] == "ok"
    assert rerun[0]["command"][-2:] == ["--resume", os.path.join(grid.run_dir(out, specs[3]), "last.pt")]
    assert {s.run_id: os.path.getmtime(grid.result_path(out, s)) for s in specs[:3]} == kept
    # the same seed and settings give the same result
    assert rerun[0]["best"] == records[3]["best"]

    (table,) = build_tables(grid.load_results(out))
    assert [r.label for r in table.rows] == ["EW", "RGB"] and all(r.seeds == [0, 1] for r in table.rows)
    assert table.rows[0].mr is not None and table.rows[0].delta_m is None  # no STL runs: no Δm%
    assert main(["table", out]) == 0 and main(["plot", out]) == 0
    plots = os.listdir(os.path.join(out, "plots"))
    assert "curve_t0_mae_test.png" in plots and "delta_m_by_arch.png" not in plots  # no baseline, no Δm% plot


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in ("run", "table", "plot", "paper"))
    with pytest.raises(SystemExit, match="only make sense with 'run'"):
        main(["table", "x", "--", "--epochs", "1"])
