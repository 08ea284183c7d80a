"""Benchmarks that print JSON: the typographic results table (the paper's Table 1, toy world)."""
from __future__ import annotations

import time


from . import baselines, typographic
from .features import FeatureCache
from .models import ClipBundle

ROWS = ("base", "CE", "Materzynska", "PAINT", "Defense-Prefix", "DPO", "IPO", "KTO")


def typographic_table(bundle: ClipBundle, spec: typographic.TrackSpec, cache: FeatureCache | None = None,
                      seed: int = 0, bma: bool | None = None, progress: bool = False) -> dict:
    """Train every row on the same cached features and evaluate them; returns {row: metrics}.

    bma: force BMA averaging on (True) or off (False) for DPO/IPO/KTO; None keeps each method's default."""
    t0 = time.perf_counter()
    feats = typographic.build_features(bundle, spec, cache)
    data = feats.preference_data()
    rows = {"base": typographic.evaluate(feats)}
    timings = {}

    def timed(name, fn):
        s = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - s, 2)
        return out

    ce_cfg = typographic.METHOD_DEFAULTS["ce"]
    w_ce = timed("CE", lambda: baselines.ce_projection(data, epochs=ce_cfg["epochs"], lr=ce_cfg["lr"], batch_size=ce_cfg["batch_size"],
                                                       seed=seed, progress=progress))
    rows["CE"] = typographic.evaluate(feats, w_ce)
    w_m = timed("Materzynska", lambda: baselines.materzynska_projection(data, epochs=ce_cfg["epochs"], lr=ce_cfg["lr"],
                                                                        batch_size=ce_cfg["batch_size"], seed=seed, progress=progress))
    rows["Materzynska"] = typographic.evaluate(feats, w_m)
    alpha = baselines.paint_select_alpha(w_ce, data)
    rows["PAINT"] = {**typographic.evaluate(feats, baselines.paint_interpolate(w_ce, alpha)), "alpha": alpha}
    template = spec.template.replace("{a}", "a") if "{a}" in spec.template else spec.template
    prefix_texts = timed("Defense-Prefix", lambda: baselines.defense_prefix(bundle, spec.class_names, template, data,
                                                                           seed=seed, progress=progress))
    rows["Defense-Prefix"] = typographic.evaluate(feats, texts=prefix_texts)
    for method in ("dpo", "ipo", "kto"):
        cfg = typographic.train_config(method, seed=seed, bma=bma)
        proj, _ = timed(method.upper(), lambda: typographic.train(feats, cfg, progress=progress))
        rows[method.upper()] = {**typographic.evaluate(feats, proj), "beta": cfg.beta, "lambda": cfg.lam, "bma": cfg.bma}
    return {"rows": rows, "train_seconds": timings, "total_seconds": round(time.perf_counter() - t0, 1),
            "n_train": len(data.pref_images), "n_test": len(feats.test.labels), "model": bundle.name}


def table_frame(result: dict):
    """The results table as a pandas DataFrame (rows in the paper's order)."""
    import pandas as pd

    cols = ["O", "T", "T_unseen", "OCR", "KL"]
    df = pd.DataFrame({r: {c: result["rows"][r][c] for c in cols} for r in ROWS if r in result["rows"]}).T
    return df.round({"O": 1, "T": 1, "T_unseen": 1, "OCR": 1, "KL": 4})


def format_table(result: dict) -> str:
    return table_frame(result).to_string()
