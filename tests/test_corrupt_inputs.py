"""Corrupt or unusable inputs are refused with a message that names the file (or the flag):
truncated .npy files, unreadable images, a corrupt PyG processed cache, a batch size larger
than the training split, and --bs 1 with BatchNorm layers."""
import os

import numpy as np
import pytest
from PIL import Image

from example_loading import load_example
from LibMTL_rgb_examples.input_files import CorruptInputError, InputDataError, load_npy, open_image
from test_example_celeba import TINY as CELEBA_TINY
from test_example_celeba import make_celeba_root
from test_example_nyu import SIZE, TINY_MODEL, write_nyu
from test_example_qm9 import make_qm9_root


def truncate(path, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def nyu_main():
    return load_example("nyu")[0].main


def nyu_argv(root, *extra):
    return ["--dataset_path", str(root), "--img_size", *map(str, SIZE), *TINY_MODEL, "--weighting", "EW",
            "--epochs", "1", "--bs", "2", *extra]


def test_readers_name_the_broken_file(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 8, 3), np.float32))
    truncate(tmp_path / "a.npy")
    with pytest.raises(CorruptInputError, match=r"a\.npy: not a readable \.npy file .*truncated"):
        load_npy(str(tmp_path / "a.npy"))
    with pytest.raises(CorruptInputError, match=r"a\.npy: not a readable \.npy file"):
        load_npy(str(tmp_path / "a.npy"), mmap_mode="r")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "b.png")
    truncate(tmp_path / "b.png")
    with pytest.raises(CorruptInputError, match=r"b\.png: not a readable image"):
        open_image(str(tmp_path / "b.png"))
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptInputError, match=r"c\.jpg: not a readable image"):
        open_image(str(tmp_path / "c.jpg"), "RGB")


def test_nyu_truncated_npy_is_named_when_the_split_is_read(nyu_main, tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 4, "val": 2})
    truncate(root / "val" / "image" / "0.npy")
    with pytest.raises(CorruptInputError, match=r"val/image/0\.npy: not a readable \.npy file"):
        nyu_main(nyu_argv(root))


def test_nyu_truncated_npy_met_during_training_ends_with_its_name(nyu_main, tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 4, "val": 2})
    truncate(root / "train" / "depth" / "3.npy")
    with pytest.raises(SystemExit, match=r"error: .*train/depth/3\.npy: not a readable \.npy file"):
        nyu_main(nyu_argv(root))


def test_batch_size_problems_are_explained(nyu_main, tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 3, "val": 2})
    with pytest.raises(InputDataError, match=r"the training split has 3 samples, fewer than the batch size 4 \(--bs\)"):
        nyu_main(nyu_argv(root, "--bs", "4"))
    with pytest.raises(SystemExit, match=r"--bs 1 cannot train this model: its BatchNorm layers"):
        nyu_main(nyu_argv(root, "--bs", "1"))


def test_celeba_unreadable_jpeg_is_named(tmp_path):
    celeba_main = load_example("celeba")[0].main
    root, _ = make_celeba_root(tmp_path)
    (root / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(SystemExit, match=r"error: .*000002\.jpg: not a readable image"):
        celeba_main(["--dataset_path", str(root), *CELEBA_TINY, "--epochs", "1", "--save_path", str(tmp_path / "run")])


def test_corrupt_pyg_processed_cache_says_to_delete_it(tmp_path):
    qm9_data = load_example("qm9", "qm9_data")[1]
    root = make_qm9_root(tmp_path / "qm9")
    qm9_data.read_qm9(str(root))  # writes processed/
    cache = root / "processed" / "data_v3.pt"
    assert cache.is_file()
    truncate(cache, 0.3)
    with pytest.raises(ValueError, match=rf"processed cache {cache} .*delete {os.path.dirname(cache)} and run again"):
        qm9_data.read_qm9(str(root))
