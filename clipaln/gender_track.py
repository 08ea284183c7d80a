"""The gender track end to end: train W to reverse gender, find the neutral point t*, retrieve.

After training, t = 0 is the original model, t = 1 reverses its notion of gender, and an
intermediate t* neutralises it (PAPER.md section 5). The retrieval prompts are neutral ("a photo
of a person {activity}."); the gallery is gender-balanced; we track the share of the gender that
the original model favours for each prompt, and the activity precision@k.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from . import metrics
from .data.gender import GENDER_TEMPLATE, NEUTRAL_TEMPLATE, ToyPeople, reversal_task
from .features import FeatureCache, encode_images, encode_texts
from .models import ClipBundle
from .projection import SharedProjection, SpectralScorer
from .train import PreferenceData, TrainConfig, fit_projection

#: Defaults for the reversal on the toy world: the paper's beta = lambda = 1 for DPO and KTO;
#: IPO needs a smaller beta (its target margin is 1/(2 beta)) to reverse at all.
DEFAULTS = {
    "dpo": dict(beta=1.0, lam=1.0, lr=0.01, epochs=30, batch_size=256),
    "ipo": dict(beta=0.1, lam=1.0, lr=0.01, epochs=30, batch_size=256),
    "kto": dict(beta=1.0, lam=1.0, lr=0.01, epochs=30, batch_size=256),
}
RETRIEVAL_TEMPLATE = "a photo of a person {activity}."


@dataclass
class GenderFeatures:
    genders: list[str]
    activities: list[str]
    train_images: torch.Tensor  # (N, d)
    train_labels: list[tuple[str, str]]
    pref_texts: torch.Tensor  # (2A, d)
    reg_texts: torch.Tensor  # (A, d)
    y_w: torch.Tensor
    y_l: torch.Tensor
    gallery: torch.Tensor  # (M, d) held-out, gender-balanced
    gallery_labels: list[tuple[str, str]]
    prompts: list[str]  # retrieval prompts, one per activity
    prompt_texts: torch.Tensor  # (A, d)
    logit_scale: float

    def preference_data(self) -> PreferenceData:
        return PreferenceData(self.train_images, self.y_w, self.y_l, self.pref_texts, self.train_images,
                              self.logit_scale, reg_texts=self.reg_texts)


def _encode_labelled(bundle, ds, desc):
    images, labels = [], []
    for i in range(len(ds)):
        im, g, a = ds[i]
        images.append(im)
        labels.append((g, a))
    return encode_images(bundle, images, desc=desc), labels


def build_features(bundle: ClipBundle, train_set, gallery_set, genders, activities, cache: FeatureCache | None = None,
                   key: dict | None = None, template: str = GENDER_TEMPLATE, neutral_template: str = NEUTRAL_TEMPLATE,
                   retrieval_template: str = RETRIEVAL_TEMPLATE) -> GenderFeatures:
    if cache is None or key is None:  # without a key that names the data, never cache
        cache = FeatureCache(enabled=False)

    def compute():
        tr, tr_l = _encode_labelled(bundle, train_set, "encode train people")
        ga, ga_l = _encode_labelled(bundle, gallery_set, "encode gallery")
        enc = lambda labels: torch.tensor([[genders.index(g), activities.index(a)] for g, a in labels])
        return {"train": tr, "train_labels": enc(tr_l), "gallery": ga, "gallery_labels": enc(ga_l)}

    t = cache.get(bundle, {**(key or {}), "track": "gender"}, compute)
    dec = lambda x: [(genders[g], activities[a]) for g, a in x.tolist()]
    train_labels, gallery_labels = dec(t["train_labels"]), dec(t["gallery_labels"])
    task = reversal_task(train_labels, genders, activities, template, neutral_template)
    prompts = [retrieval_template.format(activity=a) for a in activities]
    return GenderFeatures(list(genders), list(activities), t["train"], train_labels,
                          encode_texts(bundle, task.pref_prompts), encode_texts(bundle, task.reg_prompts),
                          task.y_w, task.y_l, t["gallery"], gallery_labels, prompts, encode_texts(bundle, prompts),
                          bundle.logit_scale)


def toy_features(bundle: ClipBundle, n_train_per_cell: int = 30, n_gallery_per_cell: int = 20, seed: int = 0,
                 cache: FeatureCache | None = None) -> GenderFeatures:
    tr = ToyPeople(n_train_per_cell, seed, "train")
    ga = ToyPeople(n_gallery_per_cell, seed, "gallery")
    key = {"world": "toy", "n_train": n_train_per_cell, "n_gallery": n_gallery_per_cell, "seed": seed, "version": 1}
    return build_features(bundle, tr, ga, tr.genders, tr.activities, cache, key)


def train(feats: GenderFeatures, method: str = "dpo", progress: bool = True, **overrides):
    if method not in DEFAULTS:
        raise ValueError(f"the gender track trains with dpo, ipo or kto, not {method!r}")
    cfg = TrainConfig(method=method, **{**DEFAULTS[method], **{k: v for k, v in overrides.items() if v is not None}})
    return fit_projection(feats.preference_data(), cfg, progress=progress)


class RetrievalSweep:
    """Retrieval fairness for any t, from one SVD: the slider of notebook 04 calls .at(t)."""

    def __init__(self, feats: GenderFeatures, projection: SharedProjection | None = None, k: int = 10):
        self.feats, self.k = feats, k
        proj = projection or SharedProjection(feats.gallery.shape[-1])
        self.scorer = SpectralScorer(proj, feats.gallery, feats.prompt_texts)
        self.genders = [g for g, _ in feats.gallery_labels]
        self.acts = [a for _, a in feats.gallery_labels]
        base = self.scorer.scores(0.0)  # (M, A)
        self.majority = {}
        for j, a in enumerate(feats.activities):
            share = metrics.share_at_k([self.genders[i] for i in metrics.rank(base[:, j], k)], k, feats.genders)
            self.majority[a] = max(feats.genders, key=lambda g: share[g])

    def ranking(self, t, activity: str) -> list[int]:
        j = self.feats.activities.index(activity)
        return metrics.rank(self.scorer.scores(t)[:, j], self.k)

    def at(self, t, activities=None) -> dict:
        """Per prompt: share of its t=0 majority gender in the top k, MaxSkew@k, NDKL, precision@k."""
        scores = self.scorer.scores(t)
        activities = activities or self.feats.activities
        rows = {}
        for a in activities:
            j = self.feats.activities.index(a)
            top = metrics.rank(scores[:, j], self.k)
            g = [self.genders[i] for i in top]
            rows[a] = {"majority_share": metrics.share_at_k(g, self.k, self.feats.genders)[self.majority[a]],
                       "max_skew": metrics.max_skew_at_k(g, self.k, self.feats.genders),
                       "ndkl": metrics.ndkl(g, self.feats.genders),
                       "precision": metrics.precision_at_k([self.acts[i] for i in top], self.k, a)}
        mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in ("majority_share", "max_skew", "ndkl", "precision")}
        return {"t": float(t), "prompts": rows, **mean}


def find_neutral_t(sweep: RetrievalSweep, activities, target: float = 0.5, lo: float = 0.0, hi: float = 1.0,
                   grid: int = 101) -> tuple[float, list[dict]]:
    """t* in [lo, hi] whose mean majority share over `activities` is closest to `target`.

    The share is a step function of t (top-k counts), so a grid scan finds the best plateau and
    t* is the middle of it; returns t* and the scanned curve.
    """
    ts = torch.linspace(lo, hi, grid).tolist()
    curve = [sweep.at(t, activities) for t in ts]
    err = [abs(c["majority_share"] - target) for c in curve]
    best = min(err)
    idx = [i for i, e in enumerate(err) if e <= best + 1e-9]
    run = [idx[0]]  # the first contiguous plateau of best points
    for i in idx[1:]:
        if i != run[-1] + 1:
            break
        run.append(i)
    return ts[run[len(run) // 2]], curve


def summary(feats: GenderFeatures, projection: SharedProjection, skewed=None, k: int = 10) -> dict:
    """t = 0, t = 1 and t* retrieval numbers over the skewed prompts."""
    sweep = RetrievalSweep(feats, projection, k)
    if skewed is None:
        base = sweep.at(0.0)
        skewed = [a for a, r in base["prompts"].items() if r["majority_share"] >= 0.7] or feats.activities
    t_star, curve = find_neutral_t(sweep, skewed)
    pick = lambda r: {m: r[m] for m in ("majority_share", "max_skew", "ndkl", "precision")}
    return {"skewed_prompts": list(skewed), "t_star": t_star, "t0": pick(sweep.at(0.0, skewed)),
            "t1": pick(sweep.at(1.0, skewed)), "t_star_metrics": pick(sweep.at(t_star, skewed)),
            "curve": [{"t": c["t"], "majority_share": c["majority_share"], "precision": c["precision"]} for c in curve]}


# --- CLI -----------------------------------------------------------------------------------

def _toy_only(a):
    if a.model != "toy" or a.dataset not in (None, "toy"):
        raise ValueError("the gender track CLI runs on --model toy; for real data use clipaln.gender_track with "
                         "GenderFolder or GenderCSV (see notebook 04)")


def cli_train(a) -> None:
    from pathlib import Path

    from .io import write_json
    from .models import load_clip
    from .toyworld.config import SKEW

    _toy_only(a)
    if a.method == "ce":
        raise ValueError("the gender track trains with dpo, ipo or kto")
    t0 = time.perf_counter()
    bundle = load_clip("toy", pretrained=a.pretrained, device=a.device)
    feats = toy_features(bundle, seed=a.seed, cache=FeatureCache(enabled=not a.no_cache))
    proj, hist = train(feats, a.method, beta=a.beta, lam=a.lam, epochs=a.epochs, lr=a.lr, seed=a.seed, bma=a.bma)
    out = Path(a.out)
    proj.save(out / "projection.safetensors", model="toy", task="gender")
    result = summary(feats, proj, skewed=list(SKEW))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["final_loss"] = hist["loss"][-1]
    write_json(out / "metrics.json", result)
    print(f"majority share of skewed prompts: t=0 {result['t0']['majority_share']:.2f}, t=1 {result['t1']['majority_share']:.2f}, "
          f"t*={result['t_star']:.2f} {result['t_star_metrics']['majority_share']:.2f}; precision@10 "
          f"{result['t0']['precision']:.2f} -> {result['t_star_metrics']['precision']:.2f}")
    print(f"wrote {out / 'projection.safetensors'} and {out / 'metrics.json'}")


def cli_eval(a) -> None:
    import json
    import sys

    from .models import load_clip
    from .toyworld.config import SKEW

    _toy_only(a)
    bundle = load_clip("toy", pretrained=a.pretrained, device=a.device)
    feats = toy_features(bundle, seed=a.seed, cache=FeatureCache(enabled=not a.no_cache))
    proj = SharedProjection.load(a.projection, dim=bundle.embed_dim) if a.projection else None
    if a.t is not None and proj is None:
        raise ValueError("--t needs --projection FILE")
    r = RetrievalSweep(feats, proj).at(a.t if a.t is not None else (1.0 if proj else 0.0), list(SKEW))
    print(json.dumps(r) if a.json else "\n".join(f"{k}: {v}" for k, v in r.items() if k != "prompts"), file=sys.stdout)


def bench(a) -> dict:
    from .models import load_clip
    from .toyworld.config import SKEW

    bundle = load_clip("toy", device=a.device)
    feats = toy_features(bundle, seed=a.seed, cache=FeatureCache(enabled=not a.no_cache))
    out = {}
    for method in ("dpo", "ipo", "kto"):
        t0 = time.perf_counter()
        proj, _ = train(feats, method, progress=False, seed=a.seed)
        r = summary(feats, proj, skewed=list(SKEW))
        r.pop("curve")
        out[method] = {**r, "train_seconds": round(time.perf_counter() - t0, 2)}
    return out
