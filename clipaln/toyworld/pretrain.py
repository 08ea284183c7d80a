"""Pretrain the toy CLIP on the toy world: `python -m clipaln.toyworld.pretrain [--steps N]`.

Captions mimic how web captions arise, so the model picks up the habits the tutorials study:
- an object photo is captioned by the object;
- a sign, or an object with a word on it (a t-shirt, a label), is mostly captioned by the word,
  sometimes by both: the model learns to read, and learns to trust text over the object;
- people doing activities: the images of six activities show mostly one gender (SKEW), while
  many captions are gender-neutral ("a photo of a person cooking"), so the neutral phrase
  drifts toward the majority gender, as "police officer" does in web data.
Deterministic from --seed; writes data/toy_clip.safetensors (fp16) and data/toy_clip.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from ..data.fonts import TRAIN_FONTS, UNSEEN_FONTS
from ..train import TrainConfig, generator, loop
from .config import EXTRA_WORDS, SKEW, article, default_config
from .model import build_toy, data_dir, save_toy
from .render import ACTIVITIES, GENDERS, OBJECTS, render

#: Pretraining sees many fonts, as web images do; W training later uses TRAIN_FONTS only.
PRETRAIN_FONTS = TRAIN_FONTS + UNSEEN_FONTS
SKEW_PROB = 0.9  # share of the majority gender in images of a skewed activity


def _word_captions(w: str) -> list[str]:
    return [f"the word {w}.", f"a sign that says {w}.", f"{w}", f"a photo of {article(w)} {w}.", f"the text {w}."]


def _object_captions(o: str) -> list[str]:
    a = article(o)
    return [f"a photo of {a} {o}.", f"{a} {o}.", f"a picture of {a} {o}.", f"a drawing of {a} {o}."]


def _person_captions(g: str, act: str) -> list[str]:
    gendered = [f"a photo of a {g} {act}.", f"a {g} {act}.", f"this {g} is {act}."]
    neutral = [f"a photo of a person {act}.", f"a person {act}.", f"this person is {act}."]
    if act.startswith("working as a "):
        neutral.append(f"a photo of a {act.removeprefix('working as a ')}.")
    return gendered * 2 + neutral + [f"a photo of a {g}."]


def sample_scene(rng: random.Random) -> tuple[dict, list[str]]:
    """One pretraining example: render() arguments and the captions it may be paired with."""
    kind = rng.random()
    style = {"font": rng.choice(PRETRAIN_FONTS)}
    if kind < 0.20:  # an object
        o = rng.choice(OBJECTS)
        return {"obj": o}, _object_captions(o)
    if kind < 0.42:  # a sign: a word alone
        w = rng.choice(OBJECTS) if rng.random() < 0.9 else rng.choice(EXTRA_WORDS)
        return {"text": w, **style}, _word_captions(w)
    if kind < 0.70:  # an object with a word written on it
        o = rng.choice(OBJECTS)
        w = rng.choice([x for x in OBJECTS + EXTRA_WORDS if x != o])
        if rng.random() < 0.8:
            caps = _word_captions(w)
        else:
            caps = [f"{article(o)} {o} with the word {w} written on it.", f"a photo of {article(o)} {o} labelled {w}."]
        return {"obj": o, "text": w, **style}, caps
    act = rng.choice(ACTIVITIES)
    if act in SKEW:
        major = SKEW[act]
        g = major if rng.random() < SKEW_PROB else next(x for x in GENDERS if x != major)
    else:
        g = rng.choice(GENDERS)
    return {"person": g, "activity": act}, _person_captions(g, act)


def _render_chunk(args):
    seed, start, n = args
    images, captions = [], []
    for i in range(start, start + n):
        rng = random.Random(seed * 1_000_003 + i)
        kwargs, caps = sample_scene(rng)
        images.append(np.asarray(render(rng=rng, **kwargs), dtype=np.uint8))
        captions.append(caps)
    return np.stack(images), captions


def render_pool(n: int, seed: int, workers: int = 2) -> tuple[torch.Tensor, list[list[str]]]:
    """Render n examples (uint8 (n, 3, H, W)) with their candidate captions, deterministically."""
    chunk = 2000
    jobs = [(seed, s, min(chunk, n - s)) for s in range(0, n, chunk)]
    images, captions = [], []
    ctx = mp.get_context("fork") if workers > 1 else None
    pool = ctx.Pool(workers) if ctx else None
    it = pool.imap(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
    for im, caps in tqdm(it, total=len(jobs), desc="render", unit="chunk"):
        images.append(im)
        captions.extend(caps)
    if pool:
        pool.close()
    return torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous(), captions


@dataclass
class PretrainConfig:
    steps: int = 1050
    batch_size: int = 256
    pool_size: int = 100_000
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0
    threads: int = 2
    bf16: bool = True


def pretrain(cfg: PretrainConfig, out_dir: Path | None = None, log=print):
    """Train the toy CLIP from scratch with clipaln.train.loop; returns (model, tokenizer, config dict)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    config = default_config()
    model, _, tokenizer = build_toy(config)
    images, captions = render_pool(cfg.pool_size, cfg.seed, workers=cfg.threads)
    mean = torch.tensor(config["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["image_std"]).view(1, 3, 1, 1)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n) and n != "logit_scale"]
    # the temperature gets a 10x learning rate: a short schedule must still let it sharpen
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
            {"params": rest, "weight_decay": 0.0, "lr_mult": 1.0},
            {"params": [model.logit_scale], "weight_decay": 0.0, "lr_mult": 10.0},
        ],
        lr=cfg.lr,
    )
    loss_fn = open_clip.ClipLoss()
    model.train()
    step = [0]

    def objective(idx, ridx, batch):
        # the step's images, each with one of its captions drawn from a per-step generator
        x = (images[idx].float() / 255 - mean) / std  # (B, 3, H, W)
        pick = torch.randint(0, 1 << 30, (len(idx),), generator=generator(cfg.seed, step[0]))
        step[0] += 1
        texts = tokenizer([captions[i][p % len(captions[i])] for i, p in zip(idx.tolist(), pick.tolist())])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            img_f, txt_f, scale = model(x, texts)
        return loss_fn(img_f.float(), txt_f.float(), scale.float()), {"tau": scale.detach().float()}

    def clamp_temperature():
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    schedule = TrainConfig(
        method="ce", lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, warmup_ratio=cfg.warmup / cfg.steps
    )
    params = [p for group in opt.param_groups for p in group["params"]]
    t0 = time.time()
    loop(
        params,
        objective,
        len(images),
        len(images),
        schedule,
        desc="pretrain toy CLIP",
        steps=cfg.steps,
        optimizer=opt,
        clip_grad=1.0,
        after_step=clamp_temperature,
    )
    log(f"pretraining took {time.time() - t0:.0f} s")
    model.eval()
    if out_dir is not None:
        save_toy(model, config, out_dir)
    return model, tokenizer, config


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipaln.toyworld.pretrain", description=__doc__.split("\n")[0])
    defaults = PretrainConfig()
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--pool-size", type=int, default=defaults.pool_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", type=Path, default=data_dir())
    p.add_argument("--no-eval", action="store_true", help="skip measuring the phenomena at the end")
    a = p.parse_args(argv)
    cfg = PretrainConfig(steps=a.steps, batch_size=a.batch_size, pool_size=a.pool_size, lr=a.lr, seed=a.seed)
    pretrain(cfg, a.out)
    print(f"wrote {a.out / 'toy_clip.safetensors'}")
    if not a.no_eval:  # the one place toyworld reaches up: the script measures what it made
        from ..models import load_clip
        from ..tracks.phenomena import measure

        print(json.dumps(measure(load_clip("toy", pretrained=str(a.out / "toy_clip.safetensors"))), indent=1))


if __name__ == "__main__":
    main()
