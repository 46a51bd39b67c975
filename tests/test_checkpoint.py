"""Checkpoint files: metadata in best.pt (still a plain state_dict) and last.pt, one message
naming what differs when a checkpoint does not fit, files that are not checkpoints, and the
loss history kept when a run is resumed with more epochs."""
import numpy as np
import pytest
import torch

import synthetic
from LibMTL_rgb import Trainer
from LibMTL_rgb.checkpoint import CheckpointError, grow_loss_buffer, metadata_of

T = 2
OPTIM = {"optim": "adam", "lr": 1e-2}


def make_trainer(weighting="RGB", arch="HPS", task_num=T, **kwargs):
    torch.manual_seed(0)
    return Trainer(synthetic.task_dict(task_num), weighting, arch, synthetic.encoder_class, synthetic.decoders(task_num),
                   False, False, OPTIM, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rgb")
    trainer = make_trainer(save_path=str(run_dir), command=["main.py", "--weighting", "RGB"])
    trainer.train(*synthetic.loaders(T, train_size=64), epochs=2)
    return run_dir


def test_checkpoints_carry_metadata_and_best_stays_a_plain_state_dict(rgb_run):
    best = torch.load(rgb_run / "best.pt")  # weights_only=True, as LibMTL code loads it
    make_trainer().model.load_state_dict(best)
    last = torch.load(rgb_run / "last.pt", weights_only=False)
    for meta in (metadata_of(best), last["metadata"]):
        assert meta["weighting"] == "RGB" and meta["architecture"] == "HPS" and meta["tasks"] == ["t0", "t1"]
        assert meta["command"] == "main.py --weighting RGB" and meta["library_version"] and meta["torch_version"]


@pytest.mark.parametrize("kwargs, expected", [
    ({"weighting": "EW"}, r"was trained with --weighting RGB; you passed EW"),
    ({"arch": "MMoE", "arch_args": {"img_size": [synthetic.IN_DIM], "num_experts": [2]}},
     r"was trained with --arch HPS; you passed MMoE"),
    ({"task_num": 3}, r"was trained with tasks t0,t1; you passed t0,t1,t2"),
])
def test_loading_into_another_setup_names_what_differs(rgb_run, kwargs, expected):
    with pytest.raises(CheckpointError, match=expected):
        make_trainer(load_path=str(rgb_run), **kwargs)
    with pytest.raises(CheckpointError, match=expected):
        make_trainer(**kwargs).resume(str(rgb_run))


def test_weights_without_metadata_that_do_not_fit_get_a_one_line_summary(tmp_path):
    plain = {k: v for k, v in make_trainer().model.state_dict().items()}  # no metadata attribute
    torch.save(plain, tmp_path / "old.pt")
    with pytest.raises(CheckpointError) as info:
        make_trainer("EW", load_path=str(tmp_path / "old.pt"))
    message = str(info.value)
    assert "\n" not in message and "not in this model (e.g. rgb_ema" in message
    plain["encoder.0.weight"] = torch.zeros(3, 3)
    torch.save(plain, tmp_path / "reshaped.pt")
    with pytest.raises(CheckpointError, match=r"of another shape \(file vs model\) \(e.g. encoder.0.weight \(3, 3\) vs"):
        make_trainer(load_path=str(tmp_path / "reshaped.pt"))


def test_files_that_are_not_checkpoints_say_so(rgb_run, tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt is not a checkpoint this library can read"):
        make_trainer(load_path=str(tmp_path / "notes.pt"))
    truncated = (rgb_run / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(CheckpointError, match="may be truncated"):
        make_trainer().resume(str(tmp_path))
    with pytest.raises(CheckpointError, match="holds model weights .* not a training state"):
        make_trainer().resume(str(rgb_run / "best.pt"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not model weights"):
        make_trainer(load_path=str(tmp_path / "list.pt"))


def test_loss_buffer_grows_and_keeps_its_columns():
    old = np.arange(6.0).reshape(2, 3)
    grown = grow_loss_buffer(old, 2, 5)
    np.testing.assert_array_equal(grown[:, :3], old)
    np.testing.assert_array_equal(grown[:, 3:], 0)
    assert grow_loss_buffer(None, 2, 4).shape == (2, 4) and grow_loss_buffer(old, 2, 2) is old


def test_dwa_resumed_with_more_epochs_keeps_its_history_and_matches_the_straight_run(tmp_path):
    train, test = synthetic.loaders(T, train_size=64)
    straight = make_trainer("DWA")
    straight.train(train, test, epochs=5)
    first = make_trainer("DWA", save_path=str(tmp_path))
    first.train(train, test, epochs=3)
    resumed = make_trainer("DWA")
    assert resumed.resume(str(tmp_path)) == 3
    resumed.train(train, test, epochs=5)
    assert np.isfinite(resumed.model.train_loss_buffer).all()
    np.testing.assert_array_equal(resumed.model.train_loss_buffer, straight.model.train_loss_buffer)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


#: Bilevel methods draw meta batches from a second pass over the training data, and that
#: stream restarts at the resumed epoch: their state resumes, the continuation is not
#: bit-identical (docs/reliability.md).
BILEVEL = {"MOML", "FORUM", "AutoLambda"}


@pytest.mark.parametrize("weighting", sorted(set(__import__("LibMTL_rgb").WEIGHTINGS.names()) - BILEVEL))
def test_every_weighting_resumes_bit_identical(weighting, tmp_path):
    """All of a weighting's state must be in the checkpoint (buffers, parameters or the
    Trainer's saved attributes): a Python attribute carried from step to step would make the
    resumed run differ from the straight one."""
    train, test = synthetic.loaders(T, train_size=64, shuffle=True)
    straight = make_trainer(weighting)
    straight.train(train, test, epochs=3)
    first = make_trainer(weighting, save_path=str(tmp_path))
    first.train(train, test, epochs=2)
    resumed = make_trainer(weighting)
    resumed.resume(str(tmp_path))
    resumed.train(train, test, epochs=3)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("computer", ["chunks", "engine"])
@pytest.mark.parametrize("weighting", ["RGB", "Nash_MTL", "GradVac"])
def test_stateful_methods_resume_bit_identical_on_the_gramian_path(weighting, computer, tmp_path):
    """The Gramian path keeps no state of its own between steps (the engine is re-armed every
    step): a stateful method resumed on it continues exactly as the straight run."""
    options = {"grad_method": "gramian", "gramian_computer": computer}
    train, test = synthetic.loaders(T, train_size=64, shuffle=True)
    straight = make_trainer(weighting, **options)
    straight.train(train, test, epochs=3)
    first = make_trainer(weighting, save_path=str(tmp_path), **options)
    first.train(train, test, epochs=2)
    resumed = make_trainer(weighting, **options)
    resumed.resume(str(tmp_path))
    resumed.train(train, test, epochs=3)
    assert resumed.model.gradient_path() == "gramian"
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
