"""Pretrain the toy CLIP on the toy world: `python -m clipaln.toyworld.pretrain [--steps N]`.

Captions mimic how web captions arise, so the model picks up the habits the tutorials study, at
the strength real CLIP shows them (the targets and their sources: docs/toy-world.md):
- an object photo is captioned by the object;
- a sign (a word alone) is captioned by the word: the model learns to read;
- an object with a word written on it (a label, a t-shirt) is captioned by the word, by the object
  or by both, and the larger the text, the likelier the caption names the word: the model learns
  to trust text, as much as real CLIP does, not more;
- people doing activities: the images of six activities show mostly one gender (SKEW), while most
  captions are gender-neutral and come in many wordings, so the *activity* drifts toward its
  majority gender, whatever words surround it, as "police officer" does in web data;
- a language prior: a text-only loss puts each people caption's gender association (the named
  gender, else how the captions pair its activity with a gender word) along a direction u that
  no image varies along, as a real CLIP's text carries the language's gender structure ("nurse"
  near "she") beside what its images show. It sets how far the captions' gender direction is from
  the images' (cos 0.34; docs/toy-world.md, target 11), the regime the paper's reversal needs.
The temperature is CLIP's learned tau = 100, fixed. Deterministic from --seed; writes
clipaln/toyworld/weights/toy_clip.safetensors (fp16) and toy_clip.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from .. import distributed as dist
from ..data.fonts import TRAIN_FONTS, UNSEEN_FONTS
from ..train import TrainConfig, generator, loop
from .config import EXTRA_WORDS, SKEW, article, default_config
from .model import build_toy, data_dir, save_toy
from .render import ACTIVITIES, GENDERS, OBJECTS, SIZE, render
from .tokenizer import WordTokenizer

#: Pretraining sees many fonts, as web images do; W training later uses TRAIN_FONTS only.
PRETRAIN_FONTS = TRAIN_FONTS + UNSEEN_FONTS
SKEW_PROB = 0.95  # share of the majority gender in images of a skewed activity
TAU = 100.0  # CLIP's learned temperature, fixed
#: Text sizes (fraction of the image side) written on objects in pretraining, and the chance that
#: the caption names the word at the smallest and at the largest size (linear in between). Tuned on
#: the validation split so that the protocol attack (20-30% of the side) keeps 45-80% of clean
#: accuracy, as real CLIP does (docs/toy-world.md, targets 3-5).
LABEL_SIZE = (0.12, 0.36)
WORD_CAPTION_PROB = (0.1, 0.9)
BOTH_CAPTION_PROB = 0.15  # "an apple with the word car written on it": names both
#: How often a person's caption names their gender: for the balanced activities, and for a skewed
#: activity's unusual (index 0) and usual (index 1) gender. Naming the unusual gender more often is
#: how web captions mark it ("a male nurse"); naming the usual one as often as the unusual one made
#: the neutral phrase lean to the *other* gender in validation (run p3 of docs/toy-world.md).
GENDERED_CAPTION_PROB = 0.4
MARKED_CAPTION_PROB = (0.7, 0.1)
#: Neutral wordings of people captions used in pretraining; docs/toy-world.md lists the wordings
#: held out for evaluation (never used here).
NEUTRAL_PERSON_CAPTIONS = (
    "a photo of a person {}.",
    "a person {}.",
    "this person is {}.",
    "someone {}.",
    "a person who is {}.",
    "a drawing of a person {}.",
    "people {}.",
)


def _word_captions(w: str) -> list[str]:
    return [f"the word {w}.", f"a sign that says {w}.", f"{w}", f"a photo of {article(w)} {w}.", f"the text {w}."]


def _object_captions(o: str) -> list[str]:
    a = article(o)
    return [
        f"a photo of {a} {o}.",
        f"{a} {o}.",
        f"a picture of {a} {o}.",
        f"a drawing of {a} {o}.",
        f"an image of {a} {o}.",
    ]


def _labelled_captions(o: str, w: str, size: float, rng: random.Random) -> list[str]:
    """Captions of an object with a word on it: the word's, the object's, or both, by text size."""
    lo, hi = LABEL_SIZE
    p_word = WORD_CAPTION_PROB[0] + (WORD_CAPTION_PROB[1] - WORD_CAPTION_PROB[0]) * (size - lo) / (hi - lo)
    u = rng.random()
    if u < BOTH_CAPTION_PROB:
        return [f"{article(o)} {o} with the word {w} written on it.", f"a photo of {article(o)} {o} labelled {w}."]
    return _word_captions(w) if rng.random() < p_word else _object_captions(o)


def _person_captions(g: str, act: str, rng: random.Random) -> list[str]:
    """Mostly neutral captions, in many wordings, as web captions of people at work are; gender is
    named where it is *marked*: rarely for the activity's usual gender ("a nurse"), often for the
    unusual one ("a male nurse"). So the activity's own words carry the skew of its images."""
    usual = SKEW.get(act)
    p_gendered = GENDERED_CAPTION_PROB if usual is None else MARKED_CAPTION_PROB[g == usual]
    if rng.random() < p_gendered:
        return [f"a photo of a {g} {act}.", f"a {g} {act}.", f"this {g} is {act}.", f"a photo of a {g}."]
    neutral = [t.format(act) for t in NEUTRAL_PERSON_CAPTIONS]
    if act.startswith("working as a "):
        job = act.removeprefix("working as a ")
        neutral += [f"a photo of a {job}.", f"a {job}.", f"a {job} at work."]
    return neutral


def sample_scene(rng: random.Random) -> tuple[dict, list[str]]:
    """One pretraining example: render() arguments and the captions it may be paired with."""
    kind = rng.random()
    style = {"font": rng.choice(PRETRAIN_FONTS)}
    if kind < 0.18:  # an object
        o = rng.choice(OBJECTS)
        return {"obj": o}, _object_captions(o)
    if kind < 0.38:  # a sign: a word alone
        w = rng.choice(OBJECTS) if rng.random() < 0.9 else rng.choice(EXTRA_WORDS)
        return {"text": w, **style}, _word_captions(w)
    if kind < 0.62:  # an object with a word written on it
        o = rng.choice(OBJECTS)
        w = rng.choice([x for x in OBJECTS + EXTRA_WORDS if x != o])
        size = rng.uniform(*LABEL_SIZE)
        return {"obj": o, "text": w, "text_size": max(6, round(size * SIZE)), **style}, _labelled_captions(
            o, w, size, rng
        )
    act = rng.choice(ACTIVITIES)
    if act in SKEW:
        major = SKEW[act]
        g = major if rng.random() < SKEW_PROB else next(x for x in GENDERS if x != major)
    else:
        g = rng.choice(GENDERS)
    return {"person": g, "activity": act}, _person_captions(g, act, rng)


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


def _caption_activity(caption: str) -> str | None:
    for act in ACTIVITIES:
        if act in caption or (act.startswith("working as a ") and act.removeprefix("working as a ") in caption):
            return act
    return None


def _caption_gender(caption: str) -> float:
    """+1 if the caption names a man, -1 a woman, 0 neither."""
    words = caption.rstrip(".").split()
    return 1.0 if "man" in words else -1.0 if "woman" in words else 0.0


def gender_association(captions: list[list[str]]) -> dict[str, float]:
    """How the pretraining text pairs each activity with a gender word: (men - women) / (men + women)
    over the scenes whose captions name a gender, per activity. What a model of the captions alone
    (a language model) would learn; the real data's analogue is "nurse" sitting near "she"."""
    counts = {a: [0, 0] for a in ACTIVITIES}
    for caps in captions:
        act, g = _caption_activity(caps[0]), _caption_gender(caps[0])
        if act is not None and g != 0:
            counts[act][g < 0] += 1
    return {a: (m - w) / max(1, m + w) for a, (m, w) in counts.items()}


def prior_targets(captions: list[str], association: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each caption's target along u (the named gender, else its activity's association) and a mask of
    the captions that have one (people captions)."""
    target, mask = [], []
    for c in captions:
        g, act = _caption_gender(c), _caption_activity(c)
        target.append(g if g != 0 else association.get(act, 0.0))
        mask.append(g != 0 or act is not None)
    return torch.tensor(target), torch.tensor(mask, dtype=torch.bool)


def text_only_direction(dim: int, seed: int) -> torch.Tensor:
    """The unit direction u of the language prior: fixed by the seed, removed from every image feature."""
    u = torch.randn(dim, generator=torch.Generator().manual_seed(seed * 7919 + 17))
    return u / u.norm()


def remove_from_images(model: torch.nn.Module, u: torch.Tensor) -> None:
    """Fold the projection I - u u^T into the image tower's last linear layer, so encode_image never
    varies along u (exactly as in training, where the features were projected before normalising;
    the shipped fp16 weights leave image features within 1e-4 of orthogonal to u)."""
    layer = model.visual.attnpool.c_proj
    P = torch.eye(len(u)) - torch.outer(u, u)
    with torch.no_grad():
        layer.weight.copy_(P @ layer.weight)
        layer.bias.copy_(P @ layer.bias)


@dataclass
class PretrainConfig:
    steps: int = 1400
    batch_size: int = 256
    pool_size: int = 100_000
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int | None = None  # steps of linear warm-up; default a twentieth of the steps (at least 10)
    seed: int = 0
    threads: int = 2
    bf16: bool = True
    #: The language prior (docs/toy-world.md, target 11): weight of the text-only loss that puts each
    #: person caption's gender association along a direction u no image varies along, and the
    #: component a caption naming a gender gets along u. 0 turns it off.
    prior_weight: float = 10.0
    prior_scale: float = 0.5


def pretrain(
    cfg: PretrainConfig, out_dir: Path | None = None, log: Callable[[str], object] = print
) -> tuple[open_clip.model.CLIP, WordTokenizer, dict]:
    """Train the toy CLIP from scratch with clipaln.train.loop; returns (model, tokenizer, config dict).
    One process: its caption draws and its loss are not split across torchrun ranks."""
    if dist.active():
        raise RuntimeError("toy pretraining runs in one process; start it without torchrun")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    config = default_config()
    model, _, tokenizer = build_toy(config)
    images, captions = render_pool(cfg.pool_size, cfg.seed, workers=cfg.threads)
    mean = torch.tensor(config["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["image_std"]).view(1, 3, 1, 1)
    with torch.no_grad():  # CLIP's learned temperature, fixed (docs/toy-world.md, target 6)
        model.logit_scale.fill_(math.log(TAU))
    model.logit_scale.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr
    )
    loss_fn = open_clip.ClipLoss()
    model.train()
    step = [0]
    u = text_only_direction(config["model_cfg"]["embed_dim"], cfg.seed)
    association = gender_association(captions)
    if cfg.prior_weight:
        log("language prior, association per activity: " + json.dumps({a: round(v, 3) for a, v in association.items()}))

    def objective(idx, ridx, batch):
        # the step's images, each with one of its captions drawn from a per-step generator
        x = (images[idx].float() / 255 - mean) / std  # (B, 3, H, W)
        pick = torch.randint(0, 1 << 30, (len(idx),), generator=generator(cfg.seed, step[0]))
        step[0] += 1
        chosen = [captions[i][p % len(captions[i])] for i, p in zip(idx.tolist(), pick.tolist())]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            img_f, txt_f, scale = model(x, tokenizer(chosen))
        img_f, txt_f = img_f.float(), txt_f.float()
        if not cfg.prior_weight:
            return loss_fn(img_f, txt_f, scale.float()), {"tau": scale.detach().float()}
        img_f = torch.nn.functional.normalize(img_f - (img_f @ u)[:, None] * u, dim=-1)
        target, mask = prior_targets(chosen, association)
        prior = ((txt_f @ u - cfg.prior_scale * target)[mask] ** 2).mean()
        loss = loss_fn(img_f, txt_f, scale.float()) + cfg.prior_weight * prior
        return loss, {"tau": scale.detach().float(), "prior": prior.detach()}

    warmup = cfg.warmup if cfg.warmup is not None else max(10, cfg.steps // 20)
    schedule = TrainConfig(
        method="ce", lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, warmup_ratio=warmup / cfg.steps
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
    )
    log(f"pretraining took {time.time() - t0:.0f} s")
    model.eval()
    if cfg.prior_weight:
        remove_from_images(model, u)
    if out_dir is not None:
        save_toy(model, config, out_dir)
    return model, tokenizer, config


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipaln.toyworld.pretrain", description=__doc__.split("\n")[0])
    defaults = PretrainConfig()
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--pool-size", type=int, default=defaults.pool_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--prior-weight", type=float, default=defaults.prior_weight, help="the language prior's weight (0: off)"
    )
    p.add_argument(
        "--prior-scale", type=float, default=defaults.prior_scale, help="a gendered caption's component along u"
    )
    p.add_argument("--out", type=Path, default=data_dir())
    p.add_argument("--no-eval", action="store_true", help="skip measuring the phenomena at the end")
    a = p.parse_args(argv)
    cfg = PretrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        pool_size=a.pool_size,
        lr=a.lr,
        seed=a.seed,
        prior_weight=a.prior_weight,
        prior_scale=a.prior_scale,
    )
    pretrain(cfg, a.out)
    print(f"wrote {a.out / 'toy_clip.safetensors'}")
    if not a.no_eval:  # the one place toyworld reaches up: the script measures what it made
        from ..models import load_clip
        from ..tracks.phenomena import measure

        print(json.dumps(measure(load_clip("toy", pretrained=str(a.out / "toy_clip.safetensors"))), indent=1))


if __name__ == "__main__":
    main()
