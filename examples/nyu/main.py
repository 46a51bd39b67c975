"""NYUv2: 13-class segmentation, depth and surface normals (the paper's Table 1).

DeepLabV3-style model (dilated ResNet-50 shared encoder, one ASPP head per task; or MTAN's
SegNet with ``--backbone segnet``) trained on the 795 training images and evaluated on the 654 validation images after every epoch; defaults are
the paper's NYUv2 setting (RGB with λ = 0, K = 5; Adam, lr 1e-4, weight decay 1e-5, step
schedule halving every 100 epochs, 200 epochs, batch size 8) and LibMTL's NYUv2 example flags
(``--train_bs``, ``--test_bs``, ``--aug``); README.md lists every difference from LibMTL's example.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from LibMTL_rgb import Trainer
from LibMTL_rgb.cli_checks import DENSE_MODEL_RANGES, declare_ranges, single_input_check, task_name_check
from LibMTL_rgb_examples import example_runner
from LibMTL_rgb_examples.dense_data import add_resize_labels_arg, check_input_size, dense_loader, input_size_from_args
from LibMTL_rgb_examples.dense_metrics import DepthLoss, DepthMetric, NormalLoss, NormalMetric, SegLoss, SegMetric
from LibMTL_rgb.model.aspp import add_deeplab_args, deeplab_model
from nyu_data import NATIVE_SIZE, NUM_CLASSES, TASK_OUTPUTS, nyu_split

PAPER_DEFAULTS = {
    "weighting": "RGB", "arch": "HPS", "rgb_lambda": 0.0, "rgb_steps": 5,
    "optim": "adam", "lr": 1e-4, "weight_decay": 1e-5,
    "scheduler": "step", "step_size": 100, "gamma": 0.5,
    "epochs": 200, "bs": 8, "img_size": [3, *NATIVE_SIZE],
    # LibMTL's examples/nyu: --test_bs 8 (not following --train_bs), 2 loader workers, SGD momentum 0.9
    "eval_bs": 8, "num_workers": 2, "momentum": 0.9,
}


def build_parser() -> argparse.ArgumentParser:
    """The example's flags: LibMTL's, the shared example flags, the model's and NYUv2's."""
    def nyu_args(parser: argparse.ArgumentParser) -> None:
        add_deeplab_args(parser)
        group = parser.add_argument_group("NYUv2")
        group.add_argument("--aug", action="store_true", default=False,
                           help="augment training samples: random scale-crop (1.0/1.2/1.5, depth divided by the "
                                "scale) and horizontal flip, as MTAN/LibMTL's --aug (off by default, as in LibMTL)")
        add_resize_labels_arg(group)

    parser = example_runner.example_parser(__doc__.splitlines()[0], PAPER_DEFAULTS, nyu_args)
    parser.epilog = "--img_size takes H W (or 3 H W), default 288 384: the stored size; smaller sizes resize every sample."
    declare_ranges(parser, DENSE_MODEL_RANGES)
    parser.add_check(check_input_size)
    parser.add_check(single_input_check("NYUv2 is single-input (one image, three label maps)"))
    parser.add_check(task_name_check(lambda params: list(TASK_OUTPUTS)))
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def nyu_task_dict() -> dict:
    """LibMTL's NYUv2 tasks; ``weight``: 1 = higher is better."""
    segmentation, depth, normal = SegMetric(NUM_CLASSES), DepthMetric(), NormalMetric()
    return {
        "segmentation": {"metrics": segmentation.metric_names, "metrics_fn": segmentation, "loss_fn": SegLoss(),
                         "weight": [1, 1]},
        "depth": {"metrics": depth.metric_names, "metrics_fn": depth, "loss_fn": DepthLoss(), "weight": [0, 0]},
        "normal": {"metrics": normal.metric_names, "metrics_fn": normal, "loss_fn": NormalLoss(), "weight": [0, 0, 1, 1, 1]},
    }


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    # arguments
    params = parse_args(argv)
    img_size = input_size_from_args(params)
    device, kwargs, optim_param, scheduler_param = example_runner.setup_run(params)

    # data: train on train/, evaluate on val/ after every epoch (LibMTL calls it the test set)
    test_set = nyu_split(params.dataset_path, "val", img_size, resize_labels=params.resize_labels)
    test_loader = dense_loader(test_set, params.eval_bs, False, params.num_workers, device, params.seed)
    train_loader = None
    if params.mode == "train":
        train_set = nyu_split(params.dataset_path, "train", img_size, augment=params.aug, resize_labels=params.resize_labels)
        train_loader = dense_loader(train_set, params.bs, True, params.num_workers, device, params.seed)

    # model: dilated ResNet encoder + ASPP heads, or SegNet encoder + decoders (--backbone; unit-length normals)
    encoder_class, decoders = deeplab_model(params, TASK_OUTPUTS, img_size, unit_normal_tasks=["normal"])

    trainer = Trainer(nyu_task_dict(), params.weighting, params.arch, encoder_class, decoders, params.rep_grad,
                      params.multi_input, optim_param, scheduler_param, save_path=params.save_path,
                      load_path=params.load_path, **kwargs)
    example_runner.run(trainer, params, train_loader, test_loader)
    return trainer


if __name__ == "__main__":
    main()
