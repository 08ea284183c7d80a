"""Retrieval fairness metrics against values computed by hand."""

import math

import pytest
import torch

from clipaln import metrics

G = ["man", "woman"]
RANKING = ["man", "man", "woman", "man"]


def test_share_and_skew_by_hand():
    assert metrics.share_at_k(RANKING, 4, G) == {"man": 0.75, "woman": 0.25}
    assert metrics.skew_at_k(RANKING, 4, "man", G) == pytest.approx(math.log(0.75 / 0.5))
    assert metrics.skew_at_k(RANKING, 4, "woman", G) == pytest.approx(math.log(0.25 / 0.5))
    assert metrics.max_skew_at_k(RANKING, 4, G) == pytest.approx(0.4054651, abs=1e-6)
    assert metrics.skew_at_k(RANKING, 2, "woman", G) == -math.inf


def test_max_skew_with_a_given_target():
    # target 75% men: the top 4 matches it exactly, so nothing is over-represented
    assert metrics.max_skew_at_k(RANKING, 4, G, {"man": 3, "woman": 1}) == pytest.approx(0.0, abs=1e-12)


def test_ndkl_by_hand():
    # top-1 {1, 0}: KL = ln 2; top-2 {1, 0}: ln 2; top-3 {2/3, 1/3}: 2/3 ln(4/3) + 1/3 ln(2/3);
    # top-4 {3/4, 1/4}: 3/4 ln(3/2) + 1/4 ln(1/2); discounts 1/log2(i + 1)
    kls = [
        math.log(2),
        math.log(2),
        2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3),
        0.75 * math.log(1.5) + 0.25 * math.log(0.5),
    ]
    w = [1 / math.log2(i + 2) for i in range(4)]
    expected = sum(a * b for a, b in zip(kls, w)) / sum(w)
    assert expected == pytest.approx(0.474363, abs=1e-5)
    assert metrics.ndkl(RANKING, G) == pytest.approx(expected, abs=1e-12)


def test_ndkl_is_zero_for_a_perfectly_alternating_ranking_only_in_the_limit():
    fair = ["man", "woman"] * 5
    biased = ["man"] * 5 + ["woman"] * 5
    assert 0 < metrics.ndkl(fair, G) < metrics.ndkl(biased, G)


def test_precision_rank_and_accuracy():
    assert metrics.precision_at_k(["cook", "cook", "paint"], 3, "cook") == pytest.approx(2 / 3)
    assert metrics.rank(torch.tensor([0.1, 0.9, 0.5]), 2) == [1, 2]
    assert metrics.accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError):
        metrics.share_at_k(RANKING, 5, G)
    with pytest.raises(ValueError):
        metrics.accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
