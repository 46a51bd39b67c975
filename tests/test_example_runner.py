"""The scaffolding the examples share: flags, device/grad-method resolution, dataset checks."""
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer
from LibMTL_rgb_examples.example_runner import example_parser, require_dataset, setup_run


def parse(*argv, defaults=None):
    return example_parser("test", defaults or {}).parse_args(["--device", "cpu", *argv])


def test_grad_method_defaults_to_the_loop_on_cpu_and_keeps_an_explicit_choice():
    _, kwargs, _, _ = setup_run(parse())
    assert kwargs["grad_method"] == "loop" and kwargs["device"] == torch.device("cpu")
    _, kwargs, _, _ = setup_run(parse("--grad_method", "batched", "--amp"))
    assert kwargs["grad_method"] == "batched" and kwargs["amp"] is True


def test_example_defaults_override_libmtl_defaults():
    params = parse(defaults={"weighting": "RGB", "rgb_steps": 30, "epochs": 7})
    assert (params.weighting, params.rgb_steps, params.epochs) == ("RGB", 30, 7)


def test_setup_run_gives_the_trainer_every_choice_of_the_flags():
    params = parse("--weighting", "RGB", "--rgb_steps", "3", "--optim", "sgd", "--lr", "0.5")
    _, kwargs, optim_param, scheduler_param = setup_run(params)
    # the Trainer(...) call of every example's main.py
    trainer = Trainer(synthetic.task_dict(2), params.weighting, params.arch, synthetic.encoder_class,
                      synthetic.decoders(2), params.rep_grad, params.multi_input, optim_param, scheduler_param,
                      save_path=params.save_path, load_path=params.load_path, **kwargs)
    assert type(trainer.model).__name__ == "MTLmodel[HPS+RGB]"
    assert trainer.model.grad_method == "loop" and trainer.kwargs["weight_args"]["rgb_steps"] == 3
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.optimizer.param_groups[0]["lr"] == 0.5


def test_require_dataset_says_what_is_missing_and_how_to_get_it(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(SystemExit, match=r"(?s)missing val.*download it here"):
        require_dataset("Demo", str(tmp_path), ["train", "val"], "download it here")
    with pytest.raises(SystemExit, match="give --dataset_path"):
        require_dataset("Demo", None, ["train"], "download it here")
    assert require_dataset("Demo", str(tmp_path), ["train"], "") == str(tmp_path)
