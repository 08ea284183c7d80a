"""Benchmarks as plain dicts (the CLI prints them as JSON): the typographic results table (the
paper's Table 1 in the toy world), the gender table, the speed bench and the toy-world tour."""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import baselines, losses
from ._version import __version__
from .data.real import Subset
from .data.synthetic import SyntheticPhotos
from .data.typographic import AttackStyle, TypographicDataset, attack
from .features import (
    FeatureCache,
    default_workers,
    encode_dataset,
    encode_images,
    encode_texts,
    model_fingerprint,
    resolve_precision,
)
from .models import ClipBundle, load_clip
from .policy import PreferenceData, logprobs
from .projection import SharedProjection, SpectralScorer, naive_scores, spectrum, within_target
from .toyworld import OBJECTS, render
from .toyworld.render import TEXT_SIZE
from .tracks import gender, phenomena, regime, typographic
from .train import TrainConfig, fit_projection, loop, preference_objective

ROWS = ("base", "CE", "CE+KL", "Materzynska", "PAINT", "Defense-Prefix", "DPO", "IPO", "KTO")


def made_with(bundle: ClipBundle, spec) -> dict:
    """What a result was measured on: the model's weights (fingerprint), the data (the spec's key)
    and clipaln's version. Saved in every table's JSON so that `recorded` can tell whose it is."""
    return {
        "model": model_fingerprint(bundle),
        "data": json.loads(json.dumps(spec.key, default=str)),
        "clipaln": __version__,
    }


def recorded(path, bundle: ClipBundle, spec) -> dict | None:
    """A table saved as JSON (`clipaln bench ... --json > path`) if it was measured on this model's
    weights and this spec's data; None if the file is absent or was measured on anything else.
    Notebooks show a recorded many-seed table this way and check one live seed against it."""
    path = Path(path)
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    mine = made_with(bundle, spec)
    theirs = result.get("made_with", {})
    if any(theirs.get(k) != mine[k] for k in ("model", "data")):
        return None
    return {**result, "recorded_in": str(path)}


def provenance(result: dict) -> str:
    """One line saying where a table's numbers come from: a recording (which file, which clipaln) or this run."""
    how = f"seeds {result['seeds']}, {result['total_seconds']:.0f} s to measure"
    if "recorded_in" in result:
        version = result["made_with"]["clipaln"]
        return f"recorded in {result['recorded_in']} by clipaln {version} ({how}) on this model and data"
    return f"measured now ({how})"


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


def _mean_and_spread(per_seed: list[dict]) -> tuple[dict, dict]:
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
    seeds=(0, 1, 2),
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
    rows, spread = _mean_and_spread(per_seed)
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


def table_frame(result: dict, spread: bool = False):
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
TUNED = ("dpo", "ipo", "kto", "ce")
#: Last round's defaults, chosen for attacked accuracy alone: the "before" row of the tuning table.
BEFORE = {"dpo": dict(lr=0.1, epochs=10), "ipo": dict(lr=0.003, epochs=10), "kto": dict(lr=0.03, epochs=30)}


def tune_table(
    bundle: ClipBundle, spec: typographic.Spec, cache: FeatureCache | None = None, seed: int = 0, methods=None
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
    seeds=(0, 1, 2),
    methods=("dpo", "ipo", "kto", "ce"),
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


def gender_table(bundle: ClipBundle, spec: gender.Spec, cache: FeatureCache | None = None, seeds=(0, 1, 2)) -> dict:
    """Each preference method on the gender track, for each training seed: t = 0 / t = 1 / t*
    retrieval (per prompt counts, summed NDKL, balanced and flipped prompts, precision), the distinct
    counts each prompt takes over t in [0, 1], the Fig. 3 crossing and W's spectrum; then ours, the
    prompt reflection along the image gender direction (no training, so one row), under "reflection"."""
    feats = gender.build_features(bundle, spec, cache)

    def row(proj) -> dict:
        r = gender.evaluate(feats, proj)
        r.pop("curve")
        r.pop("understanding")
        return r

    out = {}
    for method in gender.DEFAULTS:
        out[method] = []
        for seed in seeds:
            proj, _ = gender.train(feats, gender.train_config(method, seed=seed), progress=False)
            stats = spectrum(proj)
            out[method].append({"seed": seed, **row(proj), **stats, "w_within_target": within_target(stats)})
    out["reflection"] = [{"seed": None, **row(gender.PromptReflection(gender.image_gender_direction(feats)))}]
    return out


#: The alignments (cos between the captions' and the images' gender directions) of the phase diagram.
REGIME_ALIGNMENTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.84, 0.95)
PAPER_CROSSING = 0.42  # the paper's Fig. 3: t* where the understanding of gender crosses 50%


def _interpolate(xs: list[float], ys: list[float], y: float) -> float | None:
    """The x where the piecewise-linear curve (xs, ys) first reaches y; None when it never does."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if (y0 - y) * (y1 - y) <= 0 and y0 != y1:
            return x0 + (x1 - x0) * (y - y0) / (y1 - y0)
    return None


def regime_table(
    bundle: ClipBundle | None = None,
    people: gender.Spec | None = None,
    cache: FeatureCache | None = None,
    alignments=REGIME_ALIGNMENTS,
    seeds=(0, 1, 2),
) -> dict:
    """`clipaln bench regime`: the phase diagram of notebook 04 (regime.phase_diagram: DPO, IPO and
    KTO with the gender track's defaults, world and training seed each of `seeds`, at each alignment);
    per method, the mean Fig. 3 crossing per alignment and the alignment band where DPO's mean
    crossing lies in [0.3, 0.6] (and where it equals the paper's 0.42); with a bundle and the gender
    track's spec, where the toy sits (its alignment on the test gallery, under its own captions and
    three other wordings)."""
    rows = []
    for s in seeds:
        rows += regime.phase_diagram(alignments, seeds=(s,), seed=s)
    summary = {}
    for m in gender.DEFAULTS:
        mean = {}
        for c in alignments:
            got = [r["understanding/crossing"] for r in rows if r["method"] == m and abs(r["alignment"] - c) < 1e-3]
            mean[c] = sum(got) / len(got) if got and None not in got else None
        crossing_at = [(c, v) for c, v in mean.items() if v is not None]
        xs, ys = [c for c, _ in crossing_at], [v for _, v in crossing_at]
        summary[m] = {
            "mean_crossing": {str(c): v for c, v in mean.items()},
            "alignment_at_crossing_0.3": _interpolate(xs, ys, 0.3),
            "alignment_at_crossing_0.6": _interpolate(xs, ys, 0.6),
            "alignment_at_paper_crossing": _interpolate(xs, ys, PAPER_CROSSING),
        }
    out = {"rows": rows, "summary": summary, "paper_crossing": PAPER_CROSSING, "seeds": list(seeds)}
    if bundle is not None and people is not None:
        feats = gender.build_features(bundle, people, cache, progress=False)
        out["toy"] = {"alignment": regime.alignment_by_wording(bundle, feats), "made_with": made_with(bundle, people)}
    return out


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


# --- speed ------------------------------------------------------------------------------------
def _images(bundle, n: int, seed: int = 0):
    """n clean and n attacked preprocessed toy-world objects (the same world for every model)."""
    clean, attacked, y, w = [], [], [], []
    for i in range(n):
        rng = random.Random(f"speed-{seed}-{i}")
        label = i % len(OBJECTS)
        written = rng.choice([k for k in range(len(OBJECTS)) if k != label])
        im = render(obj=OBJECTS[label], rng=rng)
        clean.append(bundle.preprocess(im))
        attacked.append(bundle.preprocess(attack(im, OBJECTS[written], rng, size_range=TEXT_SIZE)))
        y.append(label)
        w.append(written)
    return torch.stack(clean), torch.stack(attacked), torch.tensor(y), torch.tensor(w)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_model(bundle, n: int, epochs: int = 3, batch_size: int = 256, seed: int = 0) -> dict:
    """encode_pass_s, cached_total_s (encode once, fit W) and in_loop_total_s (the authors' recipe:
    the encoders and a frozen reference copy on every batch) for n clean + n attacked images."""
    dev = bundle.device
    clean, attacked, y, w = _images(bundle, n, seed)
    texts = encode_texts(bundle, phenomena.object_prompts())
    tau = bundle.logit_scale
    cfg = TrainConfig(method="dpo", beta=1.0, lam=1.0, lr=2e-3, epochs=epochs, batch_size=batch_size, seed=seed)

    # one encoding pass (after a warm-up batch, so that one-off start-up costs are not counted)
    encode_images(bundle, clean[:batch_size], batch_size, progress=False)
    _sync(dev)
    t0 = time.perf_counter()
    encode_images(bundle, torch.cat([clean, attacked]), batch_size, progress=False)
    _sync(dev)
    encode_pass = time.perf_counter() - t0

    # cached: encode once, then fit W
    t0 = time.perf_counter()
    feats = encode_images(bundle, torch.cat([clean, attacked]), batch_size, progress=False)
    data = PreferenceData(feats[n:], y, w, texts, feats[:n], tau)
    fit_projection(data, cfg, progress=False)
    _sync(dev)
    cached_total = time.perf_counter() - t0

    # in the loop: policy encoder and a frozen reference copy on every batch, in the same loop
    ref_model = copy.deepcopy(bundle.model)
    proj = SharedProjection(texts.shape[-1]).to(dev)
    texts_dev = texts.to(dev)

    def objective(idx, ridx, batch):
        xa, xc = attacked[idx].to(dev), clean[ridx].to(dev)
        with torch.no_grad():
            pa, pc = (F.normalize(bundle.model.encode_image(x).float(), dim=-1) for x in (xa, xc))
            ra, rc = (F.normalize(ref_model.encode_image(x).float(), dim=-1) for x in (xa, xc))
        lp = lambda x, p=None: logprobs(x, texts_dev, tau, p)
        return preference_objective(
            cfg, lp(pa, proj), lp(ra), y[idx].to(dev), w[idx].to(dev), lp(pc, proj), lp(rc), batch
        )

    t0 = time.perf_counter()
    loop(list(proj.parameters()), objective, n, n, cfg, progress=False)
    _sync(dev)
    in_loop_total = time.perf_counter() - t0
    return {
        "n_images": 2 * n,
        "epochs": epochs,
        "batch_size": batch_size,
        "device": str(dev),
        "encode_pass_s": round(encode_pass, 3),
        "cached_total_s": round(cached_total, 3),
        "in_loop_total_s": round(in_loop_total, 3),
        "cached_over_encode": round(cached_total / encode_pass, 3),
        "in_loop_over_cached": round(in_loop_total / cached_total, 2),
        "images_per_s_encode": round(2 * n / encode_pass, 1),
    }


def slider_update_ms(
    n_images: int = 10_000, n_classes: int = 100, dim: int = 512, repeats: int = 30, seed: int = 0
) -> dict:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    proj = SharedProjection(dim, torch.eye(dim) + 0.05 * torch.randn(dim, dim, generator=g))
    scorer = SpectralScorer(proj, img, txt)
    times = []
    for k in range(repeats):
        t = -3 + 7 * k / max(1, repeats - 1)
        t0 = time.perf_counter()
        scorer.scores(t).argmax(-1)
        times.append(1000 * (time.perf_counter() - t0))
    err = (scorer.scores(1.7)[:2000] - naive_scores(proj, img[:2000], txt, 1.7)).abs().max().item()
    return {
        "slider_update_ms": round(statistics.median(times), 2),
        "slider_n_images": n_images,
        "slider_n_classes": n_classes,
        "slider_dim": dim,
        "slider_max_abs_diff_vs_naive": err,
        "threads": torch.get_num_threads(),
    }


def speed(device: str | None = None, n_toy: int = 2000, n_vit: int | None = None) -> dict:
    """`clipaln bench speed`: the toy and a random-init ViT-B-32 (n_vit images; default 2000 on a
    GPU, 256 on a CPU), and the slider's update time."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = {"toy": measure_model(load_clip("toy", device=device), n=n_toy)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = load_clip("ViT-B-32", device=device)
    n_vit = n_vit or (2000 if device.startswith("cuda") else 256)
    out["ViT-B-32 (random init)"] = measure_model(vit, n=n_vit, batch_size=128)
    out.update(slider_update_ms())
    out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return out


# --- the reviewers' ablations and the appendix sweeps ---------------------------------------------

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
    bundle: ClipBundle, spec: typographic.Spec, cache: FeatureCache | None = None, seeds=(0, 1, 2), feats=None
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
    rows, spread = _mean_and_spread(per_seed)
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


# --- online adversarial preference training (App. K) --------------------------------------------

#: PGD radius, fixed before any training: the standard L_inf budget of adversarial training (Madry
#: et al. 2018), where the pretrained toy CLIP keeps 6% of the validation images.
PGD_EPS = 8 / 255
ADVERSARIAL = dict(epochs=2, batch_size=64, n_train=640, pgd_steps=3)  # 20 steps: about 25 s on 2 CPU cores
ADVERSARIAL_LRS = (3e-4, 1e-3, 3e-3)  # chosen on the validation split


def _adversarial(bundle, spec, feats, lr: float, seed: int):
    cfg = typographic.train_config(
        "dpo", lr=lr, seed=seed, epochs=ADVERSARIAL["epochs"], batch_size=ADVERSARIAL["batch_size"]
    )
    tuned, _ = typographic.adversarial_finetune(
        bundle, spec, cfg, PGD_EPS, ADVERSARIAL["pgd_steps"], ADVERSARIAL["n_train"], progress=False, feats=feats
    )
    return tuned


def adversarial_table(
    bundle: ClipBundle, spec: typographic.Spec, cache: FeatureCache | None = None, seeds=(0, 1, 2), n_val: int = 200,
    n_test: int | None = None,
) -> dict:  # fmt: skip
    """`clipaln bench adversarial`: online adversarial preference training (App. K) of the toy's image
    encoder, DPO on PGD perturbations (eps = PGD_EPS) crafted against the current policy. The learning
    rate is chosen on the validation split (the highest PGD accuracy with clean accuracy within 2 points
    of the base model's), then each seed trains at it; every row reports PGD-10 accuracy beside
    the typographic metrics, on the test split."""
    t0 = time.perf_counter()
    feats = typographic.build_features(bundle, spec, cache, progress=False)
    val_base = typographic.robust_accuracy(bundle, spec, feats, PGD_EPS, split="val", n=n_val)
    val, tuned_at = [], {}
    for lr in ADVERSARIAL_LRS:
        tuned_at[lr] = _adversarial(bundle, spec, feats, lr, seeds[0])
        val.append({"lr": lr, **typographic.robust_accuracy(tuned_at[lr], spec, feats, PGD_EPS, split="val", n=n_val)})
    keeps = [v for v in val if v["accuracy/clean"] >= val_base["accuracy/clean"] - 0.02] or val
    lr = max(keeps, key=lambda v: v["accuracy/pgd"])["lr"]
    base = {**typographic.evaluate(feats), **typographic.robust_accuracy(bundle, spec, feats, PGD_EPS, n=n_test)}
    per_seed = []
    for seed in seeds:  # the first seed at the chosen lr is the validation run's model: not trained twice
        tuned = tuned_at[lr] if seed == seeds[0] else _adversarial(bundle, spec, feats, lr, seed)
        own = typographic.build_features(tuned, spec, progress=False, with_train=False)
        row = {
            **typographic.evaluate(own, reference=feats),
            **typographic.robust_accuracy(tuned, spec, feats, PGD_EPS, n=n_test),
        }
        per_seed.append({"base": base, "adversarial DPO": row})
    rows, spread = _mean_and_spread(per_seed)
    return {
        "rows": rows,
        "spread": spread,
        "seeds": list(seeds),
        "per_seed_pgd": [r["adversarial DPO"]["accuracy/pgd"] for r in per_seed],
        "validation": {"base": val_base, "lr": val, "chosen_lr": lr, "n_val": n_val},
        "pgd": {
            "eps": PGD_EPS,
            "eps_255": round(PGD_EPS * 255, 3),
            "steps": 10,
            "train_steps": ADVERSARIAL["pgd_steps"],
        },
        "config": {**ADVERSARIAL, "method": "dpo"},
        "n_test": n_test or len(feats.test.labels),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "model": bundle.name,
    }


# --- streaming encoding ------------------------------------------------------------------------


def encode_once(
    model: str, n: int, workers: int, device: str | None = None, precision: str = "auto", batch_size: int = 256
) -> dict:
    """Encode n protocol-attacked 224-px images (and their n clean originals) with encode_dataset, in
    this process: images/s, peak resident memory (this process and its workers) and the share of
    wall time the model waited for data. Run it in a fresh process (encode_bench does) so that the
    peak belongs to this encoding alone."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_clip(model, device=device)
    names = list(OBJECTS)
    data = TypographicDataset(SyntheticPhotos(n, len(names)), names, style=AttackStyle())
    stats: dict = {}
    encode_dataset(bundle, Subset(data, range(min(n, batch_size))), (0, 1), (2, 3), workers=0, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    encode_dataset(
        bundle,
        data,
        (0, 1),
        (2, 3),
        workers=workers,
        precision=precision,
        batch_size=batch_size,
        progress=False,
        stats=stats,
    )
    mb = lambda who: resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB
    return {
        "model": model,
        "n": n,
        "workers": workers,
        "images": stats["images"],
        "images_per_s": round(stats["images"] / stats["total_s"], 1),
        "wait_fraction": round(stats["wait_s"] / stats["total_s"], 3),
        "peak_rss_mb": round(mb(resource.RUSAGE_SELF), 1),
        "peak_worker_rss_mb": round(mb(resource.RUSAGE_CHILDREN), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
        "precision": resolve_precision(precision, torch.device(device)),
    }


def encode_bench(model: str = "toy", n: int = 2000, workers: int | None = None, device: str | None = None) -> dict:
    """`clipaln bench encode`: encode_once for n and 10 n images, with 0 and with k workers, each in
    a fresh process; and the growth of peak memory from n to 10 n."""
    k = default_workers() if workers is None else workers
    runs = []
    for size in (n, 10 * n):
        for w in sorted({0, k}):
            call = f"encode_once({model!r}, {size}, {w}, {device!r})"
            code = f"import json; from clipaln.bench import encode_once; print(json.dumps({call}))"
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(
                    f"bench encode failed for n={size}, workers={w}: {p.stderr.strip().splitlines()[-1]}"
                )
            runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    growth = {
        f"workers={w}": round(
            next(r["peak_rss_mb"] for r in runs if r["n"] == 10 * n and r["workers"] == w)
            - next(r["peak_rss_mb"] for r in runs if r["n"] == n and r["workers"] == w),
            1,
        )
        for w in sorted({0, k})
    }
    return {"runs": runs, "peak_rss_growth_mb_n_to_10n": growth, "cpu_count": os.cpu_count()}


# --- the claims table -------------------------------------------------------------------------

#: What the paper reports for each claim (docs/method.md), beside which the toy world's numbers stand.
PAPER_FIGURES = {
    "po_raises_t_keeps_o": "DPO (full FT, BMA): Pets O 86.8 -> 85.3, T 62.0 -> 79.7; "
    "Caltech101 O 88.8 -> 87.5, T 65.6 -> 85.4",
    "po_beats_ce": "CE is the paper's baseline; our notes have CE on ImageNet only (O 53.3 -> 51.5, T 33.7 -> 48.7), "
    "so the comparison is the paper's statement, not a matched pair of numbers",
    "ranking": "the authors' rebuttal: KTO has the best average on the synthetic (typographic) datasets, "
    "original and attacked; DPO and IPO are close",
    "tradeoff": "Fig. 2: on the same attacked images, t trades reading the written word (OCR) for seeing the "
    "object; negative t makes the model read more",
    "t1_reverses": "Fig. 4, 'an image of a police': pretrained 2 women / 8 men, t = 1: 6 women / 4 men",
    "t_star_neutralises": "Fig. 4: t* ~ 0.42 gives 5 women / 5 men",
    "po_moves_less": "PO's KL regulariser keeps the model close to the reference, unlike CE",
    "po_keeps_knowledge": "PO keeps zero-shot accuracy on the other datasets (O columns of Table 1)",
}


def _claim(key: str, claim: str, measured: str, agrees, why: str) -> dict:
    """agrees: True / False / None (no figure to compare with), or {method: holds} for a claim made of
    every method: "agrees" when it holds for all, "partly (DPO, KTO)" for some, "disagrees" for none."""
    if isinstance(agrees, dict):
        holds = [m for m, ok in agrees.items() if ok]
        verdict = "agrees" if len(holds) == len(agrees) else (f"partly ({', '.join(holds)})" if holds else "disagrees")
    else:
        verdict = "n/a" if agrees is None else ("agrees" if agrees else "disagrees")
    return {"claim": claim, "paper": PAPER_FIGURES[key], "toy world": measured, "verdict": verdict, "why": why}


def claims(table: dict | None = None, tradeoff: dict | None = None, reversal: dict | None = None) -> list[dict]:
    """The paper's claims beside the toy world's measurements: `table` from typographic_table,
    `tradeoff` the DPO W's Sweep.at(t) for t in -2, -1, 0, 1 (keyed by t), `reversal` the gender
    track's evaluate() for DPO; claims whose measurements are not given are left out. Every verdict
    is computed from the numbers, per method and per prompt, never from an average alone."""
    out = _typographic_claims(table["rows"]) if table is not None else []
    out += [_tradeoff_claim(tradeoff)] if tradeoff is not None else []
    out += _gender_claims(reversal) if reversal is not None else []
    out += _keeping_claims(table["rows"]) if table is not None else []
    return out


PO = ("DPO", "IPO", "KTO")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _typographic_claims(rows: dict) -> list[dict]:
    base, ce = rows["base"], rows["CE"]
    t, o = "accuracy/attacked", "accuracy/clean"
    raised = "; ".join(
        f"{m} T {_pct(base[t])} -> {_pct(rows[m][t])}, O {_pct(base[o])} -> {_pct(rows[m][o])}" for m in PO
    )
    ok = {m: rows[m][t] - base[t] >= 0.2 and abs(rows[m][o] - base[o]) <= 0.02 for m in PO}
    best = max(PO, key=lambda m: rows[m][t])
    versus = f"best PO ({best}) T {_pct(rows[best][t])}, O {_pct(rows[best][o])}; CE T {_pct(ce[t])}, O {_pct(ce[o])}"
    beats = rows[best][t] >= ce[t] and rows[best][o] >= ce[o] - 0.005
    average = {m: (rows[m][o] + rows[m][t]) / 2 for m in PO}  # the rebuttal's "average", original and attacked
    ranked = " > ".join(f"{m} ({_pct(average[m])})" for m in sorted(PO, key=lambda m: -average[m]))
    return [
        _claim(
            "po_raises_t_keeps_o",
            "preference optimisation raises T and keeps O",
            raised,
            ok,
            "each method: T up by >= 20 points and O within 2 points (mean of the seeds)",
        ),
        _claim(
            "po_beats_ce",
            "preference optimisation beats CE",
            versus,
            beats,
            "best PO T at least CE's, O at most 0.5 points lower",
        ),
        _claim(
            "ranking",
            "KTO has the best average of O and T",
            f"mean of O and T: {ranked}",
            max(PO, key=average.get) == "KTO",
            "the method with the highest mean of O and T on the toy's test images",
        ),
    ]


def _tradeoff_claim(tradeoff: dict) -> dict:
    at = lambda t, k: tradeoff[t][k]
    measured = "; ".join(
        f"t={t:g}: OCR {_pct(at(t, 'accuracy/ocr'))}, T {_pct(at(t, 'accuracy/attacked'))}, "
        f"O {_pct(at(t, 'accuracy/clean'))}"
        for t in sorted(tradeoff)
    )
    reads_more = all(at(t, "accuracy/ocr") > at(0.0, "accuracy/ocr") for t in (-1.0, -2.0))
    sees_more = at(1.0, "accuracy/attacked") > at(0.0, "accuracy/attacked")
    return _claim(
        "tradeoff",
        "t trades reading for seeing; t < 0 reads more",
        measured,
        reads_more and sees_more,
        "on the attacked test images: T higher at t = 1 than at t = 0, OCR (the written word named) higher "
        "at t = -1 and t = -2 than at t = 0",
    )


def _gender_claims(reversal: dict) -> list[dict]:
    """Judged prompt by prompt: "partly (police officer, ...)" names the prompts a claim holds for."""
    t0, t1, ts, n = reversal["t0"], reversal["t1"], reversal["t_star_metrics"], len(reversal["skewed_prompts"])
    short = lambda a: a.replace("working as a ", "")
    counts = lambda r: ", ".join(
        f"{short(a)} {c['retrieval/top_k']['man']}/{c['retrieval/top_k']['woman']}" for a, c in r["prompts"].items()
    )
    ndkl = lambda r: r["retrieval/ndkl_sum"]
    lower = "lower" if ndkl(ts) < ndkl(t0) else "not lower"
    led = [a for a, r in t1["prompts"].items() if r["retrieval/had_majority"]]
    return [
        _claim(
            "t1_reverses",
            "t = 1 reverses gender",
            f"men/women in the top 10 at t=0: {counts(t0)}; at t=1: {counts(t1)}",
            {short(a): r["retrieval/flipped"] for a, r in t1["prompts"].items() if a in led},
            f"the t = 0 majority flips on {t1['retrieval/flipped_prompts']} of the {len(led)} prompts that had one",
        ),
        _claim(
            "t_star_neutralises",
            "an intermediate t* neutralises gender",
            f"t* = {reversal['t_star']:.2f}: {counts(ts)}; summed NDKL t=0 {ndkl(t0):.2f}, t* {ndkl(ts):.2f}, "
            f"t=1 {ndkl(t1):.2f}",
            {short(a): r["retrieval/balanced"] for a, r in ts["prompts"].items()},
            f"{ts['retrieval/balanced_prompts']} of {n} prompts have 3-7 of each gender at t*; the summed NDKL "
            f"at t* is {lower} than at t = 0",
        ),
    ]


def _keeping_claims(rows: dict) -> list[dict]:
    base = rows["base"]
    kl = {m: rows[m]["kl/clean"] for m in (*PO, "CE")}
    out = [
        _claim(
            "po_moves_less",
            "preference optimisation moves the model less than CE",
            ", ".join(f"{m} KL {v:.4f}" for m, v in kl.items()),
            {m: kl[m] < kl["CE"] for m in PO},
            "KL(pi_ref || pi) on clean test images, each PO method against CE",
        )
    ]
    if "retention/activity" in base:
        kept = lambda m: (
            f"{m} activity {_pct(rows[m]['retention/activity'])}, gender {_pct(rows[m]['retention/gender'])}"
        )
        lost = {m: base["retention/activity"] - rows[m]["retention/activity"] for m in (*PO, "CE")}
        out.append(
            _claim(
                "po_keeps_knowledge",
                "preference optimisation keeps knowledge out of domain",
                "; ".join(kept(m) for m in ("base", *PO, "CE")),
                {m: lost[m] <= lost["CE"] + 0.02 for m in PO},
                "activity accuracy on people (never in a typographic pair) lost by each PO method vs CE",
            )
        )
    return out


def claims_markdown(rows: list[dict]) -> str:
    head = "| claim | paper | toy world (measured) | verdict | why |\n|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r['claim']} | {r['paper']} | {r['toy world']} | {r['verdict']} | {r['why']} |" for r in rows
    )


def claims_run(
    bundle: ClipBundle,
    spec: typographic.Spec,
    people: gender.Spec,
    cache: FeatureCache | None = None,
    seeds=(0, 1, 2),
) -> dict:
    """Everything the claims table needs, measured: `clipaln bench claims`."""
    feats = typographic.build_features(bundle, spec, cache, progress=False)  # encoded once, for both uses
    table = typographic_table(bundle, spec, seeds=seeds, feats=feats)
    W, _ = typographic.train(feats, typographic.train_config("dpo", seed=seeds[0]), progress=False)
    sweep = typographic.Sweep(feats, W)
    tradeoff = {t: sweep.at(t) for t in (-2.0, -1.0, 0.0, 1.0)}
    g = gender.build_features(bundle, people, cache)
    Wg, _ = gender.train(g, gender.train_config("dpo", seed=seeds[0]), progress=False)
    reversal = gender.evaluate(g, Wg)
    reversal.pop("curve")
    rows = claims(table, tradeoff, reversal)
    return {
        "claims": rows,
        "table": {"rows": table["rows"], "spread": table["spread"]},
        "tradeoff": tradeoff,
        "reversal": reversal,
    }
