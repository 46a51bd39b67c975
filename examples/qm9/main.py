"""QM9, 11 regression targets (paper Table 2): MPNN encoder + one linear head per target,
MSE on standardised targets, MAE in the paper's units. Defaults are the paper's setting
(RGB λ=0, K=30; Adam 1e-3, ReduceLROnPlateau ×0.7 / 5 epochs / min 1e-5, batch 120, 300 epochs)
with LibMTL's QM9 flags (``--bs``, ``--target``; ``--split_file random_split.t`` for LibMTL's
split); README.md lists every difference from LibMTL's example."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from qm9_targets import (DEFAULT_TARGETS, LIBMTL_SPLIT_FILE, QM9_COLUMNS, TASK_NAME_STYLES, check_targets, task_names,
                         unsupported_architectures)
from qm9_metrics import QM9MAE

from LibMTL_rgb import Trainer
from LibMTL_rgb.cli_checks import declare_ranges, single_input_check, task_name_check
from LibMTL_rgb.benchmark.paper_results import paper_stl
from LibMTL_rgb_examples.example_runner import example_parser, require_dataset, setup_run
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.registry import Hyperparameter
from LibMTL_rgb_examples.many_task_output import ensure_save_path, run_and_report

DEFAULTS = dict(
    weighting="RGB", arch="HPS", rgb_lambda=0.0, rgb_steps=30,
    optim="adam", lr=1e-3, weight_decay=0.0, momentum=0.9,
    scheduler="reduce", gamma=0.7, patience=5, min_lr=1e-5,
    epochs=300, bs=120, num_workers=2,
    grad_method="loop",  # GRU/Set2Set backward has no vmap rule on CPU: T passes, no probe
)


#: The encoder gets a PyG batch of molecules: no image to gate on (MMoE, CGC, PLE, DSelect_k),


#: Ranges of QM9's flags.
QM9_RANGES = (
    Hyperparameter("val_size", 10000, "", minimum=1), Hyperparameter("test_size", 10000, "", minimum=1),
    Hyperparameter("split_seed", 0, "", minimum=0), Hyperparameter("dim", 64, "", minimum=1),
    Hyperparameter("edge_hidden", 128, "", minimum=1), Hyperparameter("mp_steps", 3, "", minimum=1),
    Hyperparameter("s2s_steps", 3, "", minimum=1),
)


def check_target_flags(parser: argparse.ArgumentParser, params: argparse.Namespace) -> None:
    """``--target``: distinct PyG QM9 columns."""
    try:
        check_targets(params.target)
    except ValueError as err:
        parser.error(f"argument --target: {err}")


def add_qm9_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("qm9")
    group.add_argument("--target", type=int, nargs="+", default=list(DEFAULT_TARGETS),
                       help="PyG QM9 columns to learn, one task each (LibMTL's flag and default: the 11 of paper Table 2)")
    group.add_argument("--task_names", type=str, default="index", choices=TASK_NAME_STYLES,
                       help="task names: 'index' = the column index as LibMTL names them ('0', '12' ...), "
                            "'symbol' = mu, alpha, homo ... (README.md)")
    group.add_argument("--split_file", type=str, default=None,
                       help="a saved permutation of the molecules to split, e.g. LibMTL's examples/qm9/random_split.t "
                            "(test = the first --test_size, val = the next --val_size, train = the rest); "
                            "default: a permutation drawn from --split_seed")
    group.add_argument("--train_size", type=int, default=None,
                       help="train on only the first N molecules of the training split (default: all of it)")
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


def qm9_task_dict(std, targets: Sequence[int] = DEFAULT_TARGETS, names: Optional[Sequence[str]] = None) -> dict:
    """One task per target column: MSE loss (standardised), MAE in the unit of ``QM9_COLUMNS``
    (lower is better)."""
    names = task_names(targets) if names is None else names
    return {
        name: {"metrics": ["MAE"], "metrics_fn": QM9MAE(float(std[k]), QM9_COLUMNS[t].scale), "loss_fn": MSELoss(),
               "weight": [0]}
        for k, (name, t) in enumerate(zip(names, targets))
    }


def paper_stl_base(targets: Sequence[int], names: Sequence[str]) -> Optional[dict]:
    """Table 2's STL row for the chosen targets, under their task names; None when a target is
    not one of Table 2's."""
    stl = paper_stl("qm9")  # keyed by symbol, in the units of QM9_COLUMNS
    if any(t not in DEFAULT_TARGETS for t in targets):
        return None
    return {name: stl[QM9_COLUMNS[t].name] for name, t in zip(names, targets)}


def build_parser() -> argparse.ArgumentParser:
    """The example's flags: LibMTL's, the shared example flags and QM9's."""
    parser = example_parser(__doc__, DEFAULTS, add_qm9_args, unsupported_architectures())
    declare_ranges(parser, QM9_RANGES)
    parser.add_check(check_target_flags)
    parser.add_check(single_input_check("QM9 is single-input (one molecule, all targets)"))
    parser.add_check(task_name_check(lambda params: task_names(params.target, params.task_names)))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    # arguments
    params = build_parser().parse_args(argv)
    targets = check_targets(params.target)
    names = task_names(targets, params.task_names)
    # torch_geometric (through these) loads after parsing, so --help answers without it
    from mpnn import MPNNEncoder, target_heads
    from qm9_data import HOW_TO_GET, load_qm9, qm9_loaders, require_qm9

    root = require_dataset("QM9", params.dataset_path, [], HOW_TO_GET)
    require_qm9(root)
    ensure_save_path("qm9", params)
    device, kwargs, optim_param, scheduler_param = setup_run(params)

    # data: test = the first --test_size molecules of the split permutation, val = the next --val_size
    split_seed = params.seed if params.split_seed is None else params.split_seed
    if params.split_file is None and os.path.isfile(LIBMTL_SPLIT_FILE):
        print(f"QM9: ./{LIBMTL_SPLIT_FILE} (LibMTL's split) is not used; pass --split_file {LIBMTL_SPLIT_FILE} to use it")
    try:
        splits = load_qm9(root, params.val_size, params.test_size, split_seed, targets, params.split_file,
                           params.train_size)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"QM9: {err}") from None
    train, val, test = qm9_loaders(splits, params.bs, params.eval_bs or params.bs, params.num_workers,
                                   pin_memory=device.type == "cuda", task_name=names, seed=params.seed)
    if params.stl_base:
        kwargs["base_result"] = paper_stl_base(targets, names)
        if kwargs["base_result"] is None:
            print("QM9: --target includes columns outside paper Table 2, which has no STL row for them: "
                  "improvement is measured against the first evaluated epoch")

    # model: MPNN encoder shared by every target, one linear head per target
    def encoder_class() -> MPNNEncoder:
        return MPNNEncoder(params.dim, params.edge_hidden, params.mp_steps, params.s2s_steps)

    decoders = target_heads(names, params.dim)

    trainer = Trainer(qm9_task_dict(splits.std, targets, names), params.weighting, params.arch, encoder_class, decoders,
                      params.rep_grad, params.multi_input, optim_param, scheduler_param, save_path=params.save_path,
                      load_path=params.load_path, **kwargs)
    run_and_report(trainer, params, train, test, val)
    return trainer


if __name__ == "__main__":
    main()
