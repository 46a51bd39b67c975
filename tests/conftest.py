import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")

import torch

# Tiny test models run fastest single-threaded (and do not oversubscribe a shared machine).
torch.set_num_threads(1)
