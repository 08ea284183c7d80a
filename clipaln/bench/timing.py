"""Speed: cached features against the encoder in the loop (`clipaln bench speed`), the sliders'
update time, and streaming encoding (`clipaln bench encode`)."""

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

import torch
import torch.nn.functional as F

from ..data.real import Subset
from ..data.typographic import AttackStyle, TypographicDataset, attack
from ..features import (
    default_workers,
    encode_dataset,
    encode_images,
    encode_texts,
    resolve_precision,
)
from ..models import ClipBundle, load_clip
from ..policy import PreferenceData, logprobs
from ..projection import SharedProjection, SpectralScorer, naive_scores
from ..synthetic import SyntheticPhotos
from ..toyworld import OBJECTS, render
from ..toyworld.render import TEXT_SIZE
from ..tracks import phenomena
from ..train import TrainConfig, fit_projection, loop, preference_objective


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


def measure_model(bundle: ClipBundle, n: int, epochs: int = 3, batch_size: int = 256, seed: int = 0) -> dict:
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
    """The sliders' update (re-scoring every image against every class at a new t, and the argmax),
    median ms over t in [-3, 3]: slider_update_ms for a W with a trained W's spectrum (singular
    values 0.5 to 1.5: the float32 product, see SpectralScorer), slider_update_ms_wide for a W whose
    spectrum spans four orders of magnitude (the float64 product). Both checked against W_t formed
    explicitly (slider_max_abs_diff_vs_naive)."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    trained = SharedProjection(dim, u @ torch.diag(torch.linspace(0.5, 1.5, dim)) @ v.T)
    wide = SharedProjection(dim, torch.eye(dim) + 0.05 * torch.randn(dim, dim, generator=g))
    out = {}
    for name, proj in (("slider_update_ms", trained), ("slider_update_ms_wide", wide)):
        scorer = SpectralScorer(proj, img, txt)
        times = []
        for k in range(repeats):
            t = -3 + 6 * k / max(1, repeats - 1)
            t0 = time.perf_counter()
            scorer.classify(t)
            times.append(1000 * (time.perf_counter() - t0))
        out[name] = round(statistics.median(times), 2)
        err = (scorer.scores(1.7)[:2000].double() - naive_scores(proj, img[:2000], txt, 1.7)).abs().max().item()
        out["slider_max_abs_diff_vs_naive"] = max(err, out.get("slider_max_abs_diff_vs_naive", 0.0))
    return {
        **out,
        "slider_n_images": n_images,
        "slider_n_classes": n_classes,
        "slider_dim": dim,
        "threads": torch.get_num_threads(),
    }


def available_devices() -> list[str]:
    """The devices this machine can train on: the CPU, and CUDA or Apple's MPS where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def w_fit_speed(device: str, k: int = 1000, d: int = 512, batch_size: int = 256, steps: int = 30) -> dict:
    """Optimiser steps per second of W's fit on `device` at ImageNet-1k's shape (K = 1000 classes,
    d = 512, batch 256; features drawn at random), after 3 warm-up steps."""
    g = torch.Generator().manual_seed(0)
    n = batch_size * (steps + 3)
    feats = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    texts = F.normalize(torch.randn(k, d, generator=g), dim=-1)
    y_w = torch.randint(0, k, (n,), generator=g)
    y_l = (y_w + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k
    data = PreferenceData(feats, y_w, y_l, texts, feats, 100.0)
    dev = torch.device(device)
    times: list[float] = []
    report = lambda step, row: (_sync(dev), times.append(time.perf_counter()))
    cfg = TrainConfig(method="dpo", epochs=1, batch_size=batch_size, bma=True)
    fit_projection(data, cfg, progress=False, device=device, report=report)
    per_step = (times[-1] - times[2]) / (len(times) - 3)
    return {"device": device, "steps_per_s": round(1 / per_step, 2), "k": k, "d": d, "batch_size": batch_size}


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
    out["w_fit_steps_per_s"] = {dev: w_fit_speed(dev)["steps_per_s"] for dev in available_devices()}
    out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return out


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
        "peak_worker_rss_mb": round(mb(resource.RUSAGE_CHILDREN), 1) if workers else None,  # no workers: none
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
