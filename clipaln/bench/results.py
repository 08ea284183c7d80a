"""The typographic results table (the paper's Table 1 in the toy world: O, T, T_unseen, OCR, KL per
method over seeds, beside the baselines) and the toy-world tour."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from .. import baselines, losses
from ..features import (
    FeatureCache,
)
from ..models import ClipBundle
from ..tracks import gender, phenomena, typographic
from .records import made_with

if TYPE_CHECKING:
    import pandas as pd

ROWS = ("base", "CE", "CE+KL", "Materzynska", "PAINT", "Defense-Prefix", "DPO", "IPO", "KTO")


def _typographic_rows(bundle, spec, feats, seed: int, bma, progress: bool, retention) -> dict:
    """Every row of the table for one training seed, each trained on the same batches."""
    data = feats.preference_data()
    score = lambda proj=None, texts=None: {**typographic.evaluate(feats, proj, texts), **retention(proj)}
    rows = {"base": score()}
    ce_cfg = typographic.train_config("ce", seed=seed)
    w_ce = baselines.ce_projection(data, ce_cfg, progress=progress)
    rows["CE"] = score(w_ce)
    lam = losses.method("dpo").paper["lam"]  # the reviewers' ablation: CE with the paper's KL term
    rows["CE+KL"] = score(baselines.ce_projection(data, replace(ce_cfg, lam=lam), progress=progress))
    rows["Materzynska"] = score(baselines.materzynska_projection(data, ce_cfg, progress=progress))
    held_out = feats.val.clean if feats.val is not None else data.reg_images  # PAINT picks alpha on held-out images
    alpha = baselines.paint_select_alpha(w_ce, held_out, feats.texts)
    rows["PAINT"] = {**score(baselines.paint_interpolate(w_ce, alpha)), "alpha": alpha}
    prefix_cfg = replace(ce_cfg, lam=1.0, lr=2e-2)  # its own rate and KL weight, CE's batches
    template = spec.template.replace("{a}", "a")
    rows["Defense-Prefix"] = score(
        texts=baselines.defense_prefix(bundle, spec.class_names, template, data, prefix_cfg, progress)
    )
    for method in ("dpo", "ipo", "kto"):
        cfg = typographic.train_config(method, seed=seed, bma=bma)
        proj, _ = typographic.train(feats, cfg, progress=progress)
        rows[method.upper()] = {**score(proj), "beta": cfg.beta, "lambda": cfg.lam, "bma": cfg.bma}
    return rows


def mean_and_spread(per_seed: list[dict]) -> tuple[dict, dict]:
    """Mean and sample standard deviation over seeds of every numeric metric of every row."""
    mean, spread = {}, {}
    for row in per_seed[0]:
        keys = [k for k, v in per_seed[0][row].items() if isinstance(v, float) and not isinstance(v, bool)]
        values = {k: torch.tensor([r[row][k] for r in per_seed], dtype=torch.float64) for k in keys}
        mean[row] = {**per_seed[0][row], **{k: v.mean().item() for k, v in values.items()}}
        spread[row] = {k: (v.std().item() if len(v) > 1 else 0.0) for k, v in values.items()}
    return mean, spread


def typographic_table(
    bundle: ClipBundle,
    spec: typographic.Spec,
    cache: FeatureCache | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    bma: bool | None = None,
    progress: bool = False,
    feats: typographic.Features | None = None,
) -> dict:
    """Train every row on the same cached features, for each training seed; returns the mean and
    the spread (sample standard deviation) over seeds of each row's metrics.

    Every trained row uses CE's schedule (epochs, batch size), so for a given seed row r at step s
    sees the batch every other row sees at step s. In the toy world each row also reports what it
    keeps out of domain (retention/*: people's activities and gender). bma: force BMA on (True) or
    off (False) for DPO/IPO/KTO; None keeps each method's default."""
    t0 = time.perf_counter()
    if feats is None:  # the caller may pass the spec's features, already built
        feats = typographic.build_features(bundle, spec, cache, progress=progress)
    toy_world = spec.key.get("world") == "toy"
    retention = phenomena.Retention(bundle).at if toy_world else (lambda proj=None: {})
    per_seed = [_typographic_rows(bundle, spec, feats, seed, bma, progress, retention) for seed in seeds]
    rows, spread = mean_and_spread(per_seed)
    return {
        "rows": rows,
        "spread": spread,
        "seeds": list(seeds),
        "per_seed": per_seed,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "n_train": len(feats.train.labels),
        "n_test": len(feats.test.labels),
        "model": bundle.name,
        "made_with": made_with(bundle, spec),
    }


def table_frame(result: dict, spread: bool = False) -> pd.DataFrame:
    """The results table as a pandas DataFrame in percent (KL as is), rows in the paper's order;
    spread=True gives "mean ± sd" strings over the seeds instead of the means."""
    import pandas as pd

    names = [r for r in ROWS if r in result["rows"]]
    cols = {
        **typographic.SHORT_NAMES,
        "KL": "kl/clean",
        "activity": "retention/activity",
        "gender": "retention/gender",
        "|W^T W - I|": "w/orthogonality_gap",
        "S min": "w/s_min",
        "S max": "w/s_max",
    }
    cols = {c: k for c, k in cols.items() if k in result["rows"]["base"]}
    scale = lambda k: 1 if k.startswith(("kl", "w/")) else 100
    digits = lambda k: 4 if k.startswith("kl") else (2 if k.startswith("w/") else 1)
    if not spread:
        df = pd.DataFrame({r: {c: scale(k) * result["rows"][r][k] for c, k in cols.items()} for r in names}).T
        return df.round({c: digits(k) for c, k in cols.items()})
    cell = lambda r, k: (
        f"{scale(k) * result['rows'][r][k]:.{digits(k)}f} ± {scale(k) * result['spread'][r][k]:.{digits(k)}f}"
    )
    return pd.DataFrame({r: {c: cell(r, k) for c, k in cols.items()} for r in names}).T


def format_table(result: dict) -> str:
    return table_frame(result, spread=True).to_string()


#: The methods `clipaln bench tune` tunes (cdpo, rfdpo and mdpo take DPO's setting).


def tour(
    bundle: ClipBundle, n: int = 240, seed: int = 0, cache: FeatureCache | None = None, progress: bool = True
) -> dict:
    """The toy-world tour: the phenomena, a KTO W's trade-off curve, the gender reversal and t*."""
    out = {"phenomena": phenomena.measure(bundle, n=n, seed=seed)}
    feats = typographic.build_features(bundle, typographic.toy_spec(seed=seed), cache, progress=progress)
    W, _ = typographic.train(feats, typographic.train_config("kto", seed=seed), progress=progress)
    sweep = typographic.Sweep(feats, W)
    out["typographic"] = {"method": "kto", "curve": [sweep.at(t) for t in (-2.0, -1.0, 0.0, 1.0, 1.2)]}
    g = gender.build_features(bundle, gender.toy_spec(seed=seed), cache)
    Wg, _ = gender.train(g, gender.train_config("dpo", seed=seed), progress=progress)
    result = gender.evaluate(g, Wg)
    result.pop("curve")
    out["gender"] = {"method": "dpo", **result}
    return out
