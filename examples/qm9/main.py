"""QM9, 11 regression targets (paper Table 2): MPNN encoder + one linear head per target,
MSE on standardised targets, MAE in the paper's units. Defaults are the paper's setting
(RGB λ=0, K=30; Adam 1e-3, ReduceLROnPlateau ×0.7 / 5 epochs / min 1e-5, batch 120, 300 epochs)."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from mpnn import MPNNEncoder, target_heads
from qm9_data import HOW_TO_GET, TARGETS, TASK_NAMES, load_qm9, qm9_loaders, require_qm9
from qm9_metrics import QM9MAE

from LibMTL_rgb import Trainer
from LibMTL_rgb.benchmark.paper_results import paper_stl
from LibMTL_rgb.example_runner import build_trainer, example_parser, require_dataset, setup_run
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.many_task_output import ensure_save_path, run_and_report

DEFAULTS = dict(
    weighting="RGB", arch="HPS", rgb_lambda=0.0, rgb_steps=30,
    optim="adam", lr=1e-3, weight_decay=0.0,
    scheduler="reduce", gamma=0.7, patience=5, min_lr=1e-5,
    epochs=300, bs=120, num_workers=2,
    grad_method="loop",  # GRU/Set2Set backward has no vmap rule on CPU: T passes, no probe
)


#: The encoder gets a PyG batch of molecules: no image to gate on (MMoE, CGC, PLE, DSelect_k),
#: no convolutional stages (MTAN, Cross_stitch).
ARCHITECTURES = ("HPS",)


def add_qm9_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("qm9")
    group.add_argument("--val_size", type=int, default=10000, help="molecules in the validation split")
    group.add_argument("--test_size", type=int, default=10000, help="molecules in the test split")
    group.add_argument("--split_seed", type=int, default=None,
                       help="seed of the split permutation, saved as DATASET_PATH/split_seed<N>.pt; None: use --seed")
    group.add_argument("--dim", type=int, default=64, help="MPNN hidden size")
    group.add_argument("--edge_hidden", type=int, default=128, help="hidden size of NNConv's edge network")
    group.add_argument("--mp_steps", type=int, default=3, help="message-passing iterations")
    group.add_argument("--s2s_steps", type=int, default=3, help="Set2Set processing steps")
    group.add_argument("--stl_base", action=argparse.BooleanOptionalAction, default=True,
                       help="measure improvement against paper Table 2's STL row, so the printed 'impr' is -Δm%% "
                            "(--no-stl_base: against the first evaluated epoch)")


def qm9_task_dict(std) -> dict:
    """One task per target: MSE loss (standardised), MAE in the unit of ``TARGETS`` (lower is better)."""
    return {
        t.name: {"metrics": ["MAE"], "metrics_fn": QM9MAE(float(std[k]), t.scale), "loss_fn": MSELoss(), "weight": [0]}
        for k, t in enumerate(TARGETS)
    }


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    params = example_parser(__doc__, DEFAULTS, add_qm9_args, architectures=ARCHITECTURES).parse_args(argv)
    root = require_dataset("QM9", params.dataset_path, [], HOW_TO_GET)
    require_qm9(root)
    ensure_save_path("qm9", params)
    device, kwargs, optim_param, scheduler_param = setup_run(params)
    split_seed = params.seed if params.split_seed is None else params.split_seed
    try:
        splits = load_qm9(root, params.val_size, params.test_size, split_seed)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"QM9: {err}") from None
    train, val, test = qm9_loaders(splits, params.bs, params.eval_bs or params.bs, params.num_workers,
                                   pin_memory=device.type == "cuda")
    if params.stl_base:
        kwargs["base_result"] = paper_stl("qm9")  # Table 2's STL row, in the units of TARGETS

    trainer = build_trainer(
        params, qm9_task_dict(splits.std),
        lambda: MPNNEncoder(params.dim, params.edge_hidden, params.mp_steps, params.s2s_steps),
        target_heads(TASK_NAMES, params.dim), optim_param, scheduler_param, kwargs,
    )
    run_and_report(trainer, params, train, test, val)
    return trainer


if __name__ == "__main__":
    main()
