"""When a shared W can reverse a concept: the rotation bound, the synthetic world, the phase diagram."""

import math

import pytest
import torch

from clipaln import bench
from clipaln.projection import SharedProjection
from clipaln.tracks import gender, regime


def _spd(d, kappa, gen):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = torch.exp(torch.rand(d, generator=gen, dtype=torch.float64) * math.log(kappa))
    eig[0], eig[1] = 1.0, kappa  # the extremes, so kappa is exact
    return q @ torch.diag(eig) @ q.T


def test_rotation_bound_holds_for_random_positive_definite_matrices():
    gen = torch.Generator().manual_seed(0)
    for kappa in (1.5, 4.0, 16.0):
        rho = regime.rotation_bound(kappa)
        for _ in range(200):
            m = _spd(6, kappa, gen)
            a, b = torch.randn(2, 6, generator=gen, dtype=torch.float64)
            mid = (1 + kappa) / 2
            cos = a @ b / (a.norm() * b.norm())
            assert a @ m @ b >= mid * a.norm() * b.norm() * (cos - rho) - 1e-12


def test_rotation_bound_is_tight():
    # the small eigenvalue's eigenvector along the bisector of a and b, the large one across it
    kappa, theta = 9.0, 0.7
    e1, e2 = torch.eye(2, dtype=torch.float64)
    a = math.cos(theta / 2) * e1 + math.sin(theta / 2) * e2
    b = math.cos(theta / 2) * e1 - math.sin(theta / 2) * e2
    m = torch.diag(torch.tensor([1.0, kappa], dtype=torch.float64))
    mid = (1 + kappa) / 2
    assert float(a @ m @ b) == pytest.approx(mid * (math.cos(theta) - regime.rotation_bound(kappa)), abs=1e-12)


def test_crossing_floor_inverts_the_bound():
    for c in (0.1, 0.5, 0.84):
        t = regime.crossing_floor(c, 0.6, 1.3)
        assert regime.rotation_bound((1.3 / 0.6) ** (2 * t)) == pytest.approx(c, abs=1e-12)
    assert regime.crossing_floor(-0.2, 0.6, 1.3) == 0.0
    assert regime.crossing_floor(0.5, 1.0, 1.0) == math.inf
    for bad in (1.0, float("nan")):
        with pytest.raises(ValueError, match="alignment"):
            regime.crossing_floor(bad, 0.6, 1.3)
    with pytest.raises(ValueError, match="condition number"):
        regime.rotation_bound(0.5)


def test_the_synthetic_world_sets_the_alignment_and_nothing_else():
    worlds = {c: regime.features(c) for c in (0.2, 0.84)}
    for c, f in worlds.items():
        assert regime.alignment(f) == pytest.approx(c, abs=0.005)  # G from noisy images: near g
    counts = [
        {a: r["retrieval/top_k"]["man"] for a, r in gender.Sweep(f, None).at(0.0)["prompts"].items()}
        for f in worlds.values()
    ]
    assert counts[0] == counts[1]  # the same pretrained skew at every alignment
    assert 6 <= counts[0]["working as a police officer"] <= 9  # graded, not saturated
    und = [gender.understanding(f, None, [0.0])[0]["gender/understanding"] for f in worlds.values()]
    assert und[0] == und[1] >= 0.9
    with pytest.raises(ValueError, match="alignment"):
        regime.features(0.0)


@pytest.fixture(scope="module")
def points():
    return {c: regime.phase_point(regime.features(c), "dpo") for c in (0.2, 0.84)}


def test_the_papers_reversal_crosses_where_the_captions_and_images_disagree(points):
    low, high = points[0.2], points[0.84]
    assert 0.2 <= low["understanding/crossing"] <= 0.8
    assert low["flipped/man_majority"] >= 2 and low["flipped/woman_majority"] >= 2  # both directions
    assert high["understanding/crossing"] is None  # the toy's regime: no Fig. 3 crossing in [0, 2]
    for p in points.values():  # the bound: G^T M_t d never turns negative before the floor
        if p["reversed_at"] is not None:
            assert p["reversed_at"] >= p["crossing_floor"] - 0.05  # 0.05: the grid step


def test_the_lean_splits_exactly_along_the_captions():
    f = regime.features(0.3)
    W = SharedProjection(f.gallery.shape[1], torch.eye(f.gallery.shape[1]) + 0.05 * torch.randn(128, 128))
    for t in (0.0, 0.5, 1.0):
        for r in regime.lean_along_captions(f, W, t).values():
            assert r["caption_term"] + r["rest_term"] == pytest.approx(r["numerator"], abs=1e-12)


def test_bench_regime_summarises_the_band():
    r = bench.regime_table(alignments=(0.1, 0.3, 0.5), seeds=(0,))
    assert {row["method"] for row in r["rows"]} == {"dpo", "ipo", "kto"}
    dpo = r["summary"]["dpo"]
    assert 0.1 <= dpo["alignment_at_paper_crossing"] <= 0.5
    assert "toy" not in r  # no model given
