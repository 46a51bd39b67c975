"""examples/qm9 on a tiny QM9 root in PyG's real raw format (``raw/qm9_v3.pt``, what PyG's
QM9 reads without rdkit): reader, split, transforms, MPNN, metric, and ``main`` end to end."""
import csv
import importlib
import os
from pathlib import Path

import pytest
import torch

from torch_geometric.data import Batch, Data

from example_loading import load_example

_main, _mpnn, _data, _metrics = load_example("qm9", "mpnn", "qm9_data", "qm9_metrics")
main = _main.main
MPNNEncoder, NodeFirstNNConv = _mpnn.MPNNEncoder, _mpnn.NodeFirstNNConv
TASK_NAMES, CompleteGraph, load_qm9 = _data.TASK_NAMES, _data.CompleteGraph, _data.load_qm9
qm9_loaders, split_indices = _data.qm9_loaders, _data.split_indices
QM9MAE = _metrics.QM9MAE

NUM_MOLECULES = 30
TINY = ["--val_size", "5", "--test_size", "5", "--bs", "8", "--dim", "8", "--edge_hidden", "8",
        "--rgb_steps", "5", "--num_workers", "0", "--device", "cpu"]


def molecule(num_atoms: int, gen: torch.Generator) -> dict:
    """One molecule as a dict of PyG's pre-processed QM9 file: a chain of bonded atoms."""
    types = torch.randint(0, 5, (num_atoms,), generator=gen)
    x = torch.zeros(num_atoms, 11)
    x[torch.arange(num_atoms), types] = 1.0
    x[:, 5] = torch.tensor([1.0, 6.0, 7.0, 8.0, 9.0])[types]
    src = torch.arange(num_atoms - 1)
    edge_index = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
    bonds = torch.randint(0, 4, (num_atoms - 1,), generator=gen).repeat(2)
    return {"x": x, "edge_index": edge_index, "edge_attr": torch.nn.functional.one_hot(bonds, 4).float(),
            "pos": torch.randn(num_atoms, 3, generator=gen), "z": x[:, 5].long(),
            "y": torch.randn(1, 19, generator=gen) * 3 + 1, "name": "gdb", "idx": 0}


def make_qm9_root(root: Path, count: int = NUM_MOLECULES) -> Path:
    gen = torch.Generator().manual_seed(0)
    (root / "raw").mkdir(parents=True)
    torch.save([molecule(int(torch.randint(2, 6, (1,), generator=gen)), gen) for _ in range(count)], root / "raw" / "qm9_v3.pt")
    return root


@pytest.fixture(scope="module")
def qm9_root(tmp_path_factory) -> Path:
    return make_qm9_root(tmp_path_factory.mktemp("qm9"))


def test_main_trains_evaluates_and_test_mode_reproduces_best_epoch(qm9_root, tmp_path):
    run_dir = tmp_path / "run"
    trainer = main(["--dataset_path", str(qm9_root), "--epochs", "1", "--save_path", str(run_dir), *TINY])
    assert [row["mode"] for row in trainer.meter.history] == ["train", "val", "test"]
    assert {"best.pt", "last.pt", "history.csv"} <= set(os.listdir(run_dir))
    assert (qm9_root / "split_seed0.pt").is_file()
    with open(run_dir / "history.csv") as handle:
        header = next(csv.reader(handle))
    assert [f"{t}_MAE" for t in TASK_NAMES] == [c for c in header if c.endswith("_MAE")]
    trained = trainer.meter.history[-1]
    # improvement against paper Table 2's STL row: -Δm% = -mean_i (MAE_i - STL_i) / STL_i
    assert trainer.meter.best_result["improvement"] < 0

    tested = main(["--dataset_path", str(qm9_root), "--mode", "test", "--load_path", str(run_dir),
                   "--save_path", str(run_dir), *TINY])
    again = tested.meter.history[-1]
    for task in TASK_NAMES:
        assert again[f"{task}_MAE"] == pytest.approx(trained[f"{task}_MAE"], rel=1e-5)
    assert (run_dir / "test.csv").is_file()


def test_split_is_saved_reused_and_partitions_the_molecules(tmp_path):
    train, val, test = split_indices(str(tmp_path), 40, val_size=7, test_size=5, seed=3)
    assert (len(train), len(val), len(test)) == (28, 7, 5)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(40))
    assert (tmp_path / "split_seed3.pt").is_file()
    torch.manual_seed(123)  # the saved permutation, not the global RNG, decides
    again = split_indices(str(tmp_path), 40, val_size=7, test_size=5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, (train, val, test)))
    with pytest.raises(ValueError, match="delete it"):
        split_indices(str(tmp_path), 41, val_size=7, test_size=5, seed=3)


def test_loaders_standardise_targets_with_training_statistics(qm9_root):
    splits = load_qm9(str(qm9_root), val_size=5, test_size=5, split_seed=0)
    train, _, _ = qm9_loaders(splits, batch_size=6, eval_batch_size=6, num_workers=0, pin_memory=False)
    labels = {task: [] for task in TASK_NAMES}
    for graphs, batch_labels in train:
        assert graphs.edge_attr.shape[1] == 5  # bond one-hot + distance
        for task, value in batch_labels.items():
            assert value.shape == (graphs.num_graphs, 1)
            labels[task].append(value)
    for task in TASK_NAMES:
        column = torch.cat(labels[task])
        assert len(column) == NUM_MOLECULES - 10
        assert float(column.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(column.std()) == pytest.approx(1.0, abs=1e-5)


def test_complete_graph_keeps_bonds_and_distance_is_appended():
    import torch_geometric.transforms as T

    pos = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    bond = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2)
    data = Data(x=torch.zeros(3, 11), pos=pos, edge_index=torch.tensor([[0, 1], [1, 0]]), edge_attr=bond)
    out = T.Compose([CompleteGraph(), T.Distance(norm=False)])(data)
    pairs = {tuple(e): attr for e, attr in zip(out.edge_index.t().tolist(), out.edge_attr)}
    assert set(pairs) == {(i, j) for i in range(3) for j in range(3) if i != j}
    assert pairs[(0, 1)].tolist() == [0.0, 1.0, 0.0, 0.0, 5.0]
    assert pairs[(2, 1)].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, (9 + 16 + 4) ** 0.5])


def test_mpnn_is_invariant_to_atom_order():
    torch.manual_seed(0)
    encoder = MPNNEncoder(dim=8, edge_hidden=8).eval()
    n = 4
    full = (~torch.eye(n, dtype=torch.bool)).nonzero().t()
    data = Data(x=torch.randn(n, 11), edge_index=full, edge_attr=torch.randn(n * n - n, 5))
    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(perm)
    permuted = Data(x=data.x[perm], edge_index=inverse[data.edge_index], edge_attr=data.edge_attr)
    out = encoder(Batch.from_data_list([data, permuted]))
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)


class PyGReferenceMPNN(torch.nn.Module):
    """The encoder as PyG's modules compute it (NNConv evaluating its edge network per edge and
    step), with MPNNEncoder's attribute names so that the two share one state_dict."""

    def __init__(self, dim: int, edge_hidden: int, mp_steps: int, s2s_steps: int) -> None:
        from torch_geometric.nn import NNConv
        from torch_geometric.nn.aggr import Set2Set

        super().__init__()
        self.mp_steps = mp_steps
        self.embed = torch.nn.Linear(11, dim)
        edge_network = torch.nn.Sequential(torch.nn.Linear(5, edge_hidden), torch.nn.ReLU(), torch.nn.Linear(edge_hidden, dim * dim))
        self.conv = NNConv(dim, dim, edge_network, aggr="mean")
        self.gru = torch.nn.GRUCell(dim, dim)
        self.readout = Set2Set(dim, processing_steps=s2s_steps)
        self.project = torch.nn.Linear(2 * dim, dim)

    def forward(self, data):
        h = torch.relu(self.embed(data.x))
        for _ in range(self.mp_steps):
            h = self.gru(torch.relu(self.conv(h, data.edge_index, data.edge_attr)), h)
        return torch.relu(self.project(self.readout(h, index=data.batch, dim_size=data.num_graphs)))


def random_directed_graph(num_nodes: int, num_edges: int, gen: torch.Generator) -> Data:
    """Unsorted, one-way edges (node 0 sends nothing, node 1 receives nothing), float64 features."""
    source = torch.randint(1, num_nodes, (num_edges,), generator=gen)
    target = (source + torch.randint(1, num_nodes - 1, (num_edges,), generator=gen)) % num_nodes
    target = torch.where(target == 1, 0, target)
    return Data(x=torch.randn(num_nodes, 11, generator=gen, dtype=torch.float64), edge_index=torch.stack([source, target]),
                edge_attr=torch.randn(num_edges, 5, generator=gen, dtype=torch.float64))


def outputs_and_gradients(model: torch.nn.Module, data, cotangent: torch.Tensor):
    x = data.x.clone().requires_grad_()
    inputs = data.clone()
    inputs.x = x
    out = model(inputs)
    grads = torch.autograd.grad(out, [x, *model.parameters()], cotangent)
    return out, grads


def test_mpnn_matches_pyg_nnconv_gru_set2set_and_shares_its_state_dict():
    gen = torch.Generator().manual_seed(0)
    data = Batch.from_data_list([random_directed_graph(5, 12, gen), random_directed_graph(7, 20, gen), random_directed_graph(3, 0, gen)])
    torch.manual_seed(1)
    encoder = MPNNEncoder(dim=4, edge_hidden=6, mp_steps=3, s2s_steps=2).double()
    torch.manual_seed(1)
    reference = PyGReferenceMPNN(dim=4, edge_hidden=6, mp_steps=3, s2s_steps=2).double()
    # same parameter names, shapes and (same seed) initial values: checkpoints load either way
    assert list(encoder.state_dict()) == list(reference.state_dict())
    for name, value in reference.state_dict().items():
        assert torch.equal(value, encoder.state_dict()[name]), name
    with torch.no_grad():  # non-zero biases everywhere, so every term of the math is exercised
        for param in encoder.parameters():
            param.add_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * 0.3)
    reference.load_state_dict(encoder.state_dict())

    cotangent = torch.randn(data.num_graphs, 4, generator=gen, dtype=torch.float64)
    out, grads = outputs_and_gradients(encoder, data, cotangent)
    expected_out, expected_grads = outputs_and_gradients(reference, data, cotangent)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    assert out.abs().sum() > 0
    for (name, _), grad, expected in zip([("x", None), *encoder.named_parameters()], grads, expected_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12, msg=name)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("aggr, flow, last_bias", [("add", "target_to_source", True), ("max", "source_to_target", False)])
def test_node_first_nnconv_equals_nnconv_for_other_aggregations_and_flows(aggr, flow, last_bias):
    from torch_geometric.nn import NNConv

    gen = torch.Generator().manual_seed(2)
    graph = random_directed_graph(6, 15, gen)
    x = graph.x[:, :3]
    torch.manual_seed(3)
    edge_network = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3 * 2, bias=last_bias)).double()
    conv = NodeFirstNNConv(3, 2, edge_network, aggr=aggr, flow=flow).double()
    reference = NNConv(3, 2, edge_network, aggr=aggr, flow=flow).double()
    reference.load_state_dict(conv.state_dict())
    out = conv(x, conv.group_edges(graph.edge_index, graph.edge_attr, graph.num_nodes))
    torch.testing.assert_close(out, reference(x, graph.edge_index, graph.edge_attr), rtol=1e-12, atol=1e-12)


def test_node_first_nnconv_rejects_edge_networks_it_cannot_factor():
    with pytest.raises(TypeError, match="ending in nn.Linear"):
        NodeFirstNNConv(3, 2, torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU()))
    with pytest.raises(ValueError, match="in_channels·out_channels = 6"):
        NodeFirstNNConv(3, 2, torch.nn.Sequential(torch.nn.Linear(5, 5)))
    conv = NodeFirstNNConv(3, 2, torch.nn.Sequential(torch.nn.Linear(5, 6)))
    edges = conv.group_edges(torch.tensor([[0], [1]]), torch.zeros(1, 5), num_nodes=2)
    with pytest.raises(ValueError, match="3 nodes"):
        conv(torch.zeros(3, 3), edges)


def test_qm9_mae_is_in_reported_units():
    metric = QM9MAE(std=2.0, scale=1000.0)
    metric.update_fun(torch.tensor([[0.5], [-1.0]]), torch.tensor([[0.0], [0.0]]))
    metric.update_fun(torch.tensor([[1.0]]), torch.tensor([[1.25]]))
    # mean |pred - gt| in standardised units, x std (2 eV) x 1000 meV/eV
    assert metric.score_fun() == [pytest.approx((0.5 + 1.0 + 0.25) / 3 * 2000.0)]
    with pytest.raises(ValueError):
        QM9MAE(std=0.0)


def test_missing_small_and_malformed_datasets_exit_with_instructions(tmp_path):
    with pytest.raises(SystemExit, match="--dataset_path"):
        main(TINY)
    with pytest.raises(SystemExit, match="qm9_v3.pt"):
        main(["--dataset_path", str(tmp_path), *TINY])
    small = make_qm9_root(tmp_path / "small", count=11)
    with pytest.raises(SystemExit, match="11 molecules"):
        main(["--dataset_path", str(small), *TINY])
    bad = tmp_path / "bad"
    (bad / "raw").mkdir(parents=True)
    (bad / "raw" / "qm9_v3.pt").write_bytes(b"not a torch file")
    with pytest.raises(SystemExit, match="could not read QM9"):
        main(["--dataset_path", str(bad), *TINY])


def test_every_pyg_layout_is_read_whether_or_not_rdkit_is_installed(qm9_root, tmp_path, monkeypatch):
    data = importlib.import_module("qm9_data")  # the module main() imports (other tests reload it)
    for has_rdkit in (True, False):  # qm9_v3.pt: PyG's branch without rdkit, also when rdkit is there
        monkeypatch.setattr(data, "_has_rdkit", lambda: has_rdkit)
        root = make_qm9_root(tmp_path / f"rdkit_{has_rdkit}", count=12)
        assert len(data.read_qm9(str(root))) == 12
        assert data.raw_layout(str(root)) == data.PREPROCESSED_RAW
    gdb9 = tmp_path / "gdb9"
    (gdb9 / "raw").mkdir(parents=True)
    for name in data.RDKIT_RAW:
        (gdb9 / "raw" / name).write_text("")
    assert data.raw_layout(str(gdb9)) == data.RDKIT_RAW
    monkeypatch.setattr(data, "_has_rdkit", lambda: False)  # the gdb9 files need rdkit: say so
    with pytest.raises(SystemExit, match=r"with rdkit: pip install -e \.\[qm9\]"):
        main(["--dataset_path", str(gdb9), *TINY])
    with pytest.raises(SystemExit, match="from_qm9pack.py"):  # nothing there: the offline way is named
        main(["--dataset_path", str(tmp_path / "empty"), *TINY])


def test_train_size_keeps_the_first_training_molecules(qm9_root):
    full = load_qm9(str(qm9_root), val_size=5, test_size=5, split_seed=0)
    subset = load_qm9(str(qm9_root), val_size=5, test_size=5, split_seed=0, train_size=7)
    assert len(subset.train) == 7 and len(full.train) == NUM_MOLECULES - 10
    assert all(torch.equal(subset.train[k].pos, full.train[k].pos) for k in range(7))
    assert len(subset.test) == len(full.test) == 5
    with pytest.raises(ValueError, match="--train_size 21"):
        load_qm9(str(qm9_root), val_size=5, test_size=5, split_seed=0, train_size=21)


def test_converter_without_qm9pack_or_rdkit_says_what_to_install(monkeypatch):
    source = importlib.import_module("qm9pack_source")
    monkeypatch.setattr(source.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"qm9pack and rdkit not installed.*\n.*pip install -e \.\[qm9\]"):
        source.require_converter_packages()
