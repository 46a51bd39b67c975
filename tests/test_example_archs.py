"""``--arch`` in every example, without extra flags: every registered architecture trains one
epoch of CelebA (staged encoder, input size from ``--image_size``, default expert counts), of
Cityscapes and of NYUv2 (default expert counts) on tiny data; where an architecture cannot work (QM9's
graphs, the toy's point) ``--arch`` is refused at parse time, before any data is read, with
the reason. Architectures are read from the registry, so ones added later are covered."""
import math

import pytest

from LibMTL_rgb.registry import ARCHITECTURES
from example_loading import load_example
from test_example_celeba import make_celeba_root
from test_example_cityscapes import write_mtan
from test_example_nyu import SIZE as NYU_SIZE
from test_example_nyu import write_nyu

ALL_ARCHS = ARCHITECTURES.names()
CELEBA_TINY = ["--bs", "6", "--width", "2", "--image_size", "16", "--num_workers", "0", "--device", "cpu",
               "--weighting", "EW", "--epochs", "1"]
CITYSCAPES_TINY = ["--no_pretrained", "--backbone_depth", "18", "--backbone_width", "4", "--device", "cpu",
                   "--weighting", "EW", "--img_size", "32", "64", "--epochs", "1", "--bs", "2"]


def finite_test_row(trainer) -> dict:
    row = [r for r in trainer.meter.history if r["mode"] == "test"][-1]
    assert all(math.isfinite(v) for k, v in row.items() if isinstance(v, float)), row
    return row


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    return make_celeba_root(tmp_path_factory.mktemp("celeba_archs"))[0]


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_celeba_trains_with_every_architecture(arch, celeba_root, tmp_path):
    main = load_example("celeba")[0].main
    trainer = main(["--dataset_path", str(celeba_root), "--arch", arch, "--save_path", str(tmp_path), *CELEBA_TINY])
    assert type(trainer.model).__mro__[1].__name__ == arch
    # CGC, MTAN, PLE: 40 tasks get their own branches on the last stage only (README, --branch_size)
    assert trainer.kwargs["arch_args"].get("task_stages") == (1 if arch in ("CGC", "MTAN", "PLE") else None)
    finite_test_row(trainer)


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return write_mtan(tmp_path_factory.mktemp("cityscapes_archs") / "cityscapes2", {"train": 2, "val": 2})


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_cityscapes_trains_with_every_architecture(arch, cityscapes_root, tmp_path):
    main = load_example("cityscapes")[0].main
    trainer = main(["--dataset_path", str(cityscapes_root), "--arch", arch, "--save_path", str(tmp_path), *CITYSCAPES_TINY])
    finite_test_row(trainer)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    return write_nyu(tmp_path_factory.mktemp("nyu_archs") / "nyuv2", {"train": 2, "val": 2})


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_nyu_trains_with_every_architecture(arch, nyu_root, tmp_path):
    main = load_example("nyu")[0].main
    trainer = main(["--dataset_path", str(nyu_root), "--img_size", *map(str, NYU_SIZE), "--no_pretrained",
                    "--backbone_depth", "18", "--backbone_width", "4", "--device", "cpu", "--weighting", "EW",
                    "--arch", arch, "--epochs", "1", "--bs", "2", "--save_path", str(tmp_path)])
    finite_test_row(trainer)


def test_default_expert_counts_reach_the_architecture(cityscapes_root, tmp_path):
    main = load_example("cityscapes")[0].main
    trainer = main(["--dataset_path", str(cityscapes_root), "--arch", "CGC", "--save_path", str(tmp_path), *CITYSCAPES_TINY])
    assert len(trainer.model.experts_shared) == 1
    assert all(len(trainer.model.experts_specific[t]) == 1 for t in trainer.task_name)


@pytest.mark.parametrize("arch", [a for a in ALL_ARCHS if a != "HPS"])
def test_qm9_refuses_image_architectures_at_parse_time(arch, capsys, tmp_path):
    main = load_example("qm9", "mpnn")[0].main
    with pytest.raises(SystemExit) as exit_info:  # no dataset: nothing is read before the refusal
        main(["--arch", arch, "--dataset_path", str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"{arch} cannot run on this example" in message and "graph" in message


@pytest.mark.parametrize("arch", [a for a in ALL_ARCHS if a != "HPS"])
def test_toy_refuses_other_architectures_at_parse_time(arch, capsys):
    main = load_example("toy")[0].main
    with pytest.raises(SystemExit) as exit_info:
        main(["--arch", arch, "--steps", "1"])
    assert exit_info.value.code == 2
    assert "only --arch HPS applies" in capsys.readouterr().err
