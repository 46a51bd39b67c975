"""Every flag of every parser declares its range: non-finite floats and the values that used to
pass parsing and end in a traceback are refused when the flags are parsed (one argparse
``error:`` line naming the flag, exit code 2, no traceback)."""
import argparse

import pytest

from test_cli_validation import refusal as command_line_refusal

from example_loading import load_example
from LibMTL_rgb.config import make_parser
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS, hyperparameters_of

EXAMPLES = ("nyu", "cityscapes", "celeba", "qm9", "toy")
NO_DATA = ["--dataset_path", "/nonexistent/dataset", "--device", "cpu"]


def build_parser(name: str) -> argparse.ArgumentParser:
    return make_parser() if name == "general" else load_example(name)[0].build_parser()


def refusal(parser: argparse.ArgumentParser, argv, capsys) -> str:
    """The one error line of ``parser`` refusing ``argv`` (exit code 2, no traceback)."""
    return command_line_refusal(parser.parse_args, argv, capsys)


def float_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and getattr(a.type, "__name__", "") == "float"]


#: Flags that document a meaning for an infinite value (none today).
INFINITE_ALLOWED = {hp.name for registry in (WEIGHTINGS, ARCHITECTURES) for _, cls in registry.items()
                    for hp in hyperparameters_of(cls) if hp.allow_infinite}


@pytest.mark.parametrize("name", ("general", *EXAMPLES))
def test_every_float_flag_refuses_non_finite_values(name, capsys):
    parser = build_parser(name)
    flags = float_flags(parser)
    assert len(flags) >= 30  # LibMTL's optimiser/scheduler flags and every method's float options
    base = [] if name in ("general", "toy") else NO_DATA
    for action in flags:
        flag = action.option_strings[0]
        for value in ("inf", "-inf", "nan"):
            if action.dest in INFINITE_ALLOWED and value != "nan":
                continue
            line = refusal(parser, [*base, f"{flag}={value}"], capsys)
            assert f"argument {'/'.join(action.option_strings)}: must be a finite number" in line, line
            assert line.endswith(f"got {value}"), line


#: ``(example, flags, text of the error line)``: values that used to pass parsing and end in a
#: traceback (or an exit after the data was read).
REFUSED = [
    (example, flags, expected)
    for example in ("nyu", "cityscapes", "celeba", "qm9")
    for flags, expected in [
        (["--arch", "MMoE", "--num_experts", "0"], "argument --num_experts: must be >= 1, got 0"),
        (["--arch", "DSelect_k", "--num_experts", "-1"], "argument --num_experts: must be >= 1, got -1"),
        (["--rgb_adaptive", "--rgb_min_steps", "10", "--rgb_max_steps", "2"],
         "argument --rgb_min_steps: must be <= --rgb_max_steps (2), got 10"),
        (["--seed", "4294967296"], "argument --seed: must be in [0, 4294967295], got 4294967296"),
        (["--rgb_eps", "0"], "argument --rgb_eps: must be > 0, got 0"),
        (["--multi_input"], "argument --multi_input: "),
        (["--stl_task", "no_such_task"], "argument --stl_task: unknown task 'no_such_task'"),
    ]
    if not (example == "qm9" and flags[:2] in (["--arch", "MMoE"], ["--arch", "DSelect_k"]))  # no gated archs on QM9
    and not (example == "celeba" and flags[0] == "--stl_task")  # names from the dataset: tested below
] + [
    ("nyu", ["--stl_task", "segmentaton"], "unknown task 'segmentaton' (did you mean 'segmentation'?)"),
    ("nyu", ["--backbone_width", "0"], "argument --backbone_width: must be >= 1, got 0"),
    ("nyu", ["--img_size", "64"], "argument --img_size: takes H W (or 3 H W), got 64"),
    ("cityscapes", ["--img_size", "1", "64", "64"], "argument --img_size: takes H W (or 3 H W), got 1 64 64"),
    ("cityscapes", ["--img_size", "0", "64"], "argument --img_size: must be >= 1, got 0"),
    ("cityscapes", ["--tasks", "3", "--stl_task", "depth"], "known tasks: segmentation, instance, disparity"),
    ("cityscapes", ["--label_size", "0", "8"], "argument --label_size: must be >= 1, got 0"),
    ("celeba", ["--image_size", "0"], "argument --image_size: must be >= 8, got 0"),
    ("celeba", ["--width", "0"], "argument --width: must be >= 1, got 0"),
    ("qm9", ["--dim", "0"], "argument --dim: must be >= 1, got 0"),
    ("qm9", ["--edge_hidden", "0"], "argument --edge_hidden: must be >= 1, got 0"),
    ("qm9", ["--mp_steps", "0"], "argument --mp_steps: must be >= 1, got 0"),
    ("qm9", ["--s2s_steps", "0"], "argument --s2s_steps: must be >= 1, got 0"),
    ("qm9", ["--val_size", "0"], "argument --val_size: must be >= 1, got 0"),
    ("qm9", ["--test_size", "-5"], "argument --test_size: must be >= 1, got -5"),
    ("qm9", ["--target", "99"], "argument --target: --target takes distinct PyG QM9 columns"),
    ("qm9", ["--task_names", "symbol", "--stl_task", "muu"], "unknown task 'muu' (did you mean 'mu'?)"),
    ("toy", ["--loss_shift", "nan"], "argument --loss_shift: must be a finite number, got nan"),
    ("toy", ["--scale", "inf"], "argument --scale: must be a finite number > 0, got inf"),
]


@pytest.mark.parametrize("example, flags, expected", REFUSED, ids=[f"{e}:{' '.join(f)}" for e, f, _ in REFUSED])
def test_values_that_used_to_end_in_a_traceback_are_refused_when_parsed(example, flags, expected, capsys):
    base = [] if example == "toy" else NO_DATA
    assert expected in refusal(build_parser(example), [*base, *flags], capsys)


def test_celeba_stl_task_is_checked_against_the_attribute_file(tmp_path, capsys):
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_attr_celeba.txt").write_text("1\nSmiling Young\n000001.jpg 1 -1\n")
    parser = build_parser("celeba")
    line = refusal(parser, ["--dataset_path", str(tmp_path), "--stl_task", "Smilng"], capsys)
    assert "argument --stl_task: unknown task 'Smilng' (did you mean 'Smiling'?); known tasks: Smiling, Young" in line
    assert parser.parse_args(["--dataset_path", str(tmp_path), "--stl_task", "Young"]).stl_task == "Young"
