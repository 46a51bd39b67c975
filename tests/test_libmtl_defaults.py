"""LibMTL's defaults for every flag LibMTL 1.1.5's ``LibMTL_args`` has (issue 18)."""
from __future__ import annotations

import pytest

from LibMTL_rgb.config import LibMTL_args
from tests.libmtl_oracle import libmtl_available

pytestmark = pytest.mark.skipif(not libmtl_available(), reason="LibMTL 1.1.5 (the oracle) is not installed")


def _libmtl_defaults() -> dict:
    from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

    ensure_torchvision_models_utils()
    from LibMTL.config import LibMTL_args as theirs

    return {a.dest: a.default for a in theirs._actions if a.dest != "help"}


def test_every_libmtl_flag_has_libmtl_default():
    ours = {a.dest: a.default for a in LibMTL_args._actions}
    theirs = _libmtl_defaults()
    assert theirs["momentum"] == 0.9 and ours["momentum"] == 0.9
    offered = {name: value for name, value in theirs.items() if name in ours}
    differing = {name: (ours[name], value) for name, value in offered.items()
                 if value is not None and ours[name] != value}
    assert differing == {}
