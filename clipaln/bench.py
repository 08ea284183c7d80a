"""Benchmarks as plain dicts (the CLI prints them as JSON): the typographic results table (the
paper's Table 1 in the toy world), the gender table, the speed bench and the toy-world tour."""

from __future__ import annotations

import copy
import random
import statistics
import time
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F

from . import baselines
from .data.typographic import attack
from .features import FeatureCache, encode_images, encode_texts
from .models import ClipBundle, load_clip
from .policy import PreferenceData, logprobs
from .projection import SharedProjection, SpectralScorer, naive_scores
from .toyworld import OBJECTS, render
from .toyworld.render import TEXT_SIZE
from .tracks import gender, phenomena, typographic
from .train import TrainConfig, fit_projection, loop, preference_objective

ROWS = ("base", "CE", "Materzynska", "PAINT", "Defense-Prefix", "DPO", "IPO", "KTO")


class _Timer:
    """Seconds per named row: `with timer("CE"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        self.name = name
        return self

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds[self.name] = round(time.perf_counter() - self.start, 2)


def typographic_table(
    bundle: ClipBundle,
    spec: typographic.Spec,
    cache: FeatureCache | None = None,
    seed: int = 0,
    bma: bool | None = None,
    progress: bool = False,
) -> dict:
    """Train every row on the same cached features and the same batches; returns {row: metrics}.

    Every trained row uses CE's schedule (epochs, batch size, seed), so row r at step s sees the
    batch every other row sees at step s. bma: force BMA averaging on (True) or off (False) for
    DPO/IPO/KTO; None keeps each method's default."""
    t0 = time.perf_counter()
    feats = typographic.build_features(bundle, spec, cache, progress=progress)
    data = feats.preference_data()
    rows = {"base": typographic.evaluate(feats)}
    timer = _Timer()
    ce_cfg = typographic.train_config("ce", seed=seed)
    with timer("CE"):
        w_ce = baselines.ce_projection(data, ce_cfg, progress=progress)
    rows["CE"] = typographic.evaluate(feats, w_ce)
    with timer("Materzynska"):
        w_m = baselines.materzynska_projection(data, ce_cfg, progress=progress)
    rows["Materzynska"] = typographic.evaluate(feats, w_m)
    alpha = baselines.paint_select_alpha(w_ce, data)
    rows["PAINT"] = {**typographic.evaluate(feats, baselines.paint_interpolate(w_ce, alpha)), "alpha": alpha}
    template = spec.template.replace("{a}", "a")
    with timer("Defense-Prefix"):
        prefix_cfg = replace(ce_cfg, lam=1.0, lr=2e-2)  # its own rate and KL weight, CE's batches
        prefix_texts = baselines.defense_prefix(bundle, spec.class_names, template, data, prefix_cfg, progress)
    rows["Defense-Prefix"] = typographic.evaluate(feats, texts=prefix_texts)
    for method in ("dpo", "ipo", "kto"):
        cfg = typographic.train_config(method, seed=seed, bma=bma)
        with timer(method.upper()):
            proj, _ = typographic.train(feats, cfg, progress=progress)
        rows[method.upper()] = {
            **typographic.evaluate(feats, proj),
            "beta": cfg.beta,
            "lambda": cfg.lam,
            "bma": cfg.bma,
        }
    return {
        "rows": rows,
        "train_seconds": timer.seconds,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "n_train": len(data.pref_images),
        "n_test": len(feats.test.labels),
        "model": bundle.name,
    }


def table_frame(result: dict):
    """The results table as a pandas DataFrame in percent (KL as is), rows in the paper's order."""
    import pandas as pd

    rows = {r: result["rows"][r] for r in ROWS if r in result["rows"]}
    df = pd.DataFrame(
        {r: {short: 100 * m[key] for short, key in typographic.SHORT_NAMES.items()} for r, m in rows.items()}
    ).T
    df["KL"] = [m["kl/clean"] for m in rows.values()]
    return df.round({"O": 1, "T": 1, "T_unseen": 1, "OCR": 1, "KL": 4})


def format_table(result: dict) -> str:
    return table_frame(result).to_string()


def gender_table(bundle: ClipBundle, spec: gender.Spec, cache: FeatureCache | None = None, seed: int = 0) -> dict:
    """Each preference method's t = 0 / t = 1 / t* retrieval numbers on the gender track."""
    feats = gender.build_features(bundle, spec, cache)
    out = {}
    for method in gender.DEFAULTS:
        t0 = time.perf_counter()
        proj, _ = gender.train(feats, gender.train_config(method, seed=seed), progress=False)
        r = gender.evaluate(feats, proj)
        r.pop("curve")
        out[method] = {**r, "train_seconds": round(time.perf_counter() - t0, 2)}
    return out


def tour(
    bundle: ClipBundle, n: int = 240, seed: int = 0, cache: FeatureCache | None = None, progress: bool = True
) -> dict:
    """The toy-world tour: the phenomena, a KTO W's trade-off curve, the gender reversal and t*."""
    out = {"phenomena": phenomena.measure(bundle, n=n, seed=seed)}
    feats = typographic.build_features(bundle, typographic.toy_spec(seed=seed), cache, progress=progress)
    W, _ = typographic.train(feats, typographic.train_config("kto", seed=seed), progress=progress)
    sweep = typographic.Sweep(feats, W)
    out["typographic"] = {"method": "kto", "curve": [sweep.at(t) for t in (-2.0, 0.0, 1.0, 2.0)]}
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
