import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")
# example and worker subprocesses too (set before torch is imported here)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

# Tiny test models run fastest single-threaded (and do not oversubscribe a shared machine).
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture
def float64_default_dtype():
    """float64 as torch's default dtype for one test (the math tests' literal comparisons)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
