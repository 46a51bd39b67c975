"""LibMTL main's own example tests, replayed on our examples.

LibMTL main's ``tests/test_nyu.py`` and ``tests/test_qm9.py`` (github.com/median-research-group/LibMTL,
read with the fetch tool; nothing of them is in this repository) each parse ``LibMTL_args`` once
into one module-level ``params``, and every test function sets a few of its attributes and calls
the example's ``main(params)`` — with ``pytest.raises(ValueError)`` around the calls LibMTL
refuses. Attributes stay set for the later calls, test functions included (they run in file
order). Here each such call is one *step*: the attributes it sets and what it expects. A test
function of LibMTL is one test here; it replays every earlier step's attributes, turns the
resulting ``params`` into our example's command line (our ``main`` takes ``argv``, LibMTL's a
``Namespace``) and runs its own calls on tiny fixtures (``tests/test_example_nyu.py``'s and
``tests/test_example_qm9.py``'s).

Outcomes: ``RUNS`` (both libraries train and evaluate), ``REFUSED`` (both refuse: LibMTL with a
``ValueError``; ours with a ``ValueError`` or, for a flag value out of range, the parser's exit
with a message), ``RUNS_HERE`` (LibMTL refuses, we run on purpose: each is listed, with its
reason, in docs/migrating_from_libmtl.md, which the last test checks).

Not replayed: ``params.train_mode = 'trainval'`` in test_nyu.py (LibMTL's NYUv2 example has no such
flag and ignores it), and ``test_office31.py``, ``test_office_home.py``, ``test_pawsx.py`` (there are
no Office-31, Office-Home or PAWS-X examples here).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest

from example_loading import load_example
from test_example_nyu import TINY_MODEL, write_nyu
from test_example_qm9 import make_qm9_root

RUNS, REFUSED, RUNS_HERE = "runs", "refused", "runs here"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migrating_from_libmtl.md"
NYU_SIZE = (16, 16)
#: LibMTL_args's defaults that differ from our examples' (the paper's RGB setting).
LIBMTL_DEFAULTS = {"weighting": "EW", "arch": "HPS", "rep_grad": False, "multi_input": False}

Step = tuple[str, str, dict[str, Any]]  # (LibMTL test function, outcome, attributes it sets first)

MGDA_STEPS: list[Step] = [("test_MGDA", RUNS, {"rep_grad": rep_grad, "weighting": "MGDA", "mgda_gn": gn})
                          for gn in ("none", "l2", "loss", "loss+") for rep_grad in (True, False)]
#: The weighting tests test_nyu.py and test_qm9.py share, in their order (test_EW_aug apart).
WEIGHTING_STEPS: list[Step] = [
    ("test_UW", RUNS, {"rep_grad": False, "weighting": "UW"}),
    ("test_RLW", RUNS, {"rep_grad": False, "weighting": "RLW"}),
    ("test_DWA", RUNS, {"rep_grad": False, "weighting": "DWA", "epochs": 4}),
    ("test_GLS", RUNS, {"epochs": 1, "rep_grad": False, "weighting": "GLS"}),
    *MGDA_STEPS,
    ("test_MGDA", REFUSED, {"mgda_gn": "666"}),
    ("test_CAGrad", RUNS, {"rep_grad": False, "weighting": "CAGrad"}),
    ("test_CAGrad", RUNS, {"rescale": 0}),
    ("test_CAGrad", RUNS, {"rescale": 2}),
    ("test_CAGrad", REFUSED, {"rescale": 3}),
    ("test_CAGrad", RUNS_HERE, {"rep_grad": True}),
    ("test_GradDrop", RUNS, {"rep_grad": True, "weighting": "GradDrop"}),
    ("test_GradDrop", RUNS_HERE, {"rep_grad": False}),
    ("test_PCGrad", RUNS, {"rep_grad": False, "weighting": "PCGrad"}),
    ("test_PCGrad", RUNS_HERE, {"rep_grad": True}),
    ("test_Nash_MTL", RUNS, {"rep_grad": False, "weighting": "Nash_MTL", "update_weights_every": 2}),
    ("test_Nash_MTL", RUNS_HERE, {"rep_grad": True}),
    ("test_GradVac", RUNS, {"rep_grad": False, "weighting": "GradVac"}),
    ("test_GradVac", RUNS_HERE, {"rep_grad": True}),
    ("test_GradNorm", RUNS, {"rep_grad": False, "weighting": "GradNorm", "epochs": 4}),
    ("test_GradNorm", RUNS, {"rep_grad": True}),
    ("test_IMTL", RUNS, {"epochs": 1, "rep_grad": False, "weighting": "IMTL"}),
    ("test_IMTL", RUNS, {"rep_grad": True}),
]
NATIVE_IMG = [3, *NYU_SIZE]  # LibMTL's tests set img_size to the images' own size
NYU_STEPS: list[Step] = [
    ("test_EW", RUNS, {"epochs": 1, "aug": False, "train_bs": 2, "test_bs": 2, "rep_grad": False}),
    ("test_EW_aug", RUNS, {"aug": True, "rep_grad": False}),
    ("test_UW", RUNS, {"aug": False, **WEIGHTING_STEPS[0][2]}),  # test_EW_aug turns aug off after its call
    *WEIGHTING_STEPS[1:],
    ("test_MTAN", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "MTAN"}),
    ("test_MTAN_CAGrad", RUNS, {"rep_grad": False, "arch": "MTAN", "weighting": "CAGrad", "rescale": 1}),
    ("test_LTB", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "LTB"}),
    ("test_Cross_stitch", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "Cross_stitch"}),
    ("test_CGC", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "CGC", "img_size": NATIVE_IMG,
                        "num_experts": [1, 1, 1, 1]}),
    ("test_PLE", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "PLE", "img_size": NATIVE_IMG,
                        "num_experts": [1, 1, 1, 1]}),
    ("test_PLE_CAGrad", RUNS, {"rep_grad": False, "arch": "PLE", "img_size": NATIVE_IMG, "num_experts": [1, 1, 1, 1],
                               "weighting": "CAGrad", "rescale": 1}),
    ("test_MMoE", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "MMoE", "img_size": NATIVE_IMG,
                         "num_experts": [2]}),
    ("test_MMoE_CAGrad", RUNS, {"rep_grad": False, "arch": "MMoE", "img_size": NATIVE_IMG, "num_experts": [2],
                                "weighting": "CAGrad", "rescale": 1}),
    ("test_DSelect_k", RUNS, {"rep_grad": False, "weighting": "EW", "arch": "DSelect_k", "img_size": NATIVE_IMG,
                              "num_experts": [2]}),
]
QM9_STEPS: list[Step] = [
    ("test_EW", RUNS, {"epochs": 1, "bs": 2, "target": [0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11], "rep_grad": False}),
    *WEIGHTING_STEPS,
]


def command_line(params: dict[str, Any]) -> list[str]:
    """LibMTL's ``params`` attributes as our flags: a true boolean is its flag, a list its values."""
    argv: list[str] = []
    for name, value in params.items():
        if isinstance(value, bool):
            argv += [f"--{name}"] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [f"--{name}", *map(str, value)]
        else:
            argv += [f"--{name}", str(value)]
    return argv


def calls_of(steps: list[Step], test_name: str) -> list[tuple[str, dict[str, Any]]]:
    """``test_name``'s calls: each one's outcome and the full ``params`` (every earlier step's
    attributes applied over LibMTL_args's defaults), as LibMTL's shared ``params`` has them, but
    for one rule: what a refused call sets (``mgda_gn = '666'``, ``rescale = 3``) is undone after
    it. LibMTL keeps it, and never reads it again (later calls use other weightings, or CAGrad
    with ``rep_grad``, which LibMTL refuses before reading ``rescale``); our parser checks every
    flag's range whatever the weighting, so keeping it would refuse every later call."""
    params: dict[str, Any] = dict(LIBMTL_DEFAULTS)
    calls = []
    for name, outcome, attributes in steps:
        before = dict(params)
        params.update(attributes)
        if name == test_name:
            calls.append((outcome, dict(params)))
        if outcome == REFUSED:  # our parser would refuse the out-of-range value whatever the weighting
            params = before
    assert calls, test_name
    return calls


def libmtl_test_functions(steps: list[Step]) -> list[str]:
    return list(dict.fromkeys(name for name, _, _ in steps))


def replay(main: Callable, fixture_flags: list[str], steps: list[Step], test_name: str, run_root: Path,
           capsys: pytest.CaptureFixture) -> None:
    for call, (outcome, params) in enumerate(calls_of(steps, test_name)):
        argv = [*command_line(params), *fixture_flags, "--save_path", str(run_root / f"call{call}")]
        if outcome == REFUSED:
            capsys.readouterr()
            with pytest.raises((ValueError, SystemExit)) as refusal:
                main(argv)
            message = f"{refusal.value} {capsys.readouterr().err}"
            refused_flags = [name for name, value in params.items() if str(value) in ("666", "3")]
            assert refused_flags and all(name in message for name in refused_flags), message
            continue
        trainer = main(argv)
        history = trainer.meter.history
        assert [row["mode"] for row in history].count("train") == params["epochs"], params
        assert history[-1]["mode"] == "test"
        losses = [value for row in history for key, value in row.items() if key.endswith("_loss")]
        assert losses and all(math.isfinite(v) for v in losses), params


@pytest.fixture(scope="module")
def nyu(tmp_path_factory) -> tuple[Callable, list[str]]:
    root = write_nyu(tmp_path_factory.mktemp("libmtl_nyu") / "nyuv2", {"train": 2, "val": 2}, size=NYU_SIZE)
    flags = ["--dataset_path", str(root), "--num_workers", "0", *TINY_MODEL]
    return load_example("nyu")[0].main, flags


@pytest.fixture(scope="module")
def qm9(tmp_path_factory) -> tuple[Callable, list[str]]:
    root = make_qm9_root(tmp_path_factory.mktemp("libmtl_qm9") / "qm9", count=12)
    flags = ["--dataset_path", str(root), "--val_size", "2", "--test_size", "2", "--dim", "4",
             "--edge_hidden", "4", "--num_workers", "0", "--device", "cpu"]
    return load_example("qm9")[0].main, flags


@pytest.mark.parametrize("test_name", libmtl_test_functions(NYU_STEPS))
def test_libmtl_test_nyu(nyu, test_name, tmp_path, capsys):
    main, flags = nyu
    # the images' size unless the step sets LibMTL's img_size (then the same size, as [3, H, W])
    calls_set_size = any("img_size" in params for _, params in calls_of(NYU_STEPS, test_name))
    replay(main, flags if calls_set_size else [*flags, "--img_size", *map(str, NYU_SIZE)], NYU_STEPS, test_name,
           tmp_path, capsys)


@pytest.mark.parametrize("test_name", libmtl_test_functions(QM9_STEPS))
def test_libmtl_test_qm9(qm9, test_name, tmp_path, capsys):
    replay(*qm9, QM9_STEPS, test_name, tmp_path, capsys)


def test_what_we_run_and_libmtl_refuses_is_in_the_guide():
    """The guide's list of LibMTL test calls we run on purpose is exactly the RUNS_HERE steps."""
    section = GUIDE.read_text().split("## LibMTL's own tests", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `test_")}
    runs_here = {name for steps in (NYU_STEPS, QM9_STEPS) for name, outcome, _ in steps if outcome == RUNS_HERE}
    assert runs_here and listed == runs_here
