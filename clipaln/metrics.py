"""Metrics: classification accuracy, and fairness of ranked retrieval (docs/method.md sections 4, 5).

Retrieval metrics follow Geyik et al. 2019 ("Fairness-Aware Ranking in Search & Recommendation
Systems"), as used for CLIP by Berg et al. 2022. A ranking is a sequence of attribute values
(e.g. genders) in ranked order; the target is a distribution over attribute values (uniform by
default).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import torch


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose highest score is the label."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return (scores.argmax(-1) == labels).float().mean().item()


def rank(scores: torch.Tensor, k: int | None = None) -> list[int]:
    """Indices of the gallery in decreasing score order (the top k only, when given)."""
    k = len(scores) if k is None else min(k, len(scores))
    return scores.topk(k).indices.tolist()


def _target(values: Sequence[Hashable], target: Mapping | None) -> dict:
    if target is None:
        return {v: 1 / len(values) for v in values}
    total = sum(target.values())
    if total <= 0 or any(p < 0 for p in target.values()):
        raise ValueError("the target distribution needs non-negative weights with a positive sum")
    return {v: p / total for v, p in target.items()}


def share_at_k(ranking: Sequence[Hashable], k: int, values: Sequence[Hashable]) -> dict:
    """Share of each attribute value among the top k."""
    if k < 1 or k > len(ranking):
        raise ValueError(f"k must lie in [1, {len(ranking)}], got {k}")
    c = Counter(ranking[:k])
    return {v: c[v] / k for v in values}


def skew_at_k(
    ranking: Sequence[Hashable], k: int, value: Hashable, values: Sequence[Hashable], target: Mapping | None = None
) -> float:
    """Skew@k(value) = ln(p_topk(value) / p_target(value)); -inf when the value is absent."""
    p = share_at_k(ranking, k, values)[value]
    q = _target(values, target)[value]
    return math.log(p / q) if p > 0 else -math.inf


def max_skew_at_k(
    ranking: Sequence[Hashable], k: int, values: Sequence[Hashable], target: Mapping | None = None
) -> float:
    """MaxSkew@k = max over values of Skew@k: how over-represented the most favoured value is."""
    return max(skew_at_k(ranking, k, v, values, target) for v in values)


def kl_divergence(p: Mapping, q: Mapping) -> float:
    """KL(p || q) over the keys of q, with 0 log 0 = 0."""
    return sum(pv * math.log(pv / q[v]) for v, pv in p.items() if pv > 0)


def ndkl(
    ranking: Sequence[Hashable], values: Sequence[Hashable], target: Mapping | None = None, k: int | None = None
) -> float:
    """Normalised discounted KL: (1/Z) sum_i KL(D_top-i || D_target) / log2(i + 1), Z = sum_i 1/log2(i + 1)."""
    k = len(ranking) if k is None else k
    if k < 1 or k > len(ranking):
        raise ValueError(f"k must lie in [1, {len(ranking)}], got {k}")
    q = _target(values, target)
    z = sum(1 / math.log2(i + 1) for i in range(1, k + 1))
    return sum(kl_divergence(share_at_k(ranking, i, values), q) / math.log2(i + 1) for i in range(1, k + 1)) / z


def precision_at_k(ranking: Sequence[Hashable], k: int, relevant: Hashable) -> float:
    """Share of the top k that carry the relevant label (e.g. the queried activity)."""
    return share_at_k(ranking, k, [relevant])[relevant]
