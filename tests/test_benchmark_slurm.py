"""``benchmark run --launcher slurm`` against a real one-node SLURM cluster (``.ci/slurm/start.sh``,
which ``.ci/run`` starts before the tests): a 2 weightings × 2 architectures × 2 seeds grid of
``fixtures/tiny_example.py``, one job preempted mid-run (``scancel --signal USR2``, what SLURM
sends before a time limit or a preemption) and requeued, which resumes from its ``last.pt``; the
tables equal those of the same grid run locally. Skips when no cluster answers, unless
``LIBMTL_RGB_REQUIRE_SLURM=1`` (set by ``.ci/run``), where that is a failure."""
import json
import os
import shutil
import subprocess
import time

import pytest

from LibMTL_rgb.benchmark import grid
from LibMTL_rgb.benchmark.__main__ import main

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = os.path.join(FIXTURES, "tiny_example.py")
GRID = ["--weightings", "EW", "RGB", "--archs", "HPS", "MMoE", "--seeds", "0", "1"]
# --img_size: MMoE's gates read the 8 inputs; --batch_delay: room to preempt a run between epochs
EXAMPLE_FLAGS = ["--", "--epochs", "3", "--batch_delay", "0.4", "--img_size", "8"]


def _cluster_problem() -> str:
    """Why no SLURM cluster can be used here ('' when one answers with an idle or mixed node)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (apt-get install slurm-wlm munge; .ci/slurm/start.sh)"
    try:
        states = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True,
                                timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    if not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no SLURM node is up (sinfo: {states or 'no answer'}); start one with .ci/slurm/start.sh (as root)"
    return ""


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("LIBMTL_RGB_REQUIRE_SLURM") == "1":
            pytest.fail("LIBMTL_RGB_REQUIRE_SLURM=1 but " + problem)
        pytest.skip(problem)


def _job_of(out: str, run_id: str) -> str:
    with open(os.path.join(out, "slurm", "jobs.json")) as handle:
        return json.load(handle)[run_id]


def _squeue(job: str, field: str = "%T") -> str:
    """``field`` of ``job`` in squeue (``%T`` state, ``%r`` reason), '' when it left the queue."""
    listing = subprocess.run(["squeue", "--noheader", "--array", f"--format=%i|{field}"], capture_output=True,
                             text=True, check=True).stdout
    return dict(line.split("|", 1) for line in listing.split()).get(job, "")


def _release(job: str) -> bool:
    """SLURM holds a requeued job ~2 minutes (reason BeginTime); as the cluster's admin, make it
    eligible now (repeated: an update right after the requeue may come before the hold)."""
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False, capture_output=True)
    return _squeue(job, "%r") != "BeginTime"


def _wait(condition, what: str, limit_s: float = 90.0, poll_s: float = 0.1):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


def test_grid_on_slurm_resumes_a_preempted_job_and_tables_equal_local(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local, remote = str(tmp_path / "local"), str(tmp_path / "slurm")
    assert main(["run", TINY, *GRID, "--out", local, "--jobs", "2", *EXAMPLE_FLAGS]) == 0

    assert main(["run", TINY, *GRID, "--out", remote, "--launcher", "slurm", *EXAMPLE_FLAGS]) == 0
    assert "submitted 8 job(s)" in capsys.readouterr().out
    victim = grid.plan_runs(TINY, [grid.MethodSpec("EW")], ["HPS"], [0])[0].run_id
    job = _job_of(remote, victim)
    last = os.path.join(remote, "runs", victim, "last.pt")
    _wait(lambda: os.path.isfile(last) and _squeue(job) == "RUNNING", f"{victim} to finish an epoch")
    # USR2 is what SLURM sends before the time limit or a preemption. (scancel may answer "Job can
    # not be altered now" for an array task although the signal is delivered: the requeue is what counts.)
    subprocess.run(["scancel", "--signal=USR2", job], capture_output=True)
    _wait(lambda: _squeue(job) == "PENDING", f"job {job} to be requeued", 120)
    assert not os.path.isfile(os.path.join(remote, "results", f"{victim}.json"))
    _wait(lambda: _release(job), f"job {job} to be released", 30, 1.0)

    # re-running the command while jobs are queued submits nothing new
    assert main(["run", TINY, *GRID, "--out", remote, "--launcher", "slurm", "--wait", "--poll", "1",
                 *EXAMPLE_FLAGS]) == 0
    assert "0 run(s) to submit" in capsys.readouterr().out
    assert main(["status", remote]) == 0
    status = capsys.readouterr().out
    assert "8 done (8 cells)" in status and f"{victim}" in status and job in status

    record = json.load(open(os.path.join(remote, "results", f"{victim}.json")))
    assert record["status"] == "ok" and record["epochs_done"] == 3
    assert record["command"][-2:] == ["--resume", last]  # the requeued job continued from last.pt
    assert "Resuming after epoch" in open(os.path.join(remote, "runs", victim, "stdout.log")).read()
    from LibMTL_rgb.benchmark.slurm import job_log_path

    assert "Requeued job" in open(job_log_path(remote, job, "out")).read()

    for out in (local, remote):
        assert main(["table", out, "--baseline", "none"]) == 0
    tables = [open(os.path.join(out, "tables", name)).read() for out in (local, remote)
              for name in ("results.csv", "results.tex")]
    assert tables[0] == tables[2] and tables[1] == tables[3]
    assert "EW" in tables[0] and "MMoE" in tables[0]


# ------------------------------------------------------------- without a cluster
FAKE = os.path.join(FIXTURES, "fake_example.py")


def test_slurm_options_become_submitit_parameters():
    from LibMTL_rgb.benchmark.__main__ import _parser, _slurm_options

    args = _parser().parse_args(["run", "toy", "--launcher", "slurm", "--partition", "gpu", "--gpus_per_run", "2",
                                 "--cpus-per-run", "8", "--mem", "32G", "--time", "240", "--account", "lab",
                                 "--qos", "high", "--slurm_arg", "constraint=a100", "--slurm_arg=--exclude=n1"])
    options = _slurm_options(args)
    assert options.nproc == 2
    params = options.executor_parameters()
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 2 and params["cpus_per_task"] == 8
    assert params["mem"] == "32G" and params["time"] == 240 and params["account"] == "lab" and params["qos"] == "high"
    assert params["additional_parameters"] == {"requeue": True, "constraint": "a100", "exclude": "n1"}
    assert params["signal_delay_s"] == 90  # USR2 90 s before the limit: submitit checkpoints and requeues
    bare = _slurm_options(_parser().parse_args(["run", "toy", "--launcher", "slurm"])).executor_parameters()
    assert "partition" not in bare and "gpus_per_node" not in bare and "mem" not in bare
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _slurm_options(_parser().parse_args(["run", "toy", "--slurm_arg", "constraint"]))


def test_multi_gpu_runs_start_under_torchrun_and_cells_checkpoint_to_themselves(tmp_path, capsys):
    import pickle

    from LibMTL_rgb.benchmark.slurm import GridCell

    spec = grid.plan_runs("ex.py", [grid.MethodSpec("RGB")], ["HPS"], [0])[0]
    assert spec.command("/o", "py", nproc=4)[:6] == ["py", "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc_per_node", "4"]
    assert spec.command("/o", "py", nproc=1)[:2] == ["py", "ex.py"]
    cell = GridCell(spec, str(tmp_path), "py", None, 4, 8)
    again = pickle.loads(pickle.dumps(cell.checkpoint()))  # what submitit dumps for the requeued job
    assert again.function.spec == spec and again.function.nproc == 4 and again.args == ()
    assert main(["run", FAKE, "--weightings", "RGB", "--seeds", "0", "--out", str(tmp_path), "--launcher", "slurm",
                 "--gpus_per_run", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) to submit" in out and "torch.distributed.run --standalone --nproc_per_node 2" in out


def test_status_of_a_local_grid(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["run", FAKE, "--weightings", "EW", "RGB", "--seeds", "0", "--out", out]) == 0
    assert main(["run", FAKE, "--weightings", "UW", "--seeds", "0", "--out", out, "--", "--fail"]) == 1
    os.remove(os.path.join(out, "results", "RGB__HPS__seed0.json"))
    capsys.readouterr()
    assert main(["status", out]) == 0
    text = capsys.readouterr().out
    states = {line.split()[0]: line.split()[1] for line in text.splitlines()[1:-1]}
    assert states == {"EW__HPS__seed0": "done", "UW__HPS__seed0": "failed", "RGB__HPS__seed0": "missing"}
    assert "1 done, 1 failed, 1 missing (3 cells)" in text
    with pytest.raises(SystemExit, match="no SLURM jobs recorded"):
        main(["cancel", out])
    with pytest.raises(SystemExit, match="no grid"):
        main(["status", str(tmp_path / "nothing")])
