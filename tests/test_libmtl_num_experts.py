"""LibMTL's lenient ``--num_experts`` for CGC / PLE: extra values are ignored (issue 18)."""
from __future__ import annotations

import pytest

from test_architectures import TASKS, build


@pytest.mark.parametrize("arch", ["CGC", "PLE"])
def test_extra_num_experts_values_are_ignored_with_a_warning(arch):
    with pytest.warns(UserWarning, match=r"the extra \[7, 9\] are ignored"):
        model = build(arch, num_experts=[2, 1, 0, 3, 7, 9])
    assert model.num_experts == {"share": 2, **dict(zip(TASKS, [1, 0, 3]))}
    assert [model.gate_specific[t][0].linear.out_features for t in TASKS] == [3, 2, 5]


def test_too_few_values_are_still_refused():
    with pytest.raises(ValueError, match=r"CGC takes 1 \+ 3 --num_experts values"):
        build("CGC", num_experts=[1, 1, 1])
