"""Every bad flag is refused when the flags are parsed, before any data is read: one argparse
``error:`` line, exit code 2, no traceback. The examples are run with a dataset path that does
not exist, so reaching the data would give another message (and exit code 1)."""
import os
import subprocess
import sys

import pytest
import torch

import synthetic
from example_loading import load_example
from LibMTL_rgb import Trainer
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS, hyperparameters_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_DATA = ["--dataset_path", "/nonexistent/dataset", "--device", "cpu"]


@pytest.fixture(scope="module")
def nyu_main():
    return load_example("nyu")[0].main


@pytest.fixture(scope="module")
def toy_main():
    return load_example("toy")[0].main


def refusal(main, argv, capsys) -> str:
    """The one error line of a refused command line (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def out_of_range(hp) -> str:
    """A value just outside ``hp``'s declared range."""
    if hp.minimum is not None:
        return str(hp.value_type()(hp.minimum if hp.exclusive_minimum else hp.minimum - 1))
    return str(hp.value_type()(hp.maximum if hp.exclusive_maximum else hp.maximum + 1))


@pytest.mark.parametrize("flag, value, expected", [
    ("--epochs", "0", "argument --epochs: must be >= 1, got 0"),
    ("--bs", "0", "argument --bs/--train_bs: must be >= 1, got 0"),
    ("--eval_bs", "-2", "argument --eval_bs/--test_bs: must be >= 1, got -2"),
    ("--num_workers", "-1", "argument --num_workers: must be >= 0"),
    ("--lr", "0", "argument --lr: must be > 0, got 0"),
    ("--lr", "nan", "argument --lr: must be a finite number > 0, got nan"),
    ("--lr", "inf", "argument --lr: must be a finite number > 0, got inf"),
    ("--weight_decay", "-1e-5", "argument --weight_decay: must be >= 0"),
    ("--momentum", "-0.9", "argument --momentum: must be >= 0"),
    ("--gamma", "0", "argument --gamma: must be > 0"),
    ("--step_size", "0", "argument --step_size: must be >= 1"),
    ("--seed", "-1", "argument --seed: must be in [0, 4294967295], got -1"),
    ("--seed", "4294967296", "argument --seed: must be in [0, 4294967295], got 4294967296"),
    ("--diagnostics_every", "0", "argument --diagnostics_every: must be >= 1"),
    ("--nonfinite", "ignore", "argument --nonfinite: invalid choice"),
    ("--weighting", "rgb", "argument --weighting: unknown weighting 'rgb' (did you mean 'RGB'?); known weightings: "),
    ("--arch", "hsp", "argument --arch: unknown architecture 'hsp' (did you mean 'HPS'?); known architectures: "),
    ("--device", "cuda:0" if not torch.cuda.is_available() else "cuda:99", "argument --device: "),
    ("--device", "gpu0", "argument --device: 'gpu0' is not a device name"),
])
def test_example_flags_are_checked_when_parsed(nyu_main, capsys, flag, value, expected):
    assert expected in refusal(nyu_main, [*NO_DATA, f"{flag}={value}"], capsys)


def ranged_hyperparameters():
    seen = {}
    for registry in (WEIGHTINGS, ARCHITECTURES):
        for _, cls in registry.items():
            for hp in hyperparameters_of(cls):
                if hp.range_text() is not None:
                    seen.setdefault(hp.name, hp)
    return sorted(seen.values(), key=lambda hp: hp.name)


def test_every_numeric_method_option_declares_its_range():
    unranged = [hp.name for registry in (WEIGHTINGS, ARCHITECTURES) for _, cls in registry.items()
                for hp in hyperparameters_of(cls)
                if hp.choices is None and not isinstance(hp.default, bool) and hp.value_type() in (int, float)
                and hp.range_text() is None]
    assert unranged == []


@pytest.mark.parametrize("hp", ranged_hyperparameters(), ids=lambda hp: hp.name)
def test_every_method_option_is_range_checked_when_parsed(nyu_main, capsys, hp):
    bad = out_of_range(hp)
    line = refusal(nyu_main, [*NO_DATA, f"--{hp.name}={bad}"], capsys)
    assert f"argument --{hp.name}: must be {hp.range_text()}, got {bad}" in line


def test_invalid_combinations_are_refused(nyu_main, capsys, tmp_path):
    assert "--weighting RGB combines shared-parameter gradients and cannot run with --rep_grad" in \
        refusal(nyu_main, [*NO_DATA, "--weighting", "RGB", "--rep_grad"], capsys)
    assert "--mode test evaluates saved weights: give --load_path" in refusal(nyu_main, [*NO_DATA, "--mode", "test"], capsys)
    qm9_main = load_example("qm9")[0].main
    assert "argument --arch: MTAN cannot run on this example: it runs the encoder stage by stage" in \
        refusal(qm9_main, [*NO_DATA, "--arch", "MTAN"], capsys)
    assert "argument --arch: MMoE cannot run on this example: its gates read the flattened input sample" in \
        refusal(qm9_main, [*NO_DATA, "--arch", "MMoE"], capsys)


def test_output_directories_are_checked_before_data_loading(nyu_main, capsys, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert f"argument --save_path: {a_file} is a file, not a directory" in \
        refusal(nyu_main, [*NO_DATA, "--save_path", str(a_file)], capsys)
    assert f"lies under {a_file}, which is a file" in refusal(nyu_main, [*NO_DATA, "--save_path", str(a_file / "run")], capsys)
    assert "argument --log_dir: " in refusal(nyu_main, [*NO_DATA, "--log_dir", str(a_file)], capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_save_path_is_refused(nyu_main, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "is not writable" in refusal(nyu_main, [*NO_DATA, "--save_path", str(locked / "run")], capsys)


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    """A finished 1-epoch RGB run directory (best.pt, last.pt)."""
    run_dir = tmp_path_factory.mktemp("rgb_run")
    torch.manual_seed(0)
    trainer = Trainer(synthetic.task_dict(2), "RGB", "HPS", synthetic.encoder_class, synthetic.decoders(2), False,
                      False, {"optim": "adam", "lr": 1e-3}, save_path=str(run_dir), device="cpu")
    trainer.train(*synthetic.loaders(2, train_size=32), epochs=1)
    return run_dir


def test_checkpoint_flags_are_checked_before_data_loading(nyu_main, capsys, tmp_path, rgb_run):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    cases = [
        (["--resume", str(tmp_path / "missing")], "argument --resume: no checkpoint to resume from"),
        (["--resume", str(not_a_checkpoint)], "is not a checkpoint this library can read"),
        (["--resume", str(rgb_run / "best.pt")], "holds model weights (a state_dict, like best.pt), not a training state"),
        (["--resume", str(rgb_run), "--weighting", "EW"], "was trained with --weighting RGB; you passed EW"),
        (["--resume", str(rgb_run), "--weighting", "RGB", "--arch", "MTAN"], "was trained with --arch HPS; you passed MTAN"),
        (["--resume", str(rgb_run), "--weighting", "RGB", "--epochs", "0"], "argument --epochs: must be >= 1"),
        (["--resume", str(rgb_run), "--load_path", str(rgb_run)], "either --resume"),
        (["--load_path", str(rgb_run), "--weighting", "DWA"], "argument --load_path: checkpoint"),
        (["--load_path", str(not_a_checkpoint)], "argument --load_path: "),
    ]
    for argv, expected in cases:
        assert expected in refusal(nyu_main, [*NO_DATA, *argv], capsys), argv


def test_toy_flags_are_checked_before_the_compute(toy_main, capsys, tmp_path):
    for argv, expected in [
        (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["--scale", "0"], "argument --scale: must be > 0"),
        (["--weighting", "ew"], "did you mean 'EW'?"),
        (["--compare", "EW,rgb"], "did you mean 'RGB'?"),
        (["--FAMO_w_lr", "0"], "argument --FAMO_w_lr: must be > 0, got 0"),
        (["--out", str(tmp_path / "toy.xyz")], "matplotlib cannot write .xyz"),
        (["--out", str(tmp_path / "toy")], "matplotlib cannot write files without an extension"),
        (["--device", "cuda:7" if not torch.cuda.is_available() else "nonsense"], "argument --device: "),
        (["--resume", str(tmp_path / "missing")], "argument --resume: no checkpoint at"),
    ]:
        assert expected in refusal(toy_main, argv, capsys), argv


def test_toy_out_directory_gets_the_default_file_name(toy_main, tmp_path):
    toy_main(["--weighting", "EW", "--steps", "2", "--starts", "0,0", "--out", str(tmp_path)])
    assert os.listdir(tmp_path) == ["toy_EW.png"]


def test_command_line_refusal_is_one_line_exit_2_no_traceback():
    """The same through a real process (one: each start imports torch; the in-process tests
    above see the same parser)."""
    expected = "main.py: error: argument --weighting: unknown weighting 'rgb'"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples/toy/main.py"), "--weighting", "rgb"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(expected)
    assert sum("error:" in line for line in done.stderr.splitlines()) == 1
