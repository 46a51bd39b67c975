"""App. A.8 diagnostics (Eqs. 3-6) and Definition 2.8 (GMAE / SD-MAE), in float64."""

import math

import pytest
import torch

from LibMTL_rgb.rgb import (
    condition_number,
    conflict,
    gram_of_unit_vectors,
    mer_balance,
    miss_correction_errors,
    proximity,
    rgb_step,
)

try:
    import rgb_reference as ref
except ImportError:  # tests/ imported as a package
    from tests import rgb_reference as ref

F64 = torch.float64


def gram(vectors):
    V = torch.as_tensor(vectors, dtype=F64)
    return V @ V.T


# --------------------------------------------------------------------------- Eq. 3


def test_conflict_hand_computed():
    assert float(conflict(gram([[1.0, 0.0], [0.0, 1.0]]))) == pytest.approx(0.5, abs=1e-15)
    assert float(conflict(gram([[0.6, 0.8], [0.6, 0.8]]))) == pytest.approx(0.0, abs=1e-15)
    assert float(conflict(gram([[1.0, 0.0], [-1.0, 0.0]]))) == pytest.approx(1.0, abs=1e-15)
    # three vectors: cosines (1,2)=0, (1,3)=1/sqrt2, (2,3)=1/sqrt2
    s = 1 / math.sqrt(2)
    R = gram([[1.0, 0.0], [0.0, 1.0], [s, s]])
    expected = ((1 - 0) / 2 + (1 - s) / 2 + (1 - s) / 2) / 3
    assert float(conflict(R)) == pytest.approx(expected, abs=1e-15)
    # no pairs
    assert float(conflict(gram([[1.0, 0.0]]))) == 0.0


def test_conflict_matches_pairwise_loop():
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(7, 30, generator=gen, dtype=F64)
    U = V / V.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(7):
        for j in range(i + 1, 7):
            total += (1 - float(U[i] @ U[j])) / 2
    assert float(conflict(U @ U.T)) == pytest.approx(total / 21, abs=1e-14)


# --------------------------------------------------------------------------- Eq. 4


def test_proximity_hand_computed():
    gbar = torch.eye(2, dtype=F64)
    P = gbar @ gbar.T
    # unchanged -> 0
    assert float(proximity(P, torch.ones(2, dtype=F64), P)) == pytest.approx(0.0, abs=1e-15)
    # each r_i orthogonal to its gbar_i: ||r - gbar||^2 = 2 -> 2/4 per task
    r = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    cross = (r * gbar).sum(1)
    assert float(proximity(r @ r.T, cross, P)) == pytest.approx(0.5, abs=1e-15)
    # one flipped, one kept: (4/4 + 0) / 2
    r = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=F64)
    assert float(proximity(r @ r.T, (r * gbar).sum(1), P)) == pytest.approx(0.5, abs=1e-15)


def test_step_diagnostics_match_explicit_vectors():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(80, generator=gen, dtype=F64)
    G = 0.4 * base + torch.randn(6, 80, generator=gen, dtype=F64)
    reference = ref.ReferenceRGB(lam=0.5, lr=3.0)
    reference.step(G, True)
    out = reference.step(G * 1.5, True)
    first = rgb_step(G, None, lam=0.5, lr=3.0)
    res = rgb_step(G * 1.5, first.ema, lam=0.5, lr=3.0)
    R = torch.stack(out["rs"])
    Gb = torch.stack(out["gbars"])
    expected_conf = sum((1 - float(R[i] @ R[j])) / 2 for i in range(6) for j in range(i + 1, 6)) / 15
    expected_prox = sum(float((R[i] - Gb[i]).pow(2).sum()) / 4 for i in range(6)) / 6
    assert float(conflict(res.rotated_gram)) == pytest.approx(expected_conf, abs=1e-12)
    assert float(proximity(res.rotated_gram, res.rotated_cross, res.gram)) == pytest.approx(expected_prox, abs=1e-12)
    assert expected_prox > 1e-4  # the case really rotated
    # rotation reduced the conflict of the normalised gradients
    assert float(conflict(res.rotated_gram)) < float(conflict(res.gram))
    # gram_of_unit_vectors reproduces the normalised Gram
    torch.testing.assert_close(gram_of_unit_vectors(G * 1.5), res.gram, rtol=0, atol=1e-13)


def test_no_rotation_has_zero_proximity():
    gen = torch.Generator().manual_seed(4)
    G = torch.randn(4, 20, generator=gen, dtype=F64)
    res = rgb_step(G, None, rotate=False)
    assert float(proximity(res.rotated_gram, res.rotated_cross, res.gram)) == pytest.approx(0.0, abs=1e-15)


# --------------------------------------------------------------------------- Eq. 5


def test_condition_number_hand_computed():
    assert float(condition_number(torch.eye(3, dtype=F64))) == pytest.approx(1.0, abs=1e-12)
    c = 0.6
    R = torch.tensor([[1.0, c], [c, 1.0]], dtype=F64)
    assert float(condition_number(R)) == pytest.approx((1 + c) / (1 - c), rel=1e-12)
    # three unit vectors with equal pairwise cosine c: eigenvalues 1+2c, 1-c, 1-c
    R3 = torch.full((3, 3), 0.3, dtype=F64).fill_diagonal_(1.0)
    assert float(condition_number(R3)) == pytest.approx(1.6 / 0.7, rel=1e-12)
    assert condition_number(R3).dtype == F64


def test_condition_number_degenerate_is_inf():
    same = gram([[0.6, 0.8], [0.6, 0.8]])
    assert math.isinf(float(condition_number(same)))
    assert math.isinf(float(condition_number(torch.zeros(3, 3, dtype=F64))))
    # rank deficient: T > D
    V = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert math.isinf(float(condition_number(gram_of_unit_vectors(V))))
    # near-degenerate but above the floor: finite and large
    R = torch.tensor([[1.0, 1 - 1e-6], [1 - 1e-6, 1.0]], dtype=F64)
    k = float(condition_number(R))
    assert math.isfinite(k) and k == pytest.approx((2 - 1e-6) / 1e-6, rel=1e-6)


# --------------------------------------------------------------------------- Eq. 6


def test_mer_balance_reproduces_paper_rows():
    # App. A.8, Figure 5: (conflict, proximity, condition number) -> MER balance
    rows = [
        (0.2294147, 0.0000221, 1.60, 0.559318683),  # NYU, RGB (Step-5)
        (0.444577545, 0.119989514, 9.00, 0.248612289),  # NYU, GradDrop
        (0.480502844, 0.002237285, 1.74, 0.495946487),  # Cityscapes, RGB (Step-5)
    ]
    for c, p, k, expected in rows:
        assert float(mer_balance(c, p, k)) == pytest.approx(expected, abs=5e-6)


def test_mer_balance_limits():
    assert float(mer_balance(0.0, 0.0, 0.0)) == pytest.approx(1.0)
    assert float(mer_balance(0.5, 0.0, math.inf)) == 0.0
    # monotone: more conflict -> lower balance
    assert float(mer_balance(0.6, 0.1, 2.0)) < float(mer_balance(0.5, 0.1, 2.0))


# --------------------------------------------------------------------------- Definition 2.8


def test_miss_correction_errors_hand_computed():
    alpha = torch.tensor([0.3, 0.1], dtype=F64)
    star = torch.tensor([0.1, 0.2], dtype=F64)
    gmae, sd = miss_correction_errors(alpha, star)
    # eps = (0.2, -0.1): GMAE = 0.15; SD-MAE = sqrt(((0.2-0.15)^2 + (-0.1-0.15)^2)/2)
    assert float(gmae) == pytest.approx(0.15, abs=1e-15)
    assert float(sd) == pytest.approx(math.sqrt((0.05**2 + 0.25**2) / 2), abs=1e-15)
    gmae0, sd0 = miss_correction_errors(star, star)
    assert float(gmae0) == 0.0 and float(sd0) == 0.0
    # uniform over-correction: GMAE = shift, SD-MAE = 0
    g, s = miss_correction_errors(star + 0.05, star)
    assert float(g) == pytest.approx(0.05, abs=1e-15) and float(s) == pytest.approx(0.0, abs=1e-15)
