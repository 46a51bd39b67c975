"""``benchmarks/train_step.py --paths`` and ``memory.py --paths`` (issue 22): EW, the
per-task-gradient floor and Gramian methods on both gradient paths, on the CelebA and NYUv2
example models, at the smallest sizes."""
import argparse
import os
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import gradient_paths  # noqa: E402
import memory  # noqa: E402

TINY = dict(img_size=[8, 8], bs=2, model_width=2, backbone_depth=18, seed=0)


def tiny_cell(example: str, tasks: int, arch: str = "HPS") -> gradient_paths.Cell:
    return gradient_paths.Cell(example, arch, tasks, gradient_paths.example_sizes(example, argparse.Namespace(**TINY)))


def test_every_case_steps_on_the_path_it_names_and_the_time_row_has_every_ratio():
    cell = tiny_cell("celeba", 3)
    cases = gradient_paths.cases_for(["RGB", "UPGrad"])
    try:
        timings, paths, dim = gradient_paths.time_cell(cell, cases, repeats=1, warmup=1)
    finally:
        cell.close()
    assert set(timings) == {c.label for c in cases}
    assert paths["RGB chunks"] == paths["UPGrad chunks"] == paths["RGB engine"] == paths["UPGrad engine"] == "gramian"
    assert paths["RGB matrix"] == paths["UPGrad matrix"] == "matrix"
    row = gradient_paths.time_row("HPS", dim, timings, cases)
    assert len(row) == len(gradient_paths.time_header(cases))
    assert all(re.fullmatch(r"\d+\.\d\d", value) for value in row[3:]), row
    assert dim > 0


def test_celeba_takes_its_first_t_attributes_and_nyu_gets_t_synthetic_tasks_with_fresh_heads():
    celeba = tiny_cell("celeba", 5)
    nyu = tiny_cell("nyu", 5)
    try:
        assert list(celeba.task_dict) == list(celeba.recorded.arguments["task_dict"])[:5]
        assert list(nyu.task_dict) == ["segmentation_0", "depth_1", "normal_2", "segmentation_3", "depth_4"]
        assert nyu.gts["depth_4"] is nyu.recorded.gts["depth"]
        first = [p for p in nyu.decoders["segmentation_0"].parameters() if p.dim() > 1][0]
        copy = [p for p in nyu.decoders["segmentation_3"].parameters() if p.dim() > 1][0]
        assert first.shape == copy.shape and not torch.equal(first, copy)  # re-initialised, not shared
        step, model = nyu.step(gradient_paths.cases_for(["RGB"])[-1])
        step()
        assert model.task_num == 5 and gradient_paths.taken_path(model) == "gramian"
    finally:
        celeba.close()
        nyu.close()


def test_a_memory_worker_reports_the_step_peak_and_the_path_taken():
    config = dict(device="cpu", seed=0, kind="path", example="celeba", arch="HPS", tasks=2, methods=["RGB"],
                  sizes=TINY, case=3)  # RGB gramian
    result = memory.measure_full(config)
    assert result["path"] == "gramian" and result["peak_extra"] >= 0 and result["resident"] > 0


def test_an_unknown_gramian_method_is_refused():
    args = argparse.Namespace(gramian_methods=["EW"], task_counts=[2], bs=None, model_width=None)
    with pytest.raises(SystemExit, match="do not take the Gramian path"):
        gradient_paths.check_path_flags(args)


def test_the_performance_page_lists_exactly_the_methods_that_take_the_gramian_path():
    page = (Path(__file__).resolve().parents[1] / "docs" / "performance.md").read_text()
    line = next(line for line in page.splitlines() if line.startswith("Methods that take the Gramian path:"))
    listed = set(re.findall(r"`([A-Za-z_]+)`", line))
    assert listed == set(gradient_paths.gramian_methods())
