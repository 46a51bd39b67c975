"""Distributed training (``LibMTL_rgb/distributed/``) against one process, on CPU with gloo.

Two processes, each on half of every batch, must end where one process on the whole batch
ends (float64, 1e-10): parameters, weighting state (buffers), ``train_loss_buffer``, task
weights and every train/test row of the history (evaluation dealt by batches, the last one
short), for every weighting in ``distributed_worker.CASES`` on HPS and MMoE, on the matrix
and on the Gramian path (``grad_method='gramian'``: chunks of ``G`` averaged over the
processes against the single process's autogram engine). The two processes must also agree
bit for bit. One spawn of 2 processes runs every case (``distributed_worker.worker``); the
references run in this process.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import distributed_worker as dw
from LibMTL_rgb import distributed
from LibMTL_rgb_examples.dense_metrics import SegMetric
from LibMTL_rgb.distributed import StridedBatches, interleave_batches, reduce_accumulator
from torch.utils.data import BatchSampler, SequentialSampler

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("float64_default_dtype")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(references, [rank0, rank1], paths)``."""
    tmp = tmp_path_factory.mktemp("distributed")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        references = {}
        for case in dw.CASES:
            save = str(tmp / "single") if case == dw.CHECKPOINT_CASE else None
            references[case.name] = dw.train_case(case, dw.SINGLE_BS, save)
        mp.start_processes(dw.worker, args=(dw.WORLD, str(tmp / "rendezvous"), str(tmp), str(tmp / "single")),
                           nprocs=dw.WORLD, join=True, start_method="spawn")
    finally:
        torch.set_default_dtype(previous)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(dw.WORLD)]
    return references, ranks, tmp


def assert_outcomes_close(got: dict, want: dict, tol: float = TOL, first_epoch: int = 0) -> None:
    """``first_epoch``: a resumed run holds the task weights of the epochs it trained only."""
    assert got["state"].keys() == want["state"].keys()
    for name, value in want["state"].items():
        if value.is_floating_point():
            torch.testing.assert_close(got["state"][name], value, rtol=0, atol=tol, msg=name)
        else:
            assert torch.equal(got["state"][name], value), name
    np.testing.assert_allclose(got["train_loss_buffer"], want["train_loss_buffer"], rtol=0, atol=tol)
    np.testing.assert_allclose(got["batch_weight"][:, first_epoch:], want["batch_weight"][:, first_epoch:], rtol=0, atol=tol)
    assert len(got["history"]) == len(want["history"])
    for row, expected in zip(got["history"], want["history"]):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            if key == "c_last_batch" and row["mode"] == "train":
                continue  # a training shard's last batch is half of the single-process one
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=0, abs=tol), key
            else:
                assert row[key] == value, key


def assert_bitwise_equal(first: dict, second: dict) -> None:
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name
    assert np.array_equal(first["train_loss_buffer"], second["train_loss_buffer"])
    assert first["history"] == second["history"]


@pytest.mark.parametrize("case", dw.CASES, ids=lambda c: c.name)
def test_two_processes_on_half_batches_equal_one_process(runs, case):
    references, ranks, _ = runs
    reference = references[case.name]
    for result in ranks:
        assert_outcomes_close(result[case.name], reference)
    assert_bitwise_equal(ranks[0][case.name], ranks[1][case.name])
    # the run moved: the comparison is not between two initial models
    initial = dw.build(case).model.state_dict()
    moved = max(float((reference["state"][k] - v).abs().max()) for k, v in initial.items()
                if v.is_floating_point() and v.shape == reference["state"][k].shape and v.numel())
    assert moved > 1e-3


def test_weighting_state_is_not_trivial(runs):
    """The compared state holds what the weightings learned (so equality means something)."""
    references, _, _ = runs
    rgb = references[dw.CASES[1].name]["state"]
    assert int(rgb["rgb_step_count"]) == dw.EPOCHS * dw.TRAIN_SIZE // dw.SINGLE_BS
    assert float(rgb["rgb_ema"].norm()) > 0.1
    famo = references["FAMO-HPS"]["state"]["famo_logits"]
    assert float(famo.abs().max()) > 1e-4
    dwa_weights = references["DWA-HPS"]["batch_weight"][:, -1, 0]
    assert float(np.abs(dwa_weights - 1).max()) > 1e-4
    adaptive = references[dw.CASES[2].name]["state"]
    assert not torch.isnan(adaptive["rgb_prev_losses"]).any()


def test_distributed_checkpoint_loads_in_one_process(runs):
    references, ranks, tmp = runs
    name = dw.CHECKPOINT_CASE.name
    trainer = dw.build(dw.CHECKPOINT_CASE)
    start = trainer.resume(str(tmp / f"run-{name}"))
    assert start == dw.EPOCHS
    for key, value in ranks[0][name]["state"].items():
        assert torch.equal(trainer.model.state_dict()[key], value), key
    assert not os.path.exists(tmp / f"run-{name}" / "rank1")  # rank 0 alone writes
    assert sorted(os.listdir(tmp / f"run-{name}")) == sorted(os.listdir(tmp / "single"))


def test_single_process_checkpoint_loads_in_every_process(runs):
    references, ranks, _ = runs
    want = references[dw.CHECKPOINT_CASE.name]["state"]
    for result in ranks:
        for key, value in want.items():
            assert torch.equal(result["loaded_single"][key], value), key


def test_distributed_resume_equals_an_uninterrupted_run(runs):
    references, ranks, _ = runs
    for result in ranks:
        assert_outcomes_close(result["resumed"], references[dw.CHECKPOINT_CASE.name], first_epoch=2)
        assert_bitwise_equal(result["resumed"], result[dw.CHECKPOINT_CASE.name])
        assert not result["resumed"]["batch_weight"][:, :2].any()  # it did resume after epoch 1


def test_replica_check_finds_a_perturbed_parameter(runs):
    _, ranks, _ = runs
    for result in ranks:
        assert result["check_same"] == "identical"
        assert "distributed replicas diverged" in result["check_perturbed"]
        assert "differs between rank" in result["check_perturbed"]


def test_a_shared_parameter_reached_on_one_rank_only_stays_identical_everywhere(runs):
    """Rank 0's forward reaches a shared layer that rank 1's does not (``.grad`` None there):
    every rank takes part in the same reductions (None counts as zeros), whether the
    weighting writes the shared gradient from per-task gradients (MGDA) or backpropagates a
    weighted loss (EW); ``--distributed_check`` compares the replicas after every step."""
    _, ranks, _ = runs
    for result in ranks:
        assert result["partly_reached"] == {"MGDA": "identical", "EW": "identical", "RGB-gramian": "identical"}


# ------------------------------------------------------------------ the Gramian path
def gramian_case_names() -> tuple[str, str, str, str]:
    """RGB on the matrix path, on the Gramian path, on it one parameter per chunk; UPGrad on it."""
    rgb = dw.Case("RGB", weight_args={"rgb_steps": 5})
    assert rgb in dw.CASES and all(case in dw.CASES for case in dw.GRAMIAN_CASES)
    return rgb.name, dw.GRAMIAN_CASES[0].name, dw.GRAMIAN_CASES[1].name, dw.GRAMIAN_CASES[2].name


def test_the_gramian_path_sends_the_chunks_of_g_once_then_the_combined_rows(runs):
    """What the Gramian path averages over the processes at each step: the [T, D_c] chunks of
    G (together the matrix path's [T, D], once: the Gramian of the global batch needs the
    cross-process terms; RGB's G d comes from the averaged chunks too) and the combined rows
    ([k, D]: RGB's direction and EMA, a torchjd method's update); the byte counter agrees."""
    _, ranks, _ = runs
    task_num, steps = len(dw.TASKS), dw.EPOCHS * dw.TRAIN_SIZE // dw.SINGLE_BS
    sizes = [p.numel() for p in dw.encoder().parameters()]
    dim = sum(sizes)
    per_parameter = [(task_num, size) for size in sizes]
    matrix, gramian, chunked, upgrad = gramian_case_names()
    for result in ranks:
        messages = result["messages"]
        assert messages[matrix] == [(task_num, dim)] * steps
        assert messages[gramian] == [(task_num, dim), (2, dim)] * steps
        assert messages[chunked] == (per_parameter + [(2, dim)]) * steps
        assert messages[upgrad] == [(task_num, dim), (1, dim)] * steps
        sent = result["task_grad_bytes"]  # float64
        assert sent[matrix] == steps * task_num * dim * 8
        assert sent[gramian] == sent[chunked] == sent[matrix] + steps * 2 * dim * 8
        assert sent[upgrad] == sent[matrix] + steps * dim * 8
        largest = result["largest_task_grad_message"]  # chunked: the largest parameter's slice, or RGB's 2 rows
        assert largest[matrix] == largest[gramian] == task_num * dim * 8
        assert largest[chunked] == max(task_num * max(sizes), 2 * dim) * 8 < largest[matrix]


def test_processes_with_unequal_free_memory_take_the_same_path_and_chunks(runs):
    """The default budget is read from each process's free memory: rank 0 finds the [T, D]
    matrix over it, rank 1 does not. Both take the Gramian path with rank 0's chunks (the
    smallest budget), equal one process (without the agreement, gloo aborted on the mismatched
    all-reduces)."""
    references, ranks, _ = runs
    _, gramian, chunked, _ = gramian_case_names()
    for result in ranks:
        assert result["unequal_budgets"]["path"] == "gramian"
        assert result["unequal_budgets"]["messages"] == result["messages"][chunked]
        assert_outcomes_close(result["unequal_budgets"], references[gramian])
    assert_bitwise_equal(ranks[0]["unequal_budgets"], ranks[1]["unequal_budgets"])


def test_sync_bn_is_refused_on_cpu_with_the_reason(runs):
    _, ranks, _ = runs
    for result in ranks:
        assert "needs CUDA" in result["sync_bn_cpu"]


def test_amp_runs_distributed_with_identical_replicas(runs):
    """bfloat16 autocast in 2 processes, replica checksums compared after every step (the run
    would have raised otherwise); both ranks end bit-identical, near the 1-process amp run."""
    _, ranks, _ = runs
    assert_bitwise_equal(ranks[0]["amp"], ranks[1]["amp"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        single = dw.train_case(dw.AMP_CASE, dw.SINGLE_BS, amp=True)
    finally:
        torch.set_default_dtype(previous)
    assert ranks[0]["amp"]["state"]["encoder.0.weight"].dtype == torch.float32
    for name, value in single["state"].items():
        torch.testing.assert_close(ranks[0]["amp"]["state"][name], value, rtol=0, atol=2e-2, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NCCL)")
def test_nccl_world_size_one_on_cuda_equals_cpu(runs, tmp_path):
    references, _, _ = runs
    mp.start_processes(dw.nccl_worker, args=(1, str(tmp_path / "rendezvous"), str(tmp_path / "cuda.pt")),
                       nprocs=1, join=True, start_method="spawn")
    result = torch.load(tmp_path / "cuda.pt", weights_only=False)
    assert_outcomes_close(result, references[dw.CHECKPOINT_CASE.name], tol=1e-9)
    assert_outcomes_close(result["gramian"], references[dw.GRAMIAN_CASES[0].name], tol=1e-9)
    assert result["sync_bn_layers"] == 1


# ------------------------------------------------------------------ no processes needed
def test_strided_batches_deal_each_batch_once():
    batches = BatchSampler(SequentialSampler(range(18)), 4, drop_last=False)
    dealt = [list(StridedBatches(batches, r, 2)) for r in range(2)]
    assert [len(StridedBatches(batches, r, 2)) for r in range(2)] == [3, 2] == [len(d) for d in dealt]
    assert interleave_batches(dealt) == list(batches)
    assert sorted(i for d in dealt for b in d for i in b) == list(range(18))


def test_interleave_falls_back_to_rank_order_when_lengths_do_not_fit():
    assert interleave_batches([[1, 2, 3], [4]]) == [1, 2, 3, 4]
    assert interleave_batches([[1, 3, 5], [2, 4]]) == [1, 2, 3, 4, 5]


def test_accumulators_are_what_reinit_assigns():
    metric = dw.RecordL1Metric()
    metric.update_fun(torch.ones(2, 1), torch.zeros(2, 1))
    assert sorted(distributed.accumulator_names(metric)) == ["bs", "record"]
    assert sorted(distributed.accumulator_names(dw.MSELoss())) == ["bs", "record"]
    assert sorted(distributed.accumulator_names(dw.L1Metric())) == ["bs", "record"]
    seg = SegMetric(3)
    assert sorted(distributed.accumulator_names(seg)) == ["bs", "confusion", "record"]  # not num_classes


def test_single_process_helpers_change_nothing():
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    assert distributed.global_losses(losses) is losses
    metric = dw.RecordL1Metric()
    metric.update_fun(torch.ones(2, 1), torch.zeros(2, 1))
    reduce_accumulator(metric)
    assert metric.record == [1.0] and metric.bs == [2]
    assert distributed.world_size() == 1 and distributed.is_main_process()
    assert distributed.min_over_processes(7) == 7


# ------------------------------------------------------------------ torchrun, unchanged example command
def test_torchrun_runs_an_example_unchanged(tmp_path):
    """``torchrun --standalone --nproc_per_node 2 examples/nyu/main.py ...`` on CPU (gloo) with
    ``--amp``: one log, the world size in it, files written once (by rank 0)."""
    import subprocess
    import sys

    from test_example_nyu import SIZE, TINY_MODEL, write_nyu

    root = write_nyu(tmp_path / "nyuv2", {"train": 8, "val": 3})
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(repo, "examples", "nyu", "main.py"), "--dataset_path", str(root),
               "--img_size", *map(str, SIZE), *TINY_MODEL, "--weighting", "RGB", "--epochs", "2", "--bs", "2",
               "--eval_bs", "2", "--amp", "--distributed_check", "--save_path", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2 (gloo)" in done.stdout
    assert done.stdout.count("Epoch: 0001 | TEST") == 1  # rank 1 prints nothing
    assert sorted(os.listdir(tmp_path / "run")) == ["best.pt", "history.csv", "last.pt", "summary.json"]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert int(state["model"]["rgb_step_count"]) == 2 * 2  # 8 samples, 2 processes, batch 2: 2 steps/epoch


# ------------------------------------------------------------------ a failing rank, usage errors
def _torchrun(tmp_path, *args: str, timeout: float = 300, mark: str = "[rank "):
    """``(returncode, stderr, seconds from the first stderr line holding mark to the exit)``
    of ``torchrun --nproc_per_node 2 examples/nyu/main.py *args``."""
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(repo, "examples", "nyu", "main.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(tmp_path / "stdout.txt", "w") as stdout:
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
        lines, marked = [], None
        for line in proc.stderr:
            lines.append(line)
            if marked is None and mark in line:
                marked = time.monotonic()
        proc.wait(timeout=timeout)
    after = None if marked is None else time.monotonic() - marked
    return proc.returncode, "".join(lines), after


def _read_by_rank_one_in_epoch_one_only(samples: int, bs: int) -> tuple[int, int]:
    """``(seed, sample)``: a training sample (not 0, which the reader checks at start) that no
    rank reads in epoch 0 and rank 1 only reads in epoch 1, and the first seed that has one."""
    from LibMTL_rgb.distributed import SeededSampler

    def read(seed: int, rank_: int, epoch: int) -> set:
        sampler = SeededSampler(samples, True, seed).shard(rank_, 2)
        sampler.set_epoch(epoch)
        keys = list(sampler)
        return {index for index, _ in keys[:len(keys) // bs * bs]}

    for seed in range(100):
        candidates = read(seed, 1, 1) - read(seed, 0, 0) - read(seed, 1, 0) - read(seed, 0, 1) - {0}
        if candidates:
            return seed, min(candidates)
    raise AssertionError("no such sample")


def test_a_failing_rank_ends_the_run_in_seconds_with_one_message_and_the_resume_hint(tmp_path):
    """Rank 1 reads a truncated .npy in epoch 1: the run ends (no hang in a barrier or an
    all-reduce), the error printed once with its rank and how to continue."""
    from test_example_nyu import SIZE, TINY_MODEL, write_nyu

    bs = 4
    root = write_nyu(tmp_path / "nyuv2", {"train": 10, "val": 2})
    seed, bad = _read_by_rank_one_in_epoch_one_only(10, bs)
    image = root / "train" / "image" / f"{bad}.npy"
    image.write_bytes(image.read_bytes()[:100])
    run = tmp_path / "run"
    returncode, stderr, seconds = _torchrun(
        tmp_path, "--dataset_path", str(root), "--img_size", *map(str, SIZE), *TINY_MODEL, "--weighting", "EW",
        "--epochs", "3", "--bs", str(bs), "--eval_bs", "2", "--seed", str(seed), "--num_workers", "0",
        "--save_path", str(run))
    assert returncode != 0
    lines = [line for line in stderr.splitlines() if f"{bad}.npy" in line and "error" in line]
    assert len(lines) == 1, stderr[-3000:]
    assert "[rank 1 of 2]" in lines[0] and f"continue with --resume {run}" in lines[0]
    assert "LibMTL_rgb" not in stderr and 'main.py", line' not in stderr  # no traceback of ours (torchrun adds its own)
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 0
    assert seconds < 60
    print(f"\ntorchrun with a failing rank 1: exited {seconds:.1f} s after the rank's error line")


def test_a_usage_error_under_torchrun_is_printed_once(tmp_path):
    returncode, stderr, _ = _torchrun(tmp_path, "--dataset_path", str(tmp_path), "--bs", "0")
    assert returncode != 0
    assert stderr.count("argument --bs") == 1, stderr[-3000:]


def test_a_loader_outside_the_contract_is_refused_not_left_whole(tmp_path):
    """Under a process group, an iterable that is neither a DataLoader nor a wrapper exposing
    ``wrapped_loader``/``with_loader`` raises (it would otherwise train on every sample on every
    rank); ``TaskColumnLoader`` is rebuilt around its loader's shard."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from LibMTL_rgb.distributed import LOADER_CONTRACT, shard_loader
    from LibMTL_rgb_examples.task_columns import TaskColumnLoader

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        data = [(torch.tensor([float(i)]), torch.tensor([float(i), -float(i)])) for i in range(6)]
        with pytest.raises(TypeError, match="wrapped_loader") as info:
            shard_loader([batch for batch in DataLoader(data, batch_size=2)], train=True)
        assert LOADER_CONTRACT in str(info.value)
        wrapped = TaskColumnLoader(DataLoader(data, batch_size=2, shuffle=True), ["a", "b"])
        sharded = shard_loader(wrapped, train=True)
        assert isinstance(sharded, TaskColumnLoader) and sharded.wrapped_loader is not wrapped.wrapped_loader
        assert type(sharded.wrapped_loader.sampler).__name__ == "DistributedSampler"
        assert sorted(float(x) for inputs, labels in sharded for x in inputs) == [float(i) for i in range(6)]
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------ seeded loaders, the callback
def test_seeded_shuffle_depends_on_seed_and_epoch_only_and_shards_cover_the_global_batches():
    from LibMTL_rgb.distributed import SeededSampler

    sampler = SeededSampler(10, True, seed=7)
    sampler.set_epoch(3)
    first = list(sampler)
    list(SeededSampler(10, True, seed=7))  # other draws in between change nothing
    torch.rand(5)
    again = SeededSampler(10, True, seed=7)
    again.set_epoch(3)
    assert list(again) == first and sorted(i for i, _ in first) == list(range(10))
    assert all(epoch == 3 for _, epoch in first)
    sampler.set_epoch(4)
    assert [i for i, _ in sampler] != [i for i, _ in first]
    shards = [again.shard(r, 2) for r in range(2)]
    # batch k of 2 samples on each rank = batch k of 4 samples in one process
    for k in range(2):
        together = sorted(key for s in shards for key in list(s)[2 * k:2 * k + 2])
        assert together == sorted(first[4 * k:4 * k + 4])


def test_seeded_samples_draw_per_sample_and_leave_the_main_stream_alone():
    from LibMTL_rgb.distributed import SeededSamples

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return float(torch.rand(())) + i

    samples = SeededSamples(Noisy(), seed=1)
    torch.manual_seed(0)
    value = samples[(2, 5)]
    after = torch.rand(())
    torch.manual_seed(0)
    assert torch.equal(torch.rand(()), after)  # the read drew nothing from the main stream
    assert samples[(2, 5)] == value and samples[(2, 6)] != value and samples[(1, 5)] != value - 1


def test_distributed_run_is_a_callback_whose_epoch_hooks_seed_the_loaders():
    from LibMTL_rgb.callbacks import Callback
    from LibMTL_rgb.distributed import DistributedRun, seeded_loader
    from LibMTL_rgb_examples.task_columns import TaskColumnLoader

    run = DistributedRun(torch.device("cpu"))
    assert isinstance(run, Callback)
    data = [(torch.tensor([float(i)]), torch.tensor([float(i), 0.0])) for i in range(8)]
    loader = TaskColumnLoader(seeded_loader(data, 4, True, seed=0), ["a", "b"])

    class Trainer:  # what the hooks read
        start_epoch = 2

    def order() -> list:
        return [float(x) for inputs, _ in loader for x in inputs]

    assert run.transform_loaders(Trainer(), loader, train=True) is loader  # one process: unchanged
    assert loader.wrapped_loader.sampler.epoch == 2
    at_two = order()
    run.on_train_epoch_start(Trainer(), 3)
    assert loader.wrapped_loader.sampler.epoch == 3 and order() != at_two
    run.on_train_epoch_start(Trainer(), 2)
    assert order() == at_two
    losses = torch.tensor([1.0, 2.0])
    assert run.transform_losses(Trainer(), losses) is losses
