"""Measured agreement of GLS and IMTL (IMTL-L + IMTL-G) with PyPI LibMTL 1.1.5, and of the
other new weightings with the literal float64 references of their tests, over random cases.

    python benchmarks/new_weightings_agreement.py [--cases 20]

Prints, per method, the largest absolute and relative difference of the shared update (and
of the task weights) over all cases and steps. docs/methods_new.md quotes its output.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))

import test_gradvac_groups_imtl_loss as groups  # noqa: E402
import test_new_weightings as new  # noqa: E402
from jacobian_model import jacobian_model, random_jacobian, set_task, step  # noqa: E402
from libmtl_reference_models import libmtl_model, libmtl_step  # noqa: E402


def worst(pairs) -> tuple[float, float]:
    abs_diff = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    rel_diff = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) for a, b in pairs)
    return abs_diff, rel_diff


def random_losses(gen: np.random.Generator) -> list[float]:
    return list(gen.uniform(0.2, 5.0, size=3))


def against_libmtl(name: str, cases: int, gen: np.random.Generator):
    grads, weights = [], []
    for case in range(cases):
        G, losses = random_jacobian(1000 + case), random_losses(gen)
        ours, theirs = jacobian_model(name, G, losses), libmtl_model(name, G, losses)
        if name == "IMTL":
            scales = torch.from_numpy(gen.normal(size=3) * 0.5).float()
            with torch.no_grad():
                ours.imtl_log_scales.copy_(scales)
                theirs.loss_scale.copy_(scales)
        our_w, our_g = step(ours)
        their_w, their_g = libmtl_step(theirs)
        grads.append((our_g.numpy(), their_g.numpy()))
        if name != "GLS":  # LibMTL 1.1.5's GLS returns other numbers by design (docs)
            weights.append((our_w, their_w))
    return grads, weights


def moco_cases(cases: int):
    grads, weights = [], []
    for case in range(cases):
        Gs, Ls = new.jacobians(4, seed=2000 + 10 * case), new.loss_sets(4)
        expected = new.moco_reference(Gs, Ls, 0.5, 0.5, 0.3, 0.5, 0.1, False)
        model = jacobian_model("MoCo", Gs[0], Ls[0])
        for G, L, (lam, direction) in zip(Gs, Ls, expected):
            new.set_all(model, G, L)
            w, g = step(model, MoCo_gamma=0.3, MoCo_rho=0.1)
            grads.append((g.numpy(), direction))
            weights.append((w, lam))
    return grads, weights


def stateful_cases(name: str, cases: int, reference, args: dict, multi_sample: bool = False):
    """Run ``name`` over 4 consecutive steps per case against ``reference(Gs, Ls)``, which
    returns (weights, update) per step."""
    grads, weights = [], []
    for case in range(cases):
        Gs, Ls = new.jacobians(4, seed=4000 + 10 * case), new.loss_sets(4)
        model = jacobian_model(name, Gs[0], Ls[0])
        for G, L, expected in zip(Gs, Ls, reference(Gs, Ls)):
            new.set_all(model, G, L)
            if multi_sample:
                w, g = model.backward(new.sample_losses(model), **args), new.shared_grad(model)
            else:
                w, g = step(model, **args)
                g = g.numpy()
            grads.append((g, expected[1]))
            weights.append((w, expected[0]))
    return grads, weights


def gradvac_group_cases(cases: int):
    grads = []
    for case in range(cases):
        Gs = [random_jacobian(5000 + 10 * case + k, 3, 6) for k in range(4)]
        model = groups.gradvac_model(Gs[0])
        targets = [np.zeros((3, 3)) for _ in groups.GROUPS[1]]
        for k, G in enumerate(Gs):
            for i in range(3):
                set_task(model, i, G[i])
            torch.manual_seed(k)
            got = groups.gradvac_step(model, GradVac_group_type=1)
            torch.manual_seed(k)
            expected = np.empty(6)
            for index, (begin, end) in enumerate(groups.GROUPS[1]):
                expected[begin:end], targets[index] = groups.gradvac_reference(
                    G.numpy()[:, begin:end], targets[index], 0.5, groups.torch_orders(3))
            grads.append((got, expected))
    return grads, []


def sdmgrad_cases(cases: int):
    grads, weights = [], []
    for case in range(cases):
        Gs = new.jacobians(3, seed=3000 + 10 * case)
        model = jacobian_model("SDMGrad", Gs[0], new.LOSSES)
        for G, (w_ref, direction) in zip(Gs, new.sdmgrad_reference(Gs, 0.3, 20)):
            new.set_all(model, G, new.LOSSES)
            w = model.backward(new.sample_losses(model))
            grads.append((new.shared_grad(model), direction.numpy()))
            weights.append((w, w_ref.numpy()))
    return grads, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()
    gen = np.random.default_rng(0)
    rows = {
        "GLS vs LibMTL 1.1.5": against_libmtl("GLS", args.cases, gen),
        "IMTL (hybrid) vs LibMTL 1.1.5": against_libmtl("IMTL", args.cases, gen),
        "MoCo vs literal Algorithm 1": moco_cases(args.cases),
        "DB_MTL vs literal (β=0.9, σ=0.5)": stateful_cases(
            "DB_MTL", args.cases, lambda Gs, Ls: [r[:2] for r in new.db_mtl_reference(Gs, Ls, 0.9, 0.5)],
            {"DB_beta": 0.9, "DB_beta_sigma": 0.5}),
        "ExcessMTL vs literal (η=0.5)": stateful_cases(
            "ExcessMTL", args.cases, lambda Gs, Ls: new.excess_mtl_reference(Gs, 0.5), {"robust_step_size": 0.5}),
        "MoDo vs literal (γ=0.05, ρ=0.1)": stateful_cases(
            "MoDo", args.cases, lambda Gs, Ls: new.modo_reference(Gs, 0.05, 0.1), {"MoDo_gamma": 0.05, "MoDo_rho": 0.1}, True),
        "SDMGrad vs literal (torch.optim.SGD inner loop)": sdmgrad_cases(args.cases),
        "GradVac per layer vs literal per-group GradVac": gradvac_group_cases(args.cases),
    }
    print(f"{'comparison':50s} {'update abs':>11s} {'update rel':>11s} {'weights abs':>12s}")
    for label, (grads, weights) in rows.items():
        g_abs, g_rel = worst(grads)
        w_abs = worst(weights)[0] if weights else float("nan")
        print(f"{label:50s} {g_abs:11.2e} {g_rel:11.2e} {w_abs:12.2e}")


if __name__ == "__main__":
    main()
