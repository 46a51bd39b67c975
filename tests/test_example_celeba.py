"""examples/celeba on a tiny CelebA root in torchvision's real layout (the two text files with
their header lines and ±1 labels, 64×64 JPEGs): reader, metric, model, ``main`` end to end."""
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from LibMTL_rgb_examples.task_columns import split_task_columns

from example_loading import load_example

_main, _data, _metrics, _model = load_example("celeba", "celeba_data", "celeba_metrics", "celeba_model")
main = _main.main
CelebA, read_attributes, read_celeba, read_partition = (
    _data.CelebA, _data.read_attributes, _data.read_celeba, _data.read_partition)
BinaryAttributeMetric = _metrics.BinaryAttributeMetric
CelebAEncoder, encoder_features = _model.CelebAEncoder, _model.encoder_features

NAMES = [f"Attr_{k:02d}" for k in range(40)]
PARTITION = [0] * 12 + [1] * 4 + [2] * 4
TINY = ["--bs", "6", "--width", "2", "--image_size", "32", "--rgb_steps", "5", "--num_workers", "0", "--device", "cpu"]


def make_celeba_root(root: Path, partition=PARTITION) -> tuple[Path, np.ndarray]:
    """Files as the official release writes them: a count line, names with a trailing space,
    then ``<file> <±1 x 40>`` with two-character fields."""
    rng = np.random.default_rng(0)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    files = [f"{i + 1:06d}.jpg" for i in range(len(partition))]
    labels = rng.choice([-1, 1], size=(len(files), 40))
    for name in files:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "img_align_celeba" / name)
    rows = [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(files, labels)]
    (folder / "list_attr_celeba.txt").write_text(f"{len(files)}\n" + " ".join(NAMES) + " \n" + "\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(files, partition)))
    return root, labels


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    return make_celeba_root(tmp_path_factory.mktemp("celeba"))


def test_main_trains_evaluates_and_test_mode_reproduces_best_epoch(celeba_root, tmp_path):
    root, _ = celeba_root
    run_dir = tmp_path / "run"
    trainer = main(["--dataset_path", str(root), "--epochs", "1", "--save_path", str(run_dir), "--metrics", "F1", "Err", *TINY])
    assert trainer.task_name == NAMES
    assert [row["mode"] for row in trainer.meter.history] == ["train", "val", "test"]
    with open(run_dir / "history.csv") as handle:
        header = next(csv.reader(handle))
    assert sum(c.endswith("_F1") for c in header) == 40 and sum(c.endswith("_Err") for c in header) == 40
    trained = trainer.meter.history[-1]
    for name in NAMES:  # 4 test images: the error is a multiple of 1/4
        assert 0.0 <= trained[f"{name}_F1"] <= 1.0 and trained[f"{name}_Err"] in (0.0, 0.25, 0.5, 0.75, 1.0)

    tested = main(["--dataset_path", str(root), "--mode", "test", "--load_path", str(run_dir),
                   "--save_path", str(run_dir), "--metrics", "F1", "Err", *TINY])
    again = tested.meter.history[-1]
    assert [again[f"{n}_F1"] for n in NAMES] == pytest.approx([trained[f"{n}_F1"] for n in NAMES])
    assert (run_dir / "test.csv").is_file() and os.path.isfile(run_dir / "best.pt")


def test_reader_splits_and_converts_labels(celeba_root):
    root, labels = celeba_root
    index = read_celeba(str(root))
    assert index.attribute_names == NAMES
    assert index.split.tolist() == PARTITION
    val = CelebA(index, "val", image_size=16)
    image, target = val[1]
    assert len(val) == 4 and image.shape == (3, 16, 16)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target.tolist() == [1.0 if v == 1 else 0.0 for v in labels[13]]  # 2nd val image is the 14th file


@pytest.mark.parametrize("text, message", [
    ("3\n" + " ".join(NAMES) + "\n000001.jpg " + " ".join(["1"] * 40) + "\n", "announces 3 images but 1 follow"),
    ("1\n" + " ".join(NAMES[:39]) + "\n000001.jpg " + " ".join(["1"] * 39) + "\n", "expected 40 attribute names"),
    ("1\n" + " ".join(NAMES) + "\n000001.jpg " + " ".join(["0"] * 40) + "\n", "line 3"),
], ids=["count", "names", "values"])
def test_malformed_attribute_file_names_the_problem(tmp_path, text, message):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_attributes(str(path))


def test_malformed_partition_names_the_line(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    path.write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(ValueError, match="line 2"):
        read_partition(str(path))


def test_missing_or_incomplete_dataset_exits_with_instructions(tmp_path):
    with pytest.raises(SystemExit, match="list_attr_celeba.txt"):
        main(["--dataset_path", str(tmp_path), *TINY])
    root, _ = make_celeba_root(tmp_path / "partial")
    os.remove(root / "celeba" / "img_align_celeba" / "000003.jpg")
    with pytest.raises(SystemExit, match="lacks 1 image"):
        main(["--dataset_path", str(root), *TINY])


def test_f1_error_and_accuracy_match_hand_counts():
    metric = BinaryAttributeMetric(["F1", "Err", "Acc"])
    # positive iff logit > 0: predictions 1 0 1 | 0 1 (logit 0 counts as negative), labels 1 1 0 | 0 1
    metric.update_fun(torch.tensor([[2.0], [-1.0], [3.0]]), torch.tensor([[1.0], [1.0], [0.0]]))
    metric.update_fun(torch.tensor([[0.0], [0.5]]), torch.tensor([[0.0], [1.0]]))
    tp, fp, fn, n = 2, 1, 1, 5
    assert metric.score_fun() == pytest.approx([2 * tp / (2 * tp + fp + fn), (fp + fn) / n, 1 - (fp + fn) / n])
    metric.reinit()
    metric.update_fun(torch.tensor([[-1.0], [-2.0]]), torch.tensor([[0.0], [0.0]]))
    assert metric.score_fun() == [0.0, 0.0, 1.0]  # no positives at all: F1 is 0 by convention
    with pytest.raises(ValueError, match="unknown metric"):
        BinaryAttributeMetric(["AUC"])


def test_encoder_features_and_label_columns():
    encoder = CelebAEncoder(width=2).eval()
    assert encoder(torch.rand(3, 3, 64, 64)).shape == (3, encoder_features(2)) == (3, 16)
    columns = split_task_columns(torch.arange(6.0).reshape(2, 3), ["a", "b", "c"])
    assert columns["b"].tolist() == [[1.0], [4.0]]
    with pytest.raises(ValueError, match="one column per task"):
        split_task_columns(torch.zeros(2, 4), ["a", "b", "c"])


_branch_size = load_example("celeba", "branch_size")[1]


def _celeba_arch_args(argv, num_tasks=len(NAMES)):
    from LibMTL_rgb.config import prepare_args

    params = _main.build_parser().parse_args(["--image_size", "32", "--width", "2", *argv])
    arch_args = prepare_args(params, verbose=False)[0]["arch_args"]
    arch_args["img_size"] = [3, 32, 32]
    chosen = _branch_size.apply_branch_size(params, arch_args, num_tasks, _model.stage_macs(2, 32))
    return chosen, arch_args


@pytest.mark.parametrize("arch", ["CGC", "MTAN", "PLE"])
def test_task_branches_default_to_the_task_count_rule_and_libmtl_sizes_stay_reachable(arch):
    """With 40 tasks the rule (T copies of the last N stages cost at most 3 encoders) leaves the
    last, dense stage; --branch_size libmtl, an explicit --task_stages and (CGC / PLE) an explicit
    --num_experts keep LibMTL's meaning. The built models: task branches on that stage only."""
    from LibMTL_rgb.registry import ARCHITECTURES

    assert _branch_size.task_stages_for(40, _model.stage_macs(64, 64)) == 1
    assert _branch_size.task_stages_for(3, _model.stage_macs(64, 64)) == 5  # LibMTL's: every stage
    chosen, sized = _celeba_arch_args(["--arch", arch])
    assert chosen == 1 and sized["task_stages"] == 1
    assert _celeba_arch_args(["--arch", arch, "--branch_size", "libmtl"]) == (None, {**sized, "task_stages": None})
    assert _celeba_arch_args(["--arch", arch], num_tasks=3) == (None, {**sized, "task_stages": None})  # --stl_task too
    assert _celeba_arch_args(["--arch", arch, "--task_stages", "3"])[1]["task_stages"] == 3
    if arch != "MTAN":
        counts = ["--num_experts", *["1"] * 41]
        assert _celeba_arch_args(["--arch", arch, *counts])[1]["task_stages"] is None

    def build(arch_args):
        torch.manual_seed(0)
        return ARCHITECTURES.get(arch)(NAMES, lambda: CelebAEncoder(2), _model.attribute_heads(NAMES, encoder_features(2)),
                                       False, False, torch.device("cpu"), **arch_args)

    small, libmtl = build(sized), build({**sized, "task_stages": None})

    def task_own(model):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(("attention.", "experts_specific.")))

    encoder = sum(p.numel() for p in CelebAEncoder(2).parameters())
    dense = sum(p.numel() for p in CelebAEncoder(2).stages[-1].parameters())
    if arch == "MTAN":
        assert len(small.attention[NAMES[0]]) == 1 and len(libmtl.attention[NAMES[0]]) == 5
    else:
        assert task_own(small) == 40 * dense and task_own(libmtl) == 40 * encoder
    x = torch.rand(3, 3, 32, 32)
    assert all(out.shape == (3, 1) for out in small(x).values())
