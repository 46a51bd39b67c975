"""The examples run with LibMTL's command-line flags, with LibMTL's meaning, on tiny generated
data: NYUv2/Cityscapes ``--train_bs``/``--test_bs``/``--aug``, Cityscapes ``--train_mode``,
QM9 ``--bs``/``--target`` (LibMTL's task names) and LibMTL's split file ``random_split.t``.
The loaders each run trains on are captured from ``Trainer.train``."""
from __future__ import annotations

import os

import pytest
import torch

from LibMTL_rgb.trainer import Trainer

from example_loading import load_example
from test_example_cityscapes import write_mtan
from test_example_nyu import write_nyu
from test_example_qm9 import NUM_MOLECULES, make_qm9_root

TINY_DENSE = ["--no_pretrained", "--backbone_depth", "18", "--backbone_width", "4", "--device", "cpu",
              "--num_workers", "0", "--epochs", "1", "--img_size", "32", "48"]
TINY_QM9 = ["--val_size", "5", "--test_size", "5", "--dim", "8", "--edge_hidden", "8", "--rgb_steps", "2",
            "--num_workers", "0", "--device", "cpu", "--epochs", "1"]


@pytest.fixture
def loaders(monkeypatch) -> dict:
    """Filled by every ``Trainer.train`` call with the loaders it got (then training proceeds)."""
    seen: dict = {}
    train = Trainer.train

    def spy(self, train_dataloaders, test_dataloaders, epochs, *args, **kwargs):
        seen.update(train=train_dataloaders, test=test_dataloaders, val=kwargs.get("val_dataloaders"), trainer=self)
        return train(self, train_dataloaders, test_dataloaders, epochs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", spy)
    return seen


# ------------------------------------------------------------------------ NYUv2
def test_nyu_takes_libmtl_s_batch_size_and_augmentation_flags(loaders, tmp_path):
    main = load_example("nyu")[0]
    root = write_nyu(tmp_path / "nyuv2", {"train": 4, "val": 3})
    main.main(["--dataset_path", str(root), *TINY_DENSE, "--train_bs", "2", "--test_bs", "3", "--aug"])
    assert loaders["train"].batch_size == 2 and loaders["test"].batch_size == 3
    assert len(loaders["train"].dataset) == 4 and len(loaders["test"].dataset) == 3
    assert loaders["train"].dataset.augmentation is not None and loaders["test"].dataset.augmentation is None


def test_nyu_defaults_are_libmtl_s_where_the_paper_is_silent():
    params = load_example("nyu")[0].parse_args(["--train_bs", "4"])
    assert (params.bs, params.eval_bs) == (4, 8)  # LibMTL: --test_bs 8 does not follow --train_bs
    assert (params.num_workers, params.momentum, params.epochs, params.aug) == (2, 0.9, 200, False)
    assert (params.scheduler, params.step_size, params.gamma, params.lr, params.weight_decay) == ("step", 100, 0.5, 1e-4, 1e-5)
    ours = load_example("nyu")[0].parse_args(["--bs", "4", "--eval_bs", "2"])  # our names: aliases
    assert (ours.bs, ours.eval_bs) == (4, 2)


# ------------------------------------------------------------------- Cityscapes
@pytest.mark.parametrize("train_mode", ["train", "trainval"])
def test_cityscapes_train_mode_trains_on_train_and_evaluates_on_val(loaders, tmp_path, train_mode):
    main = load_example("cityscapes")[0]
    root = write_mtan(tmp_path / "cityscapes", {"train": 4, "val": 3}, size=(32, 48))
    main.main(["--dataset_path", str(root), *TINY_DENSE, "--train_mode", train_mode, "--train_bs", "2", "--test_bs", "1"])
    train_set, test_set = loaders["train"].dataset, loaders["test"].dataset
    assert (len(train_set), len(test_set)) == (4, 3)
    assert (os.path.basename(train_set.split_dir), os.path.basename(test_set.split_dir)) == ("train", "val")
    assert loaders["train"].batch_size == 2 and loaders["test"].batch_size == 1


def test_cityscapes_refuses_an_unknown_train_mode_and_keeps_libmtl_s_defaults(capsys):
    main = load_example("cityscapes")[0]
    with pytest.raises(SystemExit):
        main.parse_args(["--train_mode", "val"])
    assert "invalid choice: 'val'" in capsys.readouterr().err
    params = main.parse_args(["--train_bs", "16"])
    assert (params.bs, params.eval_bs, params.num_workers, params.train_mode, params.epochs) == (16, 64, 2, "train", 200)


# -------------------------------------------------------------------------- QM9
@pytest.fixture(scope="module")
def qm9_root(tmp_path_factory):
    return make_qm9_root(tmp_path_factory.mktemp("qm9"))


def test_qm9_target_selects_tasks_under_libmtl_s_names(loaders, qm9_root, tmp_path, capsys):
    main = load_example("qm9")[0]
    trainer = main.main(["--dataset_path", str(qm9_root), *TINY_QM9, "--bs", "4", "--target", "0", "4", "12",
                         "--save_path", str(tmp_path / "run")])
    assert trainer.task_name == ["0", "4", "12"]
    for split in ("train", "val", "test"):  # LibMTL's --bs: every loader
        assert loaders[split].loader.batch_size == 4
        graphs, labels = next(iter(loaders[split]))
        assert list(labels) == ["0", "4", "12"]
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.endswith("_MAE")] == ["0_MAE", "4_MAE", "12_MAE"]
    # LibMTL's units: column 4 (gap) stays in eV, column 12 (U0) in meV
    assert trainer.task_dict["4"]["metrics_fn"].factor / trainer.task_dict["0"]["metrics_fn"].factor != 1000
    # Table 2 has no STL value for the gap: the baseline is the first evaluated epoch, and it says so
    assert "outside paper Table 2" in capsys.readouterr().out
    assert trainer.meter.base_result["0"] != [0.067]


def test_qm9_default_targets_are_table_2_with_its_stl_row_under_either_naming(qm9_root):
    main = load_example("qm9")[0]
    params = main.example_parser("", main.DEFAULTS, main.add_qm9_args).parse_args([])
    assert params.target == [0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11]
    base = main.paper_stl_base(params.target, [str(t) for t in params.target])
    assert base["0"] == [0.067] and base["12"] == [58.8]  # mu [D], U0 [meV]
    symbols = main.paper_stl_base([12, 0], ["U0", "mu"])
    assert symbols == {"U0": [58.8], "mu": [0.067]}


def test_qm9_task_names_symbol(loaders, qm9_root, tmp_path):
    main = load_example("qm9")[0]
    trainer = main.main(["--dataset_path", str(qm9_root), *TINY_QM9, "--bs", "8", "--target", "12", "2",
                         "--task_names", "symbol", "--save_path", str(tmp_path / "run")])
    assert trainer.task_name == ["U0", "homo"]
    assert trainer.meter.base_result == {"U0": [58.8], "homo": [60.57]}


def test_qm9_uses_libmtl_s_split_file(loaders, qm9_root, tmp_path):
    main = load_example("qm9")[0]
    perm = torch.randperm(NUM_MOLECULES, generator=torch.Generator().manual_seed(7))
    split_file = tmp_path / "random_split.t"
    torch.save(perm, split_file, _use_new_zipfile_serialization=False)
    main.main(["--dataset_path", str(qm9_root), *TINY_QM9, "--bs", "8", "--split_file", str(split_file),
               "--save_path", str(tmp_path / "run")])
    # LibMTL: test = split[:10000], val = split[10000:20000], train = the rest (here 5 and 5)
    assert loaders["test"].loader.dataset.indices() == perm[:5].tolist()
    assert loaders["val"].loader.dataset.indices() == perm[5:10].tolist()
    assert sorted(loaders["train"].loader.dataset.indices()) == sorted(perm[10:].tolist())

    torch.save(perm[:-1], split_file)
    with pytest.raises(SystemExit, match="not a permutation"):
        main.main(["--dataset_path", str(qm9_root), *TINY_QM9, "--split_file", str(split_file)])


def test_qm9_refuses_unknown_targets(qm9_root, capsys):
    main = load_example("qm9")[0]
    for bad in (["19"], ["0", "0"]):
        with pytest.raises(SystemExit) as info:  # when the flags are parsed: exit code 2
            main.main(["--dataset_path", str(qm9_root), *TINY_QM9, "--target", *bad])
        assert info.value.code == 2
        assert "error: argument --target: --target takes distinct PyG QM9 columns" in capsys.readouterr().err


def test_qm9_says_when_libmtl_s_split_file_lies_unused(loaders, qm9_root, tmp_path, monkeypatch, capsys):
    main = load_example("qm9")[0]
    monkeypatch.chdir(tmp_path)
    torch.save(torch.randperm(NUM_MOLECULES), tmp_path / "random_split.t")
    main.main(["--dataset_path", str(qm9_root), *TINY_QM9, "--bs", "8", "--save_path", str(tmp_path / "run")])
    assert "pass --split_file random_split.t" in capsys.readouterr().out
