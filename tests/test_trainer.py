"""The Trainer end to end on a tiny synthetic regression problem (CPU, seconds)."""
import os

import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer

T = 3
OPTIM = {"optim": "adam", "lr": 1e-2}


def make_trainer(weighting="RGB", save_path=None, load_path=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Trainer(synthetic.task_dict(T), weighting, "HPS", synthetic.encoder_class, synthetic.decoders(T),
                   False, False, OPTIM, save_path=save_path, load_path=load_path, device="cpu", **kwargs)


def rows_of(trainer, mode):
    return [row for row in trainer.meter.history if row["mode"] == mode]


@pytest.mark.parametrize("weighting", ["EW", "RGB"])
def test_test_loss_drops(weighting):
    trainer = make_trainer(weighting, weight_args={"rgb_steps": 5} if weighting == "RGB" else {})
    train, test = synthetic.loaders(T)
    trainer.train(train, test, epochs=6)
    rows = rows_of(trainer, "test")
    assert len(rows) == 6
    for task in trainer.task_name:
        assert rows[-1][f"{task}_loss"] < 0.5 * rows[0][f"{task}_loss"]
    assert trainer.meter.best_result["epoch"] > 0


def test_best_checkpoint_reloads_to_identical_predictions(tmp_path):
    trainer = make_trainer(save_path=str(tmp_path))
    train, test = synthetic.loaders(T)
    trainer.train(train, test, epochs=2)
    assert {"best.pt", "last.pt", "history.csv"} <= set(os.listdir(tmp_path))
    best_state = torch.load(tmp_path / "best.pt")
    trainer.model.load_state_dict(best_state)
    reloaded = make_trainer(load_path=str(tmp_path), seed=123)
    x = torch.randn(5, synthetic.IN_DIM)
    trainer.model.eval(), reloaded.model.eval()
    for task, pred in trainer.model(x).items():
        torch.testing.assert_close(reloaded.model(x)[task], pred, rtol=0, atol=0)
    torch.testing.assert_close(reloaded.model.rgb_ema, trainer.model.rgb_ema, rtol=0, atol=0)


def test_resume_continues_exactly_as_uninterrupted(tmp_path):
    weight_args = {"rgb_steps": 3, "rgb_interval": 2, "rgb_adaptive": True, "rgb_min_steps": 1, "rgb_max_steps": 9}
    scheduler = {"scheduler": "step", "step_size": 1, "gamma": 0.5}
    train, test = synthetic.loaders(T, shuffle=True)

    torch.manual_seed(7)
    straight = make_trainer(weight_args=weight_args, seed=1)
    straight._prepare_optimizer(OPTIM, scheduler)
    torch.manual_seed(7)
    straight.train(train, test, epochs=3)

    torch.manual_seed(7)
    first = make_trainer(weight_args=weight_args, seed=1, save_path=str(tmp_path))
    first._prepare_optimizer(OPTIM, scheduler)
    torch.manual_seed(7)
    first.train(train, test, epochs=2)
    resumed = make_trainer(weight_args=weight_args, seed=99)
    resumed._prepare_optimizer(OPTIM, scheduler)
    assert resumed.resume(str(tmp_path)) == 2
    resumed.train(train, test, epochs=3)

    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert resumed.meter.history[-1] == straight.meter.history[-1] | {"time": resumed.meter.history[-1]["time"]}


def test_return_weight_and_task_specific_grads_in_train_loop():
    trainer = make_trainer("EW")
    train, test = synthetic.loaders(T)
    weights = trainer.train(train, test, epochs=1, return_weight=True)
    assert weights.shape == (T, 1, len(train)) and np.all(weights == 1.0)


def test_multi_input_trains_each_task_on_its_own_loader():
    torch.manual_seed(0)
    trainer = Trainer(synthetic.task_dict(2), "RGB", "HPS", synthetic.encoder_class, synthetic.decoders(2),
                      False, True, OPTIM, device="cpu")

    def single(task_index, seed):
        data = synthetic.MultiTaskRegression(2, 64, seed)
        return torch.utils.data.DataLoader(
            [(x, y[f"t{task_index}"]) for x, y in (data[i] for i in range(len(data)))], batch_size=16)

    train = {"t0": single(0, 0), "t1": single(1, 1)}
    test = {"t0": single(0, 2), "t1": single(1, 3)}
    trainer.train(train, test, epochs=4)
    rows = rows_of(trainer, "test")
    assert rows[-1]["t0_loss"] < rows[0]["t0_loss"] and rows[-1]["t1_loss"] < rows[0]["t1_loss"]


def test_mode_test_evaluates_without_training(tmp_path, capsys):
    trainer = make_trainer()
    _, test = synthetic.loaders(T)
    before = [p.clone() for p in trainer.model.parameters()]
    trainer.test(test)
    assert "TEST:" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_unknown_weighting_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown weighting 'Nope'.*EW.*RGB"):
        make_trainer("Nope")


def test_unknown_architecture_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown architecture 'Nope'.*HPS"):
        Trainer(synthetic.task_dict(T), "EW", "Nope", synthetic.encoder_class, synthetic.decoders(T),
                False, False, OPTIM, device="cpu")


def test_bad_task_dict_is_a_clear_error():
    bad = synthetic.task_dict(T)
    bad["t0"] = {**bad["t0"], "weight": [0, 1]}
    with pytest.raises(ValueError, match=r"task_dict\['t0'\].*weight"):
        Trainer(bad, "EW", "HPS", synthetic.encoder_class, synthetic.decoders(T), False, False, OPTIM, device="cpu")
    del bad["t0"]["loss_fn"]
    with pytest.raises(ValueError, match="missing"):
        Trainer(bad, "EW", "HPS", synthetic.encoder_class, synthetic.decoders(T), False, False, OPTIM, device="cpu")


def test_missing_decoder_is_a_clear_error():
    decoders = synthetic.decoders(T)
    del decoders["t2"]
    with pytest.raises(ValueError, match="decoders has no entry for task"):
        Trainer(synthetic.task_dict(T), "EW", "HPS", synthetic.encoder_class, decoders, False, False, OPTIM, device="cpu")


def test_bad_optimizer_scheduler_and_paths():
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(synthetic.task_dict(T), "EW", "HPS", synthetic.encoder_class, synthetic.decoders(T), False, False,
                {"optim": "lbfgs2"}, device="cpu")
    with pytest.raises(FileNotFoundError, match="no model weights"):
        make_trainer(load_path="/nonexistent/dir")
    trainer = make_trainer()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.resume("/nonexistent/last.pt")
    train, test = synthetic.loaders(T)
    with pytest.raises(ValueError, match="epochs"):
        trainer.train(train, test, epochs=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_request_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Trainer(synthetic.task_dict(T), "EW", "HPS", synthetic.encoder_class, synthetic.decoders(T), False, False,
                OPTIM, device="cuda")


def test_amp_autocasts_forward_but_keeps_rgb_state_in_float32():
    trainer = make_trainer("RGB", amp=True)
    train, test = synthetic.loaders(T)
    seen = []
    trainer.model.encoder.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer.train(train, test, epochs=3)
    assert torch.bfloat16 in seen  # the forward pass ran under autocast
    assert trainer.model.rgb_ema.dtype == torch.float32
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in trainer.model.parameters())
    rows = rows_of(trainer, "test")
    assert rows[-1]["t0_loss"] < rows[0]["t0_loss"]


def test_grad_method_option_reaches_the_model():
    assert make_trainer("RGB").model.grad_method == "auto"
    assert make_trainer("RGB", grad_method="loop").model.grad_method == "loop"
    with pytest.raises(ValueError, match="grad_method"):
        trainer = make_trainer("RGB", grad_method="sideways")
        train, test = synthetic.loaders(T)
        trainer.train(train, test, epochs=1)


def test_many_tasks_print_full_rows_unless_a_csv_holds_them(capsys):
    """Over WIDE_TABLE_TASKS tasks: a summary line when history.csv is written, else every metric
    on the line (LibMTL prints them all; without a CSV they would be nowhere)."""
    from LibMTL_rgb.meter import WIDE_TABLE_TASKS, PerformanceMeter
    from LibMTL_rgb.metrics import L1Metric
    from LibMTL_rgb.loss import L1Loss

    tasks = {f"t{i}": {"metrics": ["L1"], "metrics_fn": L1Metric(), "loss_fn": L1Loss(), "weight": [0]}
             for i in range(WIDE_TABLE_TASKS + 1)}
    for csv_written in (False, True):
        meter = PerformanceMeter(tasks, multi_input=False)
        meter.csv_written = csv_written
        meter.results = {t: [0.5] for t in tasks}
        meter.display(mode="train", epoch=0)
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert ("every metric in history.csv" in line) == csv_written
        assert line.count("0.5000") == (0 if csv_written else WIDE_TABLE_TASKS + 1)
