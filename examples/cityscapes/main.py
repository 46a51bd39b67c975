"""Cityscapes: 7-class segmentation + depth (``--tasks 2``, MTAN/LibMTL), or 19-class
segmentation + instance offsets + disparity (``--tasks 3``, the paper's Table 3).

DeepLabV3-style model (dilated ResNet-50 shared encoder, one ASPP head per task), trained on
the train split and evaluated on the val split after every epoch. Defaults: RGB with λ = 1,
K = 50 (the paper's Cityscapes setting) and LibMTL's Cityscapes optimisation (Adam, lr 1e-4,
weight decay 1e-5, step schedule halving every 100 epochs, 200 epochs, batch size 64) and
LibMTL's Cityscapes example flags (``--train_bs``, ``--test_bs``, ``--train_mode``).
See README.md for the data, the metrics, Align-MTL's schedule used in Table 3 and every
difference from LibMTL's example.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from LibMTL_rgb import Trainer
from LibMTL_rgb.cli_checks import DENSE_MODEL_RANGES, declare_ranges, single_input_check, task_name_check
from LibMTL_rgb_examples import example_runner
from LibMTL_rgb_examples.dense_data import add_resize_labels_arg, check_input_size, dense_loader, input_size_from_args
from LibMTL_rgb_examples.dense_metrics import (DepthLoss, DepthMetric, DisparityMSEMetric, OffsetL1Metric, OffsetLoss, SegLoss,
                                      SegMetric)
from LibMTL_rgb.model.aspp import add_deeplab_args, deeplab_model
from cityscapes_data import DISPARITY_UNITS, MTAN_CLASSES, cityscapes_split
from labels import NUM_CLASSES

PAPER_DEFAULTS = {
    "weighting": "RGB", "arch": "HPS", "rgb_lambda": 1.0, "rgb_steps": 50,
    "optim": "adam", "lr": 1e-4, "weight_decay": 1e-5,
    "scheduler": "step", "step_size": 100, "gamma": 0.5,
    "epochs": 200, "bs": 64, "img_size": [3, 128, 256],
    # LibMTL's examples/cityscapes: --test_bs 64 (not following --train_bs), 2 loader workers, SGD momentum 0.9
    "eval_bs": 64, "num_workers": 2, "momentum": 0.9,
}
#: LibMTL's --train_mode values -> the folder trained on. LibMTL main reads train/ for 'train' and
#: fails on 'trainval' (its help text lists it); 'trainval' was the union of the train and val
#: halves of train/ in LibMTL's earlier NYUv2 example, i.e. all of train/. val/ is never trained on.
TRAIN_MODES = {"train": "train", "trainval": "train"}
#: Output channels of each task's head.
TASK_OUTPUTS = {
    2: {"segmentation": MTAN_CLASSES, "depth": 1},
    3: {"segmentation": NUM_CLASSES, "instance": 2, "disparity": 1},
}


def build_parser() -> argparse.ArgumentParser:
    """The example's flags: LibMTL's, the shared example flags, the model's and Cityscapes'."""
    def cityscapes_args(parser: argparse.ArgumentParser) -> None:
        add_deeplab_args(parser)
        group = parser.add_argument_group("Cityscapes")
        group.add_argument("--tasks", type=int, default=2, choices=[2, 3],
                           help="2: MTAN's preprocessed copy (segmentation, depth); 3: the official release "
                                "(segmentation, instance, disparity), the paper's Table 3")
        group.add_argument("--label_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                           help="resolution of the label maps and predictions (default: --img_size); Align-MTL "
                                "evaluates at 1/8 of its 256x512 input: --img_size 256 512 --label_size 32 64")
        group.add_argument("--disparity_unit", type=str, default="px", choices=DISPARITY_UNITS,
                           help="--tasks 3 disparity target: 'px' = official (p-1)/256 pixels; 'align_mtl' = "
                                "p/2729.07, the unit of Table 3's MSE")
        group.add_argument("--train_mode", type=str, default="train", choices=sorted(TRAIN_MODES),
                           help="LibMTL's choice of training split: both train on every image of train/ "
                                "(LibMTL main reads train/ for 'train' and fails on 'trainval'); evaluation is on val/")
        group.add_argument("--aug", action="store_true", default=False,
                           help="augment training samples: random scale-crop (1.0/1.2/1.5; depth divided, "
                                "disparity and offsets multiplied by the scale) and horizontal flip")
        add_resize_labels_arg(group)

    parser = example_runner.example_parser(__doc__.split("\n\n")[0], PAPER_DEFAULTS, cityscapes_args)
    parser.epilog = "--img_size takes H W (or 3 H W), default 128 256; the --tasks 3 images are resized to it."
    declare_ranges(parser, DENSE_MODEL_RANGES)
    parser.add_check(check_input_size)
    parser.add_check(single_input_check("Cityscapes is single-input (one image, several label maps)"))
    parser.add_check(task_name_check(lambda params: list(TASK_OUTPUTS[params.tasks])))
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def cityscapes_task_dict(tasks: int) -> dict:
    """The tasks, metrics and losses; ``weight``: 1 = higher is better."""
    if tasks == 2:  # LibMTL's
        segmentation, depth = SegMetric(MTAN_CLASSES), DepthMetric()
        return {
            "segmentation": {"metrics": segmentation.metric_names, "metrics_fn": segmentation, "loss_fn": SegLoss(),
                             "weight": [1, 1]},
            "depth": {"metrics": depth.metric_names, "metrics_fn": depth, "loss_fn": DepthLoss(), "weight": [0, 0]},
        }
    # Table 3 (Align-MTL): mIoU; instance L1 [px]; disparity MSE. Losses: CE, L1, L1.
    segmentation, instance, disparity = SegMetric(NUM_CLASSES, pixel_accuracy=False), OffsetL1Metric(), DisparityMSEMetric()
    return {
        "segmentation": {"metrics": segmentation.metric_names, "metrics_fn": segmentation, "loss_fn": SegLoss(),
                         "weight": [1]},
        "instance": {"metrics": instance.metric_names, "metrics_fn": instance, "loss_fn": OffsetLoss(), "weight": [0]},
        "disparity": {"metrics": disparity.metric_names, "metrics_fn": disparity, "loss_fn": DepthLoss(), "weight": [0]},
    }


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    # arguments
    params = parse_args(argv)
    img_size = input_size_from_args(params)
    label_size = tuple(params.label_size) if params.label_size else img_size
    device, kwargs, optim_param, scheduler_param = example_runner.setup_run(params)

    # data: train on train/, evaluate on val/ after every epoch (LibMTL calls it the test set)
    def split(name: str, augment: bool = False):
        return cityscapes_split(params.dataset_path, name, params.tasks, img_size, label_size, params.disparity_unit, augment,
                                params.resize_labels)

    test_loader = dense_loader(split("val"), params.eval_bs or params.bs, False, params.num_workers, device, params.seed)
    train_loader = None
    if params.mode == "train":
        train_loader = dense_loader(split(TRAIN_MODES[params.train_mode], params.aug), params.bs, True, params.num_workers,
                                    device, params.seed)

    # model: dilated ResNet encoder + ASPP heads, predictions at the label resolution
    encoder_class, decoders = deeplab_model(params, TASK_OUTPUTS[params.tasks], label_size)

    trainer = Trainer(cityscapes_task_dict(params.tasks), params.weighting, params.arch, encoder_class, decoders,
                      params.rep_grad, params.multi_input, optim_param, scheduler_param, save_path=params.save_path,
                      load_path=params.load_path, **kwargs)
    example_runner.run(trainer, params, train_loader, test_loader)
    return trainer


if __name__ == "__main__":
    main()
