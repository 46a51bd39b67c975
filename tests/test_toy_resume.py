"""The toy's --resume: finished starts are kept, the others run, the result equals an
uninterrupted run; other flags are refused with what differs."""
import numpy as np
import pytest
import torch

from example_loading import load_example

FLAGS = ["--weighting", "DWA", "--steps", "6", "--starts", "0,0;1,1;-2,3", "--eval_points", "2"]


def test_toy_resume_keeps_finished_starts_and_ends_as_uninterrupted(tmp_path, capsys):
    toy_main = load_example("toy")[0].main
    straight = toy_main([*FLAGS, "--save_path", str(tmp_path / "straight")])
    cut = tmp_path / "cut"
    toy_main([*FLAGS, "--save_path", str(cut)])
    state = torch.load(cut / "last.pt", weights_only=False)
    assert len(state["runs"]) == 3 and state["metadata"]["weighting"] == "DWA"
    state["runs"] = state["runs"][:1]  # as if killed during the second start
    torch.save(state, cut / "last.pt")
    capsys.readouterr()
    resumed = toy_main([*FLAGS, "--resume", str(cut)])
    assert "Resuming: 1 of 3 starts already finished" in capsys.readouterr().out
    for a, b in zip(straight["DWA"], resumed["DWA"]):
        np.testing.assert_array_equal(a.path, b.path)
        np.testing.assert_array_equal(a.losses, b.losses)
    with pytest.raises(SystemExit) as info:
        toy_main([*FLAGS[:3], "7", *FLAGS[4:], "--resume", str(cut)])
    assert info.value.code == 2
    assert "was made with --steps 6; you passed 7" in capsys.readouterr().err


def test_toy_stops_at_a_non_finite_loss_with_one_line():
    toy_main = load_example("toy")[0].main
    with pytest.raises(SystemExit) as info:
        toy_main(["--weighting", "EW", "--steps", "5", "--starts", "0,0", "--lr", "1e30"])
    assert "error: EW: non-finite loss of task 'f1' (inf)" in str(info.value.code)
    assert "at step 1 from start (0.0, 0.0)" in str(info.value.code)
