"""CelebA, 40 binary attributes (paper Table 3 right, Table 7): FAMO's conv encoder + one logit
head per attribute, binary cross-entropy, per-attribute F1. Defaults are the paper's setting
(RGB K=50; FAMO's training: Adam 3e-4, batch 256, 15 epochs, 64×64 images). With 40 tasks,
CGC, MTAN and PLE give each task its own branch only on the encoder's last stage by default
(--branch_size tasks; --branch_size libmtl for LibMTL's sizes, 35-150 times HPS's step), and
Cross_stitch and LTB cost 12-17 times HPS's step with EW: see README.md, "What the
architectures cost with 40 tasks"."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from celeba_data import ATTRIBUTE_FILE, HOW_TO_GET, REQUIRED, celeba_loaders
from celeba_metrics import HIGHER_IS_BETTER, BinaryAttributeMetric
from branch_size import add_branch_size_arg, apply_branch_size
from celeba_model import CelebAEncoder, attribute_heads, encoder_features, stage_macs

from LibMTL_rgb import Trainer
from LibMTL_rgb.cli_checks import declare_ranges, single_input_check, task_name_check
from LibMTL_rgb_examples.example_runner import example_parser, fill_input_size, require_dataset, setup_run
from LibMTL_rgb.loss import BCELoss
from LibMTL_rgb.registry import Hyperparameter
from LibMTL_rgb_examples.many_task_output import ensure_save_path, run_and_report

DEFAULTS = dict(
    weighting="RGB", arch="HPS", rgb_steps=50,
    optim="adam", lr=3e-4, weight_decay=0.0, scheduler=None,
    epochs=15, bs=256, num_workers=4,
)


#: Ranges of CelebA's flags (the encoder's three max-pools need images of at least 8 x 8).
CELEBA_RANGES = (Hyperparameter("image_size", 64, "", minimum=8), Hyperparameter("width", 64, "", minimum=1))


def attribute_names_if_readable(params: argparse.Namespace) -> Optional[list[str]]:
    """The attribute (task) names on line 2 of the dataset's attribute file, or None when it
    cannot be read yet (the reader names the problem later)."""
    try:
        with open(os.path.join(params.dataset_path or "", ATTRIBUTE_FILE)) as handle:
            handle.readline()
            return handle.readline().split() or None
    except (OSError, UnicodeDecodeError):
        return None


def add_celeba_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("celeba")
    group.add_argument("--image_size", type=int, default=64, help="images are resized to SIZE x SIZE")
    group.add_argument("--width", type=int, default=64, help="channels of the first conv layer (features: 8 x width)")
    group.add_argument("--metrics", type=str, nargs="+", default=["F1"], choices=list(HIGHER_IS_BETTER),
                       help="per-attribute metrics; the paper's Δm%% uses F1 only (the improvement averages all given)")
    add_branch_size_arg(group)


def celeba_task_dict(attribute_names: Sequence[str], metrics: Sequence[str]) -> dict:
    """One binary task per attribute: BCE on logits, the chosen metrics."""
    weight = [HIGHER_IS_BETTER[m] for m in metrics]
    return {
        name: {"metrics": list(metrics), "metrics_fn": BinaryAttributeMetric(metrics), "loss_fn": BCELoss(), "weight": weight}
        for name in attribute_names
    }


def build_parser() -> argparse.ArgumentParser:
    """The example's flags: LibMTL's, the shared example flags and CelebA's."""
    parser = example_parser(__doc__, DEFAULTS, add_celeba_args)
    declare_ranges(parser, CELEBA_RANGES)
    parser.add_check(single_input_check("CelebA is single-input (one face image, 40 attributes)"))
    parser.add_check(task_name_check(attribute_names_if_readable))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    params = build_parser().parse_args(argv)
    root = require_dataset("CelebA", params.dataset_path, REQUIRED, HOW_TO_GET)
    ensure_save_path("celeba", params)
    device, kwargs, optim_param, scheduler_param = setup_run(params)
    try:
        names, train, val, test = celeba_loaders(root, params.image_size, params.bs, params.eval_bs or params.bs,
                                                 params.num_workers, pin_memory=device.type == "cuda", seed=params.seed)
    except ValueError as err:
        raise SystemExit(f"CelebA: {err}\n{HOW_TO_GET}") from None

    def encoder_class() -> CelebAEncoder:
        return CelebAEncoder(params.width)

    decoders = attribute_heads(names, encoder_features(params.width))
    fill_input_size(kwargs, (3, params.image_size, params.image_size))  # gates of MMoE, DSelect_k... read images
    num_tasks = 1 if params.stl_task is not None else len(names)
    task_stages = apply_branch_size(params, kwargs["arch_args"], num_tasks, stage_macs(params.width, params.image_size))
    if task_stages is not None:
        print(f"{params.arch} with {num_tasks} tasks: task-specific branches on the encoder's last {task_stages} "
              "stage(s) (--branch_size tasks, README.md; --branch_size libmtl for LibMTL's sizes)")

    trainer = Trainer(celeba_task_dict(names, params.metrics), params.weighting, params.arch, encoder_class, decoders,
                      params.rep_grad, params.multi_input, optim_param, scheduler_param, save_path=params.save_path,
                      load_path=params.load_path, **kwargs)
    run_and_report(trainer, params, train, test, val)
    return trainer


if __name__ == "__main__":
    main()
