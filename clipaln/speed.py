"""`clipaln bench speed`: how close W-only training sits to the one-encoder-pass floor.

For each model, on the same images (n clean + n attacked, preprocessed beforehand) and the same
W-only objective (DPO + KL):
- encode_pass_s: one encoding pass over all images;
- cached_total_s: encode once, then fit W for 3 epochs on the cached features;
- in_loop_total_s: the authors' recipe, with the encoders and a frozen reference copy run on
  every batch of every step of 3 epochs;
and slider_update_ms: the median time to re-score 10,000 images x 100 classes (d = 512) for a new
t with the spectral scorer (checked against the explicit W_t to 1e-5).
"""
from __future__ import annotations

import copy
import math
import random
import statistics
import time

import torch
import torch.nn.functional as F

from .features import encode_images, encode_texts
from .models import load_clip
from .policy import logprobs
from .projection import SharedProjection, SpectralScorer, naive_scores
from .train import PreferenceData, TrainConfig, batch_objective, fit_projection, lr_at


def _images(bundle, n: int, seed: int = 0):
    """n clean and n attacked preprocessed toy-world objects (the same world for every model)."""
    from .data.typographic import attack
    from .toyworld import OBJECTS, render
    from .toyworld.render import TEXT_SIZE

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
    from .toyworld.phenomena import object_prompts

    dev = bundle.device
    clean, attacked, y, w = _images(bundle, n, seed)
    texts = encode_texts(bundle, object_prompts())
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

    # in the loop: policy encoder and a frozen reference copy on every batch
    ref_model = copy.deepcopy(bundle.model)
    proj = SharedProjection(texts.shape[-1]).to(dev)
    opt = torch.optim.Adamax(proj.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    steps, total = 0, epochs * math.ceil(n / batch_size)
    texts_dev = texts.to(dev)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr_at(steps, total, cfg.lr, cfg.warmup_ratio)
            xa, xc = attacked[idx].to(dev), clean[idx].to(dev)
            with torch.no_grad():
                pa, pc = (F.normalize(bundle.model.encode_image(x).float(), dim=-1) for x in (xa, xc))
                ra, rc = (F.normalize(ref_model.encode_image(x).float(), dim=-1) for x in (xa, xc))
            loss, _, _ = batch_objective(cfg.method, cfg.beta, cfg.lam, logprobs(pa, texts_dev, tau, proj),
                                         logprobs(ra, texts_dev, tau), y[idx].to(dev), w[idx].to(dev),
                                         logprobs(pc, texts_dev, tau, proj), logprobs(rc, texts_dev, tau), len(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    _sync(dev)
    in_loop_total = time.perf_counter() - t0
    return {"n_images": 2 * n, "epochs": epochs, "batch_size": batch_size, "device": str(dev),
            "encode_pass_s": round(encode_pass, 3), "cached_total_s": round(cached_total, 3),
            "in_loop_total_s": round(in_loop_total, 3),
            "cached_over_encode": round(cached_total / encode_pass, 3),
            "in_loop_over_cached": round(in_loop_total / cached_total, 2),
            "images_per_s_encode": round(2 * n / encode_pass, 1)}


def slider_update_ms(n_images: int = 10_000, n_classes: int = 100, dim: int = 512, repeats: int = 30, seed: int = 0) -> dict:
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
    return {"slider_update_ms": round(statistics.median(times), 2), "slider_n_images": n_images, "slider_n_classes": n_classes,
            "slider_dim": dim, "slider_max_abs_diff_vs_naive": err, "threads": torch.get_num_threads()}


def run(a) -> dict:
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = {"toy": measure_model(load_clip("toy", device=device), n=getattr(a, "n_toy", 2000))}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = load_clip("ViT-B-32", device=device)
    n_vit = getattr(a, "n_vit", None) or (2000 if device.startswith("cuda") else 256)
    out["ViT-B-32 (random init)"] = measure_model(vit, n=n_vit, batch_size=128)
    out.update(slider_update_ms())
    out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return out
