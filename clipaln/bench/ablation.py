"""The reviewers' ablations (`clipaln bench ablation`): each half of the loss, beta, and the
appendix's data sizes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from ..features import (
    FeatureCache,
)
from ..models import ClipBundle
from ..tracks import typographic
from .records import made_with
from .results import mean_and_spread

#: L_pref / L_reg ablation and the CE rows: (row, method, TrainConfig overrides).
#: The rows: every one without the orthogonality penalty (orth = 0), so that only the two halves of
#: the loss differ between them; CE's rows at DPO's lr and epochs (CE's own default adds orth = 10).
ABLATION = (
    ("L_pref only", "dpo", dict(lam=0.0)),
    ("L_reg only", "dpo", dict(pref_weight=0.0)),
    ("L_pref + L_reg", "dpo", {}),
    ("CE", "ce", dict(lam=0.0, lr=0.003, epochs=30)),
    ("CE + KL", "ce", dict(lam=1.0, lr=0.003, epochs=30)),
)
BETA_GRID, LAMBDA_GRID = (0.1, 1.0, 10.0), (0.01, 0.1, 1.0)
DATA_SIZES = (0.125, 0.25, 0.5, 1.0)  # shares of the training pairs (App. I)


def _trained(feats, method: str, seed: int, **overrides) -> dict:
    """evaluate() of a W trained without the orthogonality penalty (unless overridden): the ablation's rows."""
    cfg = typographic.train_config(method, seed=seed, **{"orth": 0.0, **overrides})
    proj, _ = typographic.train(feats, cfg, progress=False)
    return typographic.evaluate(feats, proj)


def _first(feats: typographic.Features, share: float) -> typographic.Features:
    """The features with only the first share of the training pairs (and their clean images)."""
    n = max(1, round(share * len(feats.train.labels)))
    tr = feats.train
    return replace(feats, train=typographic.Split(tr.clean[:n], tr.attacked[:n], tr.labels[:n], tr.written[:n]))


def ablation_table(
    bundle: ClipBundle,
    spec: typographic.Spec,
    cache: FeatureCache | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    feats: typographic.Features | None = None,
) -> dict:
    """`clipaln bench ablation`: the L_pref / L_reg ablation and CE / CE + KL (mean and spread over
    seeds), DPO's beta x lambda sweep (App. G.2) and a data-size sweep (App. I), seed seeds[0]; every
    W without the orthogonality penalty (ABLATION). Sensitivity analyses on the test split: nothing
    here is chosen from them."""
    t0 = time.perf_counter()
    feats = feats or typographic.build_features(bundle, spec, cache, progress=False)
    per_seed = [
        {"base": typographic.evaluate(feats), **{row: _trained(feats, m, s, **ov) for row, m, ov in ABLATION}}
        for s in seeds
    ]
    rows, spread = mean_and_spread(per_seed)
    s0 = seeds[0]
    sweep = [
        {"beta": b, "lam": lam, **_trained(feats, "dpo", s0, beta=b, lam=lam)} for b in BETA_GRID for lam in LAMBDA_GRID
    ]
    sizes = [
        {"n_train": round(share * len(feats.train.labels)), **_trained(_first(feats, share), "dpo", s0)}
        for share in DATA_SIZES
    ]
    return {
        "rows": rows,
        "spread": spread,
        "seeds": list(seeds),
        "beta_lambda": sweep,
        "data_size": sizes,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "n_train": len(feats.train.labels),
        "n_test": len(feats.test.labels),
        "model": bundle.name,
        "made_with": made_with(bundle, spec),
    }


def largest_gap(recorded_rows: dict, live_rows: dict) -> float:
    """The largest absolute difference between two sets of rows over the accuracies both carry:
    how far a live seed is from the same seed in a recorded table (0.0 when they agree exactly)."""
    gaps = [
        abs(live[k] - recorded_rows[row][k])
        for row, live in live_rows.items()
        for k in live
        if k.startswith("accuracy/") and k in recorded_rows.get(row, {})
    ]
    if not gaps:
        raise ValueError("the live rows and the recorded rows share no accuracy")
    return max(gaps)
