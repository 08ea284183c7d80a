"""W's schedule chosen on the validation split (`clipaln bench tune`) and each default W's spectrum
and dial over t (`clipaln bench dial`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..features import (
    FeatureCache,
)
from ..models import ClipBundle
from ..projection import MAX_GAP, S_RANGE, spectrum, within_target
from ..tracks import gender, typographic

#: The grid W's schedule is chosen from, on the validation split.
LR_GRID = (0.003, 0.01, 0.03, 0.1)
EPOCH_GRID = (3, 10, 30)
ORTH_GRID = (0.0, 1.0, 10.0, 100.0)
TUNED = ("dpo", "ipo", "kto", "ce")
#: Defaults chosen for attacked accuracy alone (W's target ignored): the "before" row of the tuning table.
BEFORE = {"dpo": dict(lr=0.1, epochs=10), "ipo": dict(lr=0.003, epochs=10), "kto": dict(lr=0.03, epochs=30)}


def admissible(row: dict, base_clean: float, max_clean_drop: float) -> bool:
    """W within its target, clean accuracy kept at t = 1 and over the whole dial (validation numbers)."""
    return (
        row["w/within_target"]
        and row["val/dial/clean_t1"] >= base_clean - max_clean_drop
        and row["val/dial/min_clean"] >= typographic.MIN_CLEAN_ON_DIAL
    )


def choose(grid: list[dict], base_clean: float, max_clean_drop: float = typographic.MAX_CLEAN_DROP) -> dict:
    """The row of a tuning grid to keep: among the admissible rows (W within its target, validation
    clean accuracy within max_clean_drop of the base model's at t = 1 and at least MIN_CLEAN_ON_DIAL
    at every t of the dial), the highest validation attacked accuracy at t = 1. When none is
    admissible: the row whose W is nearest orthogonal."""
    ok = [r for r in grid if admissible(r, base_clean, max_clean_drop)]
    if ok:
        return max(ok, key=lambda r: r["val/dial/attacked_t1"])
    near = [r for r in grid if r["w/within_target"]]
    if near:  # W within its target, but the dial's clean accuracy is missed: the smallest miss
        return max(near, key=lambda r: r["val/dial/min_clean"])
    return min(grid, key=_distance_to_target)


def _distance_to_target(row: dict) -> float:
    """How many times too far from orthogonal W is, by its worst measure (1 = on the target's edge)."""
    return max(
        row["w/orthogonality_gap"] / MAX_GAP, S_RANGE[0] / max(row["w/s_min"], 1e-12), row["w/s_max"] / S_RANGE[1]
    )


def tune(
    feats: typographic.Features,
    method: str,
    lrs: Sequence[float] = LR_GRID,
    epochs: Sequence[int] = EPOCH_GRID,
    orths: Iterable[float] = ORTH_GRID,
    seed: int = 0,
    max_clean_drop: float = typographic.MAX_CLEAN_DROP,
    progress: bool = False,
    **overrides: Any,
) -> dict:
    """W's learning rate, epochs and orthogonality weight for `method`, chosen on the validation split
    only (`choose`; when no row is admissible, `admissible` is False in the result). Each grid row
    holds the setting, W's spectrum and the validation dial (`typographic.dial` on feats.val). Returns
    {"choice": {lr, epochs, orth}, "admissible", "val/base_accuracy/clean", "grid": [rows]}."""
    if feats.val is None:
        raise ValueError("tuning needs a validation split: build the features from a spec with a val_set")
    base = typographic.evaluate_split(feats, feats.val)["accuracy/clean"]
    grid = []
    for orth in orths:
        for lr in lrs:
            for n in epochs:
                cfg = typographic.train_config(method, lr=lr, epochs=n, orth=orth, seed=seed, **overrides)
                proj, _ = typographic.train(feats, cfg, progress=progress)
                stats = spectrum(proj)
                val = typographic.dial(typographic.Sweep(feats, proj, split="val"))
                row = {"lr": lr, "epochs": n, "orth": orth, **stats, "w/within_target": within_target(stats)}
                grid.append(row | {f"val/{k}": v for k, v in val.items()})
    best = choose(grid, base, max_clean_drop)
    choice = {k: best[k] for k in ("lr", "epochs", "orth")}
    return {
        "choice": choice,
        "admissible": admissible(best, base, max_clean_drop),
        "val/base_accuracy/clean": base,
        "grid": grid,
    }


def tune_table(
    bundle: ClipBundle,
    spec: typographic.Spec,
    cache: FeatureCache | None = None,
    seed: int = 0,
    methods: Sequence[str] | None = None,
) -> dict:
    """W's learning rate, epochs and orthogonality weight for each method, chosen on the validation
    split (`tune`) with training seed `seed`; and, per method, one table of the ways to keep
    W near the identity, each chosen on validation by the same rule and then measured on test (T, O,
    KL, the spectrum, the dial): "lr x epochs" (no penalty), "penalty" (orth > 0), "paper schedule"
    (3 epochs, batch 512, lr chosen) and "before" (BEFORE: a default chosen for attacked accuracy alone)."""
    feats = typographic.build_features(bundle, spec, cache, progress=False)
    out = {}
    for method in methods or TUNED:
        tuned = tune(feats, method, seed=seed)
        base = tuned["val/base_accuracy/clean"]
        paper = tune(feats, method, epochs=(3,), orths=(0.0,), seed=seed, batch_size=512)["grid"]
        subsets = {
            "lr x epochs": [r for r in tuned["grid"] if r["orth"] == 0],
            "penalty": [r for r in tuned["grid"] if r["orth"] > 0],
            "paper schedule": paper,
        }
        strategies = {}
        for name, rows in subsets.items():
            best = choose(rows, base)
            setting = {k: best[k] for k in ("lr", "epochs", "orth")} | ({"batch_size": 512} if rows is paper else {})
            strategies[name] = {"setting": setting, "admissible": admissible(best, base, typographic.MAX_CLEAN_DROP)}
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
