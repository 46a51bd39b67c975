"""MoCo's and ExcessMTL's [T, D] updates without temporaries (issue 23) give the same numbers,
bit for bit, as the expressions they replace (DB-MTL's: tests/test_new_weightings.py, float64 literal)."""
import torch

from LibMTL_rgb.weighting.excess_mtl import ADAGRAD_EPS, accumulate_excess_risks
from LibMTL_rgb.weighting.moco import moco_update


def matrices(seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 257, generator=gen, dtype=dtype) for _ in range(2)]


def test_moco_in_place_update_is_the_out_of_place_one():
    for dtype in (torch.float32, torch.float64):
        tracker, grads = matrices(dtype=dtype)
        lambd = torch.full((4,), 0.25, dtype=dtype)
        for update in ("projection", "softmax"):
            expected = moco_update(tracker.clone(), lambd, grads.clone(), 3, 0.5, 0.5, 0.1, 0.5, 0.01, update)
            buffer = tracker.clone()
            got = moco_update(buffer, lambd, grads.clone(), 3, 0.5, 0.5, 0.1, 0.5, 0.01, update, in_place=True)
            assert got[0] is buffer  # updated in the buffer itself
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_excess_risk_row_by_row_is_the_literal_expression():
    """The accumulator and the estimates, row by row through a scratch, are bit for bit the
    ``[T, D]`` expressions (float32 and float64; a scratch of another size is replaced)."""
    for dtype in (torch.float32, torch.float64):
        grads, other = matrices(1, dtype=dtype)
        total = other.pow(2) + grads.pow(2)
        literal = (grads.pow(2) / torch.sqrt(total + ADAGRAD_EPS)).sum(dim=1)
        for scratch in (None, torch.empty(2, 257, dtype=dtype), torch.empty(2, 3, dtype=dtype)):
            accumulator = other.pow(2)
            assert torch.equal(accumulate_excess_risks(grads, accumulator, scratch), literal)
            assert torch.equal(accumulator, total)
