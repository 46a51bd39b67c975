"""Research code that adds its own flags to ``LibMTL_args`` (issue 18): our flags that LibMTL
lacks yield to the user's; LibMTL's flags come first in ``--help``."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from LibMTL_rgb.config import LIBMTL_FLAGS, make_parser, prepare_args

# As public research code does: flags of its own on LibMTL's module-level parser.
RESEARCH_SCRIPT = """
from LibMTL_rgb.config import LibMTL_args, prepare_args
LibMTL_args.add_argument('--milestones', type=str, default='30,60', help='my milestones')
LibMTL_args.add_argument('--patience', type=int, default=10, help='early stopping')
mine = LibMTL_args.add_argument_group('mine')
mine.add_argument('--save_path', type=str, default='./out')
mine.add_argument('--T_max', type=float, default=2.5)
params = LibMTL_args.parse_args(['--milestones', '10,20', '--weighting', 'RGB', '--rgb_steps', '3'])
kwargs, optim_param, scheduler_param = prepare_args(params, verbose=False)
print(params.milestones, params.patience, params.save_path, params.T_max, kwargs['weight_args']['rgb_steps'])
"""


def test_a_research_script_adding_milestones_and_patience_runs():
    done = subprocess.run([sys.executable, "-c", RESEARCH_SCRIPT], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10,20", "10", "./out", "2.5", "3"]


def test_a_clash_with_libmtls_own_flags_is_still_an_error():
    parser = make_parser()
    with pytest.raises(argparse.ArgumentError):
        parser.add_argument("--lr", type=float, default=0.1)
    with pytest.raises(argparse.ArgumentError):
        parser.add_argument_group("mine").add_argument("--alpha", type=float)


def test_our_extra_flags_still_work_when_not_taken():
    params = make_parser().parse_args(["--scheduler", "reduce", "--patience", "7", "--min_lr", "1e-5"])
    assert prepare_args(params, verbose=False)[2]["patience"] == 7


def test_help_lists_libmtls_flags_first():
    parser = make_parser()
    flags = [a.dest for group in parser._action_groups for a in group._group_actions if a.option_strings and a.dest != "help"]
    is_libmtl = [dest in LIBMTL_FLAGS for dest in flags]
    first_ours = is_libmtl.index(False, 1 + max(i for i, d in enumerate(flags) if d in ("mode", "save_path", "load_path")))
    assert not any(is_libmtl[first_ours:]), [d for d, lib in zip(flags[first_ours:], is_libmtl[first_ours:]) if lib]
    text = parser.format_help()
    assert text.index("--kgamma") < text.index("--milestones") < text.index("--rgb_steps")
