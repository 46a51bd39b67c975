"""The per-task gradient check inside every gradient method (issue 23): row sums of the [T, D]
matrix, element by element only when a sum is not finite."""
import pytest
import torch

from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting


class Named(AbsWeighting):
    task_name = ["a", "b", "c"]


LOSSES = torch.tensor([1.0, 2.0, 3.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_nonfinite_element_anywhere_names_its_task(bad, dtype):
    generator = torch.Generator().manual_seed(0)
    for task in range(3):
        for column in torch.randint(0, 1000, (5,), generator=generator).tolist():
            grads = torch.randn(3, 1000, generator=generator, dtype=dtype)
            grads[task, column] = bad
            with pytest.raises(FloatingPointError, match=f"task '{'abc'[task]}' has a non-finite gradient"):
                Named()._raise_if_nonfinite(LOSSES, grads)


def test_inf_and_minus_inf_in_one_row_and_nan_beside_an_overflow_are_caught():
    grads = torch.zeros(3, 4)
    grads[1, 0], grads[1, 3] = float("inf"), float("-inf")  # the sum is NaN
    with pytest.raises(FloatingPointError, match="task 'b'"):
        Named()._raise_if_nonfinite(LOSSES, grads)
    big = torch.finfo(torch.float32).max
    grads = torch.tensor([[big, big, 0.0], [0.0, 0.0, 0.0], [0.0, float("nan"), 0.0]])
    with pytest.raises(FloatingPointError, match="task 'c'"):
        Named()._raise_if_nonfinite(LOSSES, grads)


def test_finite_rows_whose_sums_overflow_are_not_flagged():
    big = torch.finfo(torch.float32).max
    grads = torch.tensor([[big, big, 1.0], [-big, -big, 0.0], [0.0, 1.0, 2.0]])
    assert not torch.isfinite(grads.sum(dim=-1)).all()  # the fast path alone would flag them
    Named()._raise_if_nonfinite(LOSSES, grads)  # no error


def test_a_nonfinite_loss_is_named_before_the_gradients():
    grads = torch.full((3, 2), float("nan"))
    with pytest.raises(FloatingPointError, match="task 'c' has a non-finite loss"):
        Named()._raise_if_nonfinite(torch.tensor([1.0, 2.0, float("inf")]), grads)
    Named()._raise_if_nonfinite(LOSSES, torch.empty(3, 0))  # no shared parameters: nothing to check
