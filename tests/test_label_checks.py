"""Label maps are checked once per sample read: class ids outside the task's classes (255 with
13 classes) and label maps of another size than their image stop the run with the file, the
value or both sizes; ``--resize_labels`` resizes such maps instead."""
import numpy as np
import pytest

from example_loading import load_example
from LibMTL_rgb_examples.dense_data import MTANNpyDataset
from LibMTL_rgb_examples.input_files import InvalidLabelError, check_class_labels
from test_corrupt_inputs import nyu_argv
from test_example_nyu import SIZE, write_nyu


@pytest.fixture(scope="module")
def nyu():
    main, nyu_data = load_example("nyu", "nyu_data")
    return main.main, nyu_data


def test_class_ids_outside_the_classes_are_named_with_the_file():
    labels = np.array([[-1, 0, 12], [3, 4, 5]])
    check_class_labels(labels, 13, "ok.npy")  # -1 (ignore) and 0..12 pass
    for bad, shown in ((255, "255"), (13, "13"), (-2, "-2")):
        labels[1, 1] = bad
        with pytest.raises(InvalidLabelError, match=rf"^x/7\.npy: class label\(s\) {shown} outside 0\.\.12; -1 marks"):
            check_class_labels(labels, 13, "x/7.npy")


def nyu_with_label_255(tmp_path, sizes: dict, split: str, index: int, pixel: tuple):
    """A NYUv2 fixture whose ``split/label/<index>.npy`` holds 255 at ``pixel``."""
    root = write_nyu(tmp_path / "nyuv2", sizes)
    path = root / split / "label" / f"{index}.npy"
    label = np.load(path)
    label[pixel] = 255
    np.save(path, label)
    return root


def test_nyu_sample_with_label_255_is_refused_when_read(nyu, tmp_path):
    _, nyu_data = nyu
    root = nyu_with_label_255(tmp_path, {"train": 3, "val": 2}, "train", 2, (5, 7))
    split = nyu_data.nyu_split(str(root), "train")
    split[1]  # other samples read normally
    with pytest.raises(InvalidLabelError, match=r"train/label/2\.npy: class label\(s\) 255 outside 0\.\.12"):
        split[2]


def test_nyu_run_with_an_out_of_range_label_ends_with_one_line(nyu, tmp_path):
    main, _ = nyu
    root = nyu_with_label_255(tmp_path, {"train": 4, "val": 2}, "val", 1, (0, 0))
    with pytest.raises(SystemExit, match=r"error: .*val/label/1\.npy: class label\(s\) 255 outside 0\.\.12") as info:
        main(nyu_argv(root))
    assert "\n" not in str(info.value.code)


def resized_label_root(tmp_path):
    root = write_nyu(tmp_path / "nyuv2", {"train": 3, "val": 2})
    small = np.load(root / "train" / "label" / "1.npy")[::2, ::2]
    np.save(root / "train" / "label" / "1.npy", small)
    return root, small


def test_label_map_of_another_size_is_refused_naming_the_file_and_both_sizes(nyu, tmp_path):
    _, nyu_data = nyu
    root, small = resized_label_root(tmp_path)
    split = nyu_data.nyu_split(str(root), "train")
    h, w = SIZE
    with pytest.raises(InvalidLabelError, match=rf"train/label/1\.npy: label map of {h // 2}×{w // 2} but its image "
                                                rf".*train/image/1\.npy is {h}×{w}; pass --resize_labels"):
        split[1]


def test_resize_labels_resizes_to_the_image_size_by_nearest_neighbour(nyu, tmp_path):
    _, nyu_data = nyu
    root, small = resized_label_root(tmp_path)
    image, targets = nyu_data.nyu_split(str(root), "train", resize_labels=True)[1]
    assert tuple(image.shape[-2:]) == SIZE and tuple(targets["segmentation"].shape) == SIZE
    assert np.array_equal(targets["segmentation"].numpy()[::2, ::2], np.rint(small).astype(np.int64))


def test_resize_labels_is_off_by_default_and_documented(nyu):
    parser = load_example("nyu")[0].build_parser()
    assert parser.parse_args([]).resize_labels is False
    assert "--resize_labels" in parser.format_help()
    assert load_example("cityscapes")[0].build_parser().parse_args(["--resize_labels"]).resize_labels is True
    assert MTANNpyDataset.__init__.__defaults__[-1] is False
