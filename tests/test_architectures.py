"""Architectures: forward shapes, the exact shared-parameter sets, construction errors,
rep_grad, and their command-line options."""
import copy

import pytest
import torch
import torch.nn as nn

from LibMTL_rgb.architecture.dselect_k import DSelectKGate, smooth_step
from LibMTL_rgb.config import make_parser, prepare_args
from LibMTL_rgb.model import resnet_encoder
from LibMTL_rgb.registry import ARCHITECTURES, hyperparameters_of
from LibMTL_rgb.trainer import build_mtl_model

TASKS = ["seg", "depth", "normal"]
IMG = (3, 16, 16)
FEATURES = 32  # out_channels of resnet_encoder(18, width=4)
ARCHS = ARCHITECTURES.names()


def tiny_resnet() -> nn.Module:
    return resnet_encoder(18, width=4)


def decoders(tasks=TASKS, channels=FEATURES) -> nn.ModuleDict:
    return nn.ModuleDict({t: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 2)) for t in tasks})


def arch_args(arch: str, tasks=TASKS, img=IMG) -> dict:
    """Options that make every architecture run on ``tasks`` and ``img``-sized inputs."""
    args = {"img_size": list(img)}
    if arch in ("MMoE", "DSelect_k"):
        args["num_experts"] = [3]
    elif arch in ("CGC", "PLE"):
        args["num_experts"] = [2] + [1] * len(tasks)
    return args


def build(arch, weighting="EW", encoder=tiny_resnet, rep_grad=False, multi_input=False, tasks=TASKS, **overrides):
    options = {**arch_args(arch, tasks), **overrides}
    return build_mtl_model(weighting, arch, tasks, encoder, decoders(tasks), rep_grad, multi_input, "cpu", options)


#: The documented shared set of every architecture, as a predicate on parameter names.
DOCUMENTED_SHARED = {
    "HPS": lambda n: n.startswith("encoder."),
    "MTAN": lambda n: n.startswith(("encoder.", "transitions.")),
    "MMoE": lambda n: n.startswith("experts_shared."),
    "CGC": lambda n: n.startswith("experts_shared."),
    "PLE": lambda n: n.startswith("experts_shared."),
    "DSelect_k": lambda n: n.startswith("experts_shared."),
    # the columns' last stage (layer4) is task-specific
    "Cross_stitch": lambda n: n == "cross_unit" or (n.startswith("encoder.") and ".layer4." not in n),
    # every column's stage may be any task's parent, the columns' last stage (layer4) is their own
    "LTB": lambda n: n == "branch_logits" or (n.startswith("encoder.") and ".layer4." not in n),
}


def test_every_registered_architecture_is_documented_here():
    assert set(ARCHS) == set(DOCUMENTED_SHARED)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_task_selection(arch):
    torch.manual_seed(0)
    model = build(arch)
    out = model(torch.randn(4, *IMG))
    assert list(out) == TASKS and all(out[t].shape == (4, 2) for t in TASKS)
    assert list(model(torch.randn(4, *IMG), "depth")) == ["depth"]


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "HPS"])  # HPS: AbsArchitecture.forward
def test_unknown_task_name_is_an_error(arch):
    with pytest.raises(ValueError, match="unknown task 'xyz'"):
        build(arch)(torch.randn(2, *IMG), "xyz")


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_params_are_exactly_the_documented_set_and_the_multi_task_ones(arch):
    torch.manual_seed(0)
    model = build(arch)
    names = {id(p): n for n, p in model.named_parameters()}
    shared = [names[id(p)] for p in model.get_share_params()]
    assert len(shared) == len(set(shared)), "a parameter is listed twice"
    assert set(shared) == {n for n in names.values() if DOCUMENTED_SHARED[arch](n)}
    # ...and they are exactly the parameters that more than one task's loss reaches
    reached = tasks_reaching_each_parameter(model, model(torch.randn(4, *IMG)))
    assert set(shared) == {n for n, count in reached.items() if count >= 2}
    assert all(count >= 1 for count in reached.values()), "an unused parameter"


def tasks_reaching_each_parameter(model, out) -> dict:
    """Per parameter name, how many tasks' outputs ``out`` reach it."""
    names = {id(p): n for n, p in model.named_parameters()}
    params = list(model.parameters())
    reached = {n: 0 for n in names.values()}
    for task in TASKS:
        grads = torch.autograd.grad(out[task].sum(), params, retain_graph=True, allow_unused=True)
        for p, g in zip(params, grads):
            reached[names[id(p)]] += g is not None
    return reached


#: The shared set with ``task_stages``: the trunk joins CGC's and PLE's shared experts.
TASK_STAGES_SHARED = {
    "MTAN": DOCUMENTED_SHARED["MTAN"],
    "CGC": lambda n: n.startswith(("trunk.", "experts_shared.")),
    "PLE": lambda n: n.startswith(("trunk.", "experts_shared.")),
}


@pytest.mark.parametrize("task_stages", [1, 2])
@pytest.mark.parametrize("arch", sorted(TASK_STAGES_SHARED))
def test_task_stages_keeps_task_branches_on_the_last_stages_and_the_shared_set_exact(arch, task_stages):
    torch.manual_seed(0)
    model = build(arch, task_stages=task_stages)
    if arch == "MTAN":
        assert len(model.attention["seg"]) == task_stages and len(model.transitions) == task_stages - 1
    else:
        assert len(model.trunk) == 5 - task_stages  # the stem and layer1 ... layer4 (stem apart)
        assert len(model.experts_specific["seg"][0]) == (task_stages if arch == "PLE" else 1)
    out = model(torch.randn(4, *IMG))
    assert all(out[t].shape == (4, 2) for t in TASKS)
    names = {id(p): n for n, p in model.named_parameters()}
    shared = {names[id(p)] for p in model.get_share_params()}
    assert shared == {n for n in names.values() if TASK_STAGES_SHARED[arch](n)}
    reached = tasks_reaching_each_parameter(model, out)
    assert shared == {n for n, count in reached.items() if count >= 2}
    assert all(count >= 1 for count in reached.values()), "an unused parameter"


@pytest.mark.parametrize("arch", sorted(TASK_STAGES_SHARED))
def test_task_stages_covering_every_stage_is_libmtl_s_model(arch):
    torch.manual_seed(0)
    libmtl = build(arch).state_dict()
    torch.manual_seed(0)
    every = build(arch, task_stages=9).state_dict()
    assert list(every) == list(libmtl) and all(torch.equal(every[k], libmtl[k]) for k in libmtl)


@pytest.mark.parametrize("arch", ARCHS)
def test_rep_grad_with_unit_weights_reproduces_the_plain_gradient(arch):
    """rep_grad=True: per-task representation gradients, pushed back with weights 1, give the
    shared parameters the gradient of the summed losses."""
    torch.manual_seed(0)
    plain = build(arch).double()
    torch.manual_seed(0)
    rep = build(arch, rep_grad=True).double()
    rep.load_state_dict(plain.state_dict())
    x = torch.randn(4, *IMG, dtype=torch.float64)

    torch.manual_seed(1)  # the same random choices (LTB's branch sampling) in both models
    losses = torch.stack([o.pow(2).mean() for o in plain(x).values()])
    losses.sum().backward()
    expected = [p.grad.clone() for p in plain.get_share_params()]

    torch.manual_seed(1)
    out = rep(x)
    # one representation per task (HPS: the one shared tensor), decoders read detached leaves
    assert isinstance(rep.rep, torch.Tensor if arch == "HPS" else dict)
    assert all(rep.rep_tasks[t].is_leaf and rep.rep_tasks[t].requires_grad for t in TASKS)
    per_grads, grads = rep._get_grads(torch.stack([o.pow(2).mean() for o in out.values()]))
    assert grads.shape[0] == len(TASKS) and len(per_grads) == len(TASKS)
    rep._backward_new_grads(torch.ones(len(TASKS)), per_grads=per_grads)
    for got, want in zip([p.grad for p in rep.get_share_params()], expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_mtan_matches_pooled_attention_to_each_stage_on_plain_and_dilated_encoders():
    torch.manual_seed(0)
    for dilated in (False, True):
        model = build("MTAN", encoder=lambda: resnet_encoder(18, width=4, dilated=dilated))
        assert all(o.shape == (2, 2) for o in model(torch.randn(2, 3, 32, 32)).values())
    # one mask per task and stage; three shared transitions between the four stages
    assert [len(model.attention[t]) for t in TASKS] == [4, 4, 4] and len(model.transitions) == 3


def test_ple_gates_read_each_level_input_flattened():
    """LibMTL's five levels: the stem, then layer1 ... layer4, each with its gate."""
    torch.manual_seed(0)
    model = build("PLE")
    encoder = tiny_resnet()
    levels = [nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool),
              encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
    sizes, x = [], torch.zeros(2, *IMG)
    for level in levels:
        sizes.append(x[0].numel())
        x = level(x)
    assert [g.linear.in_features for g in model.gate_specific["seg"]] == sizes
    assert [g.linear.out_features for g in model.gate_specific["seg"]] == [3] * 5  # 2 shared + 1 own


def test_cgc_counts_shared_and_task_experts():
    model = build("CGC", num_experts=[2, 1, 0, 3])
    assert model.num_experts == {"share": 2, "seg": 1, "depth": 0, "normal": 3}
    assert [model.gate_specific[t][0].linear.out_features for t in TASKS] == [3, 2, 5]


def test_cross_stitch_units_start_near_identity():
    model = build("Cross_stitch")
    units = model.cross_unit.detach()
    assert units.shape == (3, 3, 3)
    torch.testing.assert_close(units.sum(-1), torch.ones(3, 3))
    assert torch.all(units.diagonal(dim1=1, dim2=2) == 0.9)


def test_dselect_k_gate_weights_are_a_distribution_and_select_k_experts():
    torch.manual_seed(0)
    for experts in (3, 4):  # not / a power of two
        gate = DSelectKGate(in_features=5, num_experts=experts, num_nonzeros=2, gamma=1.0)
        weights = gate(torch.randn(6, 5))
        assert weights.shape == (6, experts) and torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(6))
    # saturated selectors pick exactly one expert each
    with torch.no_grad():
        gate.z_logits.weight.zero_()
        gate.z_logits.bias.copy_(torch.tensor([5.0, -5.0, -5.0, 5.0]))  # codes 1 and 2
    weights = gate(torch.randn(6, 5))
    assert torch.count_nonzero(weights[0]) == 2 and weights[0, 0] == 0 and weights[0, 3] == 0
    assert smooth_step(torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]), 1.0).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(768, FEATURES))

    def forward(self, x):
        return self.net(x)


class ResNetWithHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = tiny_resnet()
        self.stages = self.body.stages
        self.head = nn.Linear(FEATURES, FEATURES)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


@pytest.mark.parametrize("arch", ["MTAN", "Cross_stitch", "PLE", "LTB"])
def test_stagewise_architectures_refuse_encoders_without_stages(arch):
    with pytest.raises(TypeError, match=rf"{arch} needs a ResNet-like encoder.*MLP has no `stages` and lacks conv1"):
        build(arch, encoder=MLP)
    with pytest.raises(ValueError, match=r"parameters \['head.weight', 'head.bias'\] belong to no stage"):
        build(arch, encoder=ResNetWithHead)


@pytest.mark.parametrize("arch, options, message", [
    ("MMoE", {"num_experts": [2, 1]}, r"MMoE takes one --num_experts value.*got \[2, 1\]"),
    ("MMoE", {"num_experts": []}, "MMoE takes one --num_experts value"),
    ("DSelect_k", {"num_experts": [0]}, "at least one shared expert"),
    ("CGC", {"num_experts": [1, 1]}, r"CGC takes 1 \+ 3 --num_experts values.*\['seg', 'depth', 'normal'\]"),
    ("PLE", {"num_experts": [0, 1, 1, 1]}, "at least one shared expert"),
    ("CGC", {"num_experts": [1, -1, 1, 1]}, "must be >= 0"),
    ("MMoE", {"img_size": None}, r"MMoE needs arch_args\['img_size'\] \(--img_size\)"),
    ("DSelect_k", {"num_nonzeros": 0}, "num_nonzeros must be >= 1"),
    ("DSelect_k", {"kgamma": 0.0}, "kgamma must be > 0"),
])
def test_bad_options_are_clear_errors(arch, options, message):
    with pytest.raises(ValueError, match=message):
        build(arch, **options)


@pytest.mark.parametrize("arch, experts", [("MMoE", (2, 0)), ("DSelect_k", (2, 0)), ("CGC", (1, 1)), ("PLE", (1, 1))])
def test_expert_counts_default_when_not_given(arch, experts):
    """Without --num_experts: MMoE / DSelect_k 2 shared experts; CGC / PLE 1 shared + 1 per task."""
    model = build(arch, num_experts=None)
    shared, per_task = experts
    assert len(model.experts_shared) == shared
    assert all(len(model.experts_specific[t]) == per_task for t in model.task_name)


@pytest.mark.parametrize("arch", ["MMoE", "DSelect_k"])
def test_inputs_of_another_size_than_img_size_are_a_clear_error(arch):
    model = build(arch)
    with pytest.raises(ValueError, match=r"sized for 768 features.*\(3, 8, 8\).*--img_size"):
        model(torch.randn(2, 3, 8, 8))


def test_cross_stitch_refuses_multi_input_at_construction():
    assert ARCHITECTURES.get("Cross_stitch").supports_multi_input is False
    with pytest.raises(ValueError, match="multi_input=True is not supported"):
        build("Cross_stitch", multi_input=True)


def test_architecture_flags_are_on_the_command_line_with_libmtl_names():
    help_text = make_parser().format_help()
    for flag in ("--img_size", "--num_experts", "--num_nonzeros", "--kgamma"):
        assert flag in help_text
    params = make_parser().parse_args([])
    assert (params.img_size, params.num_experts, params.num_nonzeros, params.kgamma) == (None, None, 2, 1.0)


@pytest.mark.parametrize("arch, argv, expected", [
    ("MMoE", ["--img_size", "3", "288", "384", "--num_experts", "4"], {"img_size": [3, 288, 384], "num_experts": [4]}),
    ("CGC", ["--img_size", "3", "8", "8", "--num_experts", "1", "2", "2"], {"img_size": [3, 8, 8], "num_experts": [1, 2, 2], "task_stages": None}),
    ("PLE", ["--img_size", "3", "8", "8", "--num_experts", "1", "1", "1"], {"img_size": [3, 8, 8], "num_experts": [1, 1, 1], "task_stages": None}),
    ("DSelect_k", ["--img_size", "3", "8", "8", "--num_experts", "5", "--num_nonzeros", "3", "--kgamma", "2"],
     {"img_size": [3, 8, 8], "num_experts": [5], "num_nonzeros": 3, "kgamma": 2.0}),
    ("MTAN", ["--img_size", "3", "64", "64"], {"img_size": [3, 64, 64], "task_stages": None}),
    ("MTAN", ["--task_stages", "2"], {"img_size": None, "task_stages": 2}),
    ("Cross_stitch", ["--img_size", "3", "8", "8"], {}),
    ("HPS", ["--num_experts", "3"], {}),
])
def test_flags_reach_arch_args(arch, argv, expected):
    params = make_parser().parse_args(["--arch", arch, *argv])
    kwargs, _, _ = prepare_args(params, verbose=False)
    assert kwargs["arch_args"] == expected
    assert set(kwargs["arch_args"]) == {hp.name for hp in hyperparameters_of(ARCHITECTURES.get(arch))}


def test_architectures_deep_copy_with_their_stage_views():
    """MTAN / Cross_stitch keep plain-list views of their encoder stages; a deep copy must
    run its own copied modules, not the original's."""
    torch.manual_seed(0)
    for arch in ("MTAN", "Cross_stitch"):
        model = build(arch).eval()
        clone = copy.deepcopy(model)
        with torch.no_grad():
            for p in clone.get_share_params():
                p.add_(1.0)
        x = torch.randn(2, *IMG)
        assert not torch.allclose(model(x)["seg"], clone(x)["seg"])


class WrapperEncoder(nn.Module):
    """LibMTL's wrapper-encoder pattern (its Office-31 example): ``resnet_network`` then a head."""

    def __init__(self):
        super().__init__()
        self.resnet_network = tiny_resnet()
        self.head = nn.Linear(FEATURES, FEATURES)

    def forward(self, x):
        return self.head(self.resnet_network(x).mean((2, 3)))


def test_mtan_runs_a_wrapper_encoder_s_head_per_task_and_other_stagewise_archs_refuse_it():
    """Single input too (LibMTL's MTAN needs multi_input there): each task's output is the
    wrapper's head on that task's attended feature; the head is shared."""
    torch.manual_seed(0)
    model = ARCHITECTURES.get("MTAN")(TASKS, WrapperEncoder, nn.ModuleDict({t: nn.Identity() for t in TASKS}),
                                      False, False, "cpu").eval()
    x = torch.randn(2, *IMG)
    out = model(x)
    attended = {}
    hooks = [model.attention[t][-1].register_forward_hook(lambda m, i, o, t=t: attended.__setitem__(t, o))
             for t in TASKS]
    with torch.no_grad():
        last = model.encoder.resnet_network.network(x)
    model(x)
    for h in hooks:
        h.remove()
    for task in TASKS:
        assert out[task].shape == (2, FEATURES)
        expected = model.encoder.head((attended[task] * last).mean((2, 3)))
        torch.testing.assert_close(out[task], expected)
    assert not torch.allclose(out["seg"], out["depth"])
    shared = {id(p) for p in model.get_share_params()}
    assert {id(p) for p in model.encoder.head.parameters()} <= shared
    assert not shared & {id(p) for p in model.attention.parameters()}
    with pytest.raises(RuntimeError, match="call the architecture"):
        model.encoder(x)
    for arch in ("PLE", "Cross_stitch"):
        with pytest.raises(TypeError, match="LibMTL wrapper encoder.*only MTAN accepts it"):
            build(arch, encoder=WrapperEncoder)
