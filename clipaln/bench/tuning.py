"""W's schedule chosen on the validation split (`clipaln bench tune`) and each default W's spectrum
and dial over t (`clipaln bench dial`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..features import (
    FeatureCache,
)
from ..models import ClipBundle
from ..projection import spectrum, within_target
from ..tracks import gender, typographic

TUNED = ("dpo", "ipo", "kto", "ce")
#: Last round's defaults, chosen for attacked accuracy alone: the "before" row of the tuning table.
BEFORE = {"dpo": dict(lr=0.1, epochs=10), "ipo": dict(lr=0.003, epochs=10), "kto": dict(lr=0.03, epochs=30)}


def tune_table(
    bundle: ClipBundle,
    spec: typographic.Spec,
    cache: FeatureCache | None = None,
    seed: int = 0,
    methods: Sequence[str] | None = None,
) -> dict:
    """W's learning rate, epochs and orthogonality weight for each method, chosen on the validation
    split (typographic.tune) with training seed `seed`; and, per method, one table of the ways to keep
    W near the identity, each chosen on validation by the same rule and then measured on test (T, O,
    KL, the spectrum, the dial): "lr x epochs" (no penalty), "penalty" (orth > 0), "paper schedule"
    (3 epochs, batch 512, lr chosen) and "before" (last round's default, where there was one)."""
    feats = typographic.build_features(bundle, spec, cache, progress=False)
    out = {}
    for method in methods or TUNED:
        tuned = typographic.tune(feats, method, seed=seed)
        base = tuned["val/base_accuracy/clean"]
        paper = typographic.tune(feats, method, epochs=(3,), orths=(0.0,), seed=seed, batch_size=512)["grid"]
        subsets = {
            "lr x epochs": [r for r in tuned["grid"] if r["orth"] == 0],
            "penalty": [r for r in tuned["grid"] if r["orth"] > 0],
            "paper schedule": paper,
        }
        strategies = {}
        for name, rows in subsets.items():
            best = typographic.choose(rows, base)
            setting = {k: best[k] for k in ("lr", "epochs", "orth")} | ({"batch_size": 512} if rows is paper else {})
            admissible = typographic._admissible(best, base, typographic.MAX_CLEAN_DROP)
            strategies[name] = {"setting": setting, "admissible": admissible}
        if method in BEFORE:
            strategies["before"] = {"setting": {**BEFORE[method], "orth": 0.0}, "admissible": None}
        for row in strategies.values():
            proj, _ = typographic.train(
                feats, typographic.train_config(method, seed=seed, **row["setting"]), progress=False
            )
            row["test"] = {**typographic.evaluate(feats, proj), **typographic.dial(typographic.Sweep(feats, proj))}
        out[method] = {**tuned, "strategies": strategies}
    return out


def _dial_checks(d: dict, o_t0: float) -> dict:
    """The OCR-vs-detection dial's targets (the issue that fixed them; docs/toy-world.md) for one W."""
    return {
        "min_clean_at_least_60": d["dial/min_clean"] >= 0.6,
        "ocr_t-1_10_points_above_t0": d["dial/ocr_t-1"] >= d["dial/ocr_t0"] + 0.10,
        "ocr_t-2_within_3_of_t-1": d["dial/ocr_t-2"] >= d["dial/ocr_t-1"] - 0.03,
        "attacked_t1_20_points_above_t0": d["dial/attacked_t1"] >= d["dial/attacked_t0"] + 0.20,
        "clean_t1_within_2_of_t0": d["dial/clean_t1"] >= o_t0 - 0.02,
        "attacked_step_at_most_35": d["dial/max_attacked_step"] <= 0.35,
    }


def dial_table(
    bundle: ClipBundle,
    spec: typographic.Spec,
    people: gender.Spec | None = None,
    cache: FeatureCache | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = ("dpo", "ipo", "kto", "ce"),
) -> dict:
    """How each method's default W turns the OCR-vs-detection dial on the test split, per training seed:
    W's spectrum and whether it is within its target, the dial's numbers (typographic.dial over t in
    [-2, 1.2]) and its targets met; and the gender track's default W's spectrum (`clipaln bench dial`)."""
    feats = typographic.build_features(bundle, spec, cache, progress=False)
    out: dict = {"typographic": {}, "gender": {}}
    for method in methods:
        rows = []
        for seed in seeds:
            proj, _ = typographic.train(feats, typographic.train_config(method, seed=seed), progress=False)
            stats = spectrum(proj)
            d = typographic.dial(typographic.Sweep(feats, proj))
            checks = {"w_within_target": within_target(stats), **_dial_checks(d, d["dial/clean_t0"])}
            rows.append({"seed": seed, **stats, **d, "checks": checks})
        out["typographic"][method] = rows
    if people is not None:
        g = gender.build_features(bundle, people, cache)
        for method in gender.DEFAULTS:
            out["gender"][method] = []
            for seed in seeds:
                proj, _ = gender.train(g, gender.train_config(method, seed=seed), progress=False)
                stats = spectrum(proj)
                out["gender"][method].append({"seed": seed, **stats, "w_within_target": within_target(stats)})
    return out
