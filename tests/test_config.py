"""Command line: LibMTL's flags, method flags generated from the registries, prepare_args."""
import pytest

from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter, Registry, hyperparameters_of


def parse(*argv):
    return make_parser().parse_args(list(argv))


def test_libmtl_general_flags_and_defaults():
    params = parse()
    assert (params.mode, params.seed, params.weighting, params.arch, params.optim) == ("train", 0, "EW", "HPS", "adam")
    assert params.lr == 1e-4 and params.weight_decay == 1e-5 and params.scheduler is None
    assert params.rep_grad is False and params.multi_input is False


def test_rgb_flags_reach_weight_args():
    params = parse("--weighting", "RGB", "--rgb_steps", "7", "--rgb_lambda", "1", "--rgb_adaptive", "--rgb_solver", "exact")
    kwargs, optim_param, scheduler_param = prepare_args(params, verbose=False)
    args = kwargs["weight_args"]
    assert args["rgb_steps"] == 7 and args["rgb_lambda"] == 1.0 and args["rgb_adaptive"] is True
    assert args["rgb_solver"] == "exact" and args["rgb_mu"] == 0.9 and args["rgb_interval"] == 1
    assert set(args) == {hp.name for hp in hyperparameters_of(WEIGHTINGS.get("RGB"))}
    assert kwargs["arch_args"] == {}
    assert optim_param == {"optim": "adam", "lr": 1e-4, "weight_decay": 1e-5} and scheduler_param is None


def test_ew_gets_no_rgb_args():
    kwargs, _, _ = prepare_args(parse("--weighting", "EW", "--rgb_steps", "3"), verbose=False)
    assert kwargs["weight_args"] == {}


@pytest.mark.parametrize("argv, expected", [
    (["--scheduler", "step", "--step_size", "10", "--gamma", "0.1"], {"scheduler": "step", "step_size": 10, "gamma": 0.1}),
    (["--scheduler", "exp", "--gamma", "0.9"], {"scheduler": "exp", "gamma": 0.9}),
    (["--scheduler", "multistep", "--milestones", "42", "45", "--gamma", "0.7"],
     {"scheduler": "multistep", "milestones": [42, 45], "gamma": 0.7}),
    (["--scheduler", "none"], None),
    (["--scheduler", "cos", "--T_max", "5"], {"scheduler": "cos", "T_max": 5, "eta_min": 0.0}),
    (["--scheduler", "reduce", "--patience", "3"], {"scheduler": "reduce", "mode": "max", "factor": 0.5, "patience": 3, "min_lr": 0.0}),
])
def test_scheduler_params(argv, expected):
    _, _, scheduler_param = prepare_args(parse(*argv), verbose=False)
    assert scheduler_param == expected


def test_sgd_gets_momentum():
    _, optim_param, _ = prepare_args(parse("--optim", "sgd", "--momentum", "0.9"), verbose=False)
    assert optim_param["momentum"] == 0.9


def test_unknown_method_names_are_clear_errors():
    params = parse()
    params.weighting = "XYZ"  # past the parser's own check (tests/test_cli_validation.py)
    with pytest.raises(ValueError, match="unknown weighting 'XYZ'; known weightings: .*RGB"):
        prepare_args(params, verbose=False)
    params = parse()
    params.arch = "hsp"
    with pytest.raises(ValueError, match="unknown architecture 'hsp' \\(did you mean 'HPS'\\?\\); known architectures: .*HPS"):
        prepare_args(params, verbose=False)


def test_bad_flag_values_exit(capsys):
    with pytest.raises(SystemExit):
        parse("--rgb_steps", "five")
    with pytest.raises(SystemExit):
        parse("--rgb_solver", "newton")
    assert "invalid" in capsys.readouterr().err


def test_help_explains_every_flag():
    parser = make_parser()
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    for hp in hyperparameters_of(WEIGHTINGS.get("RGB")):
        assert f"--{hp.name}" in text


def test_registry_rejects_conflicting_names_and_collects_inherited_hyperparameters():
    registry = Registry("thing")

    class A:
        hyperparameters = (Hyperparameter("x", 1, "x"),)

    class B(A):
        hyperparameters = (Hyperparameter("y", 2, "y"),)

    registry.register(A)
    registry.register(A)  # idempotent
    with pytest.raises(ValueError, match="already registered"):
        registry.register(B, name="A")
    assert [hp.name for hp in hyperparameters_of(B)] == ["y", "x"]
    assert registry.get(B) is B and "A" in registry


def test_hyperparameter_ranges_refused_at_parse_time(capsys):
    from LibMTL_rgb.config import make_parser

    parser = make_parser()
    for flag, bad in [("--rgb_lr", "0"), ("--rgb_lambda", "-1"), ("--rgb_mu", "1"), ("--rgb_steps", "-1")]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([flag, bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: must be" in err and "Traceback" not in err
    assert parser.parse_args(["--rgb_mu", "0.5", "--rgb_lambda", "0"]).rgb_mu == 0.5
