"""The gender experiment end to end: train W to reverse gender, find the neutral point t*, retrieve.

After training, t = 0 is the original model, t = 1 reverses its notion of gender, and an
intermediate t* neutralises it (docs/method.md section 5). The retrieval prompts are neutral ("a photo
of a person {activity}."); the gallery is gender-balanced; we track the share of the gender that
the original model favours for each prompt, and the activity precision@k (fractions).

The same API as clipaln.tracks.typographic: Spec, toy_spec, build_features, DEFAULTS,
train_config, train(feats, cfg), evaluate(feats, projection), Sweep(feats, W).at(t).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import metrics
from ..data.gender import GENDER_TEMPLATE, NEUTRAL_TEMPLATE, reversal_task
from ..features import FeatureCache, encode_images, encode_texts
from ..models import ClipBundle
from ..policy import PreferenceData
from ..projection import SharedProjection, SpectralScorer
from ..toyworld.config import SKEW
from ..toyworld.datasets import ToyPeople
from ..train import TrainConfig, fit_projection

#: The gender task uses the paper's beta = lambda = 1 for every method (docs/method.md section 2); IPO
#: needs a larger target margin 1/(2 beta) than beta = 1 gives to reverse at all, so beta = 0.1.
DEFAULTS = {
    "dpo": dict(beta=1.0, lam=1.0, lr=0.01, epochs=30, batch_size=256),
    "ipo": dict(beta=0.1, lam=1.0, lr=0.01, epochs=30, batch_size=256),
    "kto": dict(beta=1.0, lam=1.0, lr=0.01, epochs=30, batch_size=256),
}
RETRIEVAL_TEMPLATE = "a photo of a person {activity}."
#: The per-prompt and mean retrieval metrics, all fractions but MaxSkew and NDKL.
METRICS = ("retrieval/majority_share", "retrieval/max_skew", "retrieval/ndkl", "retrieval/precision")


def train_config(method: str, **overrides) -> TrainConfig:
    """The TrainConfig of `method` on this track: DEFAULTS, then overrides (None = keep)."""
    if method not in DEFAULTS:
        raise ValueError(f"the gender track trains with {', '.join(DEFAULTS)}, not {method!r}")
    return TrainConfig.for_method(method, DEFAULTS, **overrides)


@dataclass
class Spec:
    """Everything that defines one gender experiment's data (and its cache key)."""

    train_set: object  # (PIL image, gender, activity) items
    gallery_set: object  # held out, gender-balanced
    genders: list[str]
    activities: list[str]
    skewed: list[str]  # the prompts whose skew the track reports
    key: dict = field(default_factory=dict)
    template: str = GENDER_TEMPLATE
    neutral_template: str = NEUTRAL_TEMPLATE
    retrieval_template: str = RETRIEVAL_TEMPLATE


def toy_spec(n_train_per_cell: int = 30, n_gallery_per_cell: int = 20, seed: int = 0) -> Spec:
    """The toy world's people: n images per (activity, gender) to train on and to retrieve from."""
    tr = ToyPeople(n_train_per_cell, seed, "train")
    ga = ToyPeople(n_gallery_per_cell, seed, "gallery")
    key = {"world": "toy", "n_train": n_train_per_cell, "n_gallery": n_gallery_per_cell, "seed": seed, "version": 1}
    return Spec(tr, ga, tr.genders, tr.activities, list(SKEW), key)


@dataclass
class Features:
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
    skewed: list[str]  # the prompts whose skew the track reports

    def preference_data(self) -> PreferenceData:
        return PreferenceData(
            self.train_images,
            self.y_w,
            self.y_l,
            self.pref_texts,
            self.train_images,
            self.logit_scale,
            reg_texts=self.reg_texts,
        )


def _encode_labelled(bundle, ds, desc):
    images, labels = [], []
    for i in range(len(ds)):
        im, g, a = ds[i]
        images.append(im)
        labels.append((g, a))
    return encode_images(bundle, images, desc=desc), labels


def build_features(bundle: ClipBundle, spec: Spec, cache: FeatureCache | None = None) -> Features:
    """Encode the training people and the gallery once (cached on disk by model + data)."""
    genders, activities = spec.genders, spec.activities
    if cache is None or not spec.key:  # without a key that names the data, never cache
        cache = FeatureCache(enabled=False)

    def compute():
        tr, tr_l = _encode_labelled(bundle, spec.train_set, "encode train people")
        ga, ga_l = _encode_labelled(bundle, spec.gallery_set, "encode gallery")
        enc = lambda labels: torch.tensor([[genders.index(g), activities.index(a)] for g, a in labels])
        return {"train": tr, "train_labels": enc(tr_l), "gallery": ga, "gallery_labels": enc(ga_l)}

    t = cache.get(bundle, {**spec.key, "track": "gender"}, compute)
    dec = lambda x: [(genders[g], activities[a]) for g, a in x.tolist()]
    train_labels, gallery_labels = dec(t["train_labels"]), dec(t["gallery_labels"])
    task = reversal_task(train_labels, genders, activities, spec.template, spec.neutral_template)
    prompts = [spec.retrieval_template.format(activity=a) for a in activities]
    return Features(
        list(genders),
        list(activities),
        t["train"],
        train_labels,
        encode_texts(bundle, task.pref_prompts),
        encode_texts(bundle, task.reg_prompts),
        task.y_w,
        task.y_l,
        t["gallery"],
        gallery_labels,
        prompts,
        encode_texts(bundle, prompts),
        bundle.logit_scale,
        list(spec.skewed),
    )


def train(feats: Features, cfg: TrainConfig, progress: bool = True, **checkpointing):
    """Fit W on D_pref / D_reg; `checkpointing` goes to fit_projection (checkpoint, checkpoint_every, resume)."""
    return fit_projection(feats.preference_data(), cfg, progress=progress, **checkpointing)


class Sweep:
    """Retrieval fairness for any t, from one SVD: the slider of notebook 04 calls .at(t)."""

    def __init__(self, feats: Features, projection: SharedProjection | None = None, k: int = 10):
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
            rows[a] = {
                "retrieval/majority_share": metrics.share_at_k(g, self.k, self.feats.genders)[self.majority[a]],
                "retrieval/max_skew": metrics.max_skew_at_k(g, self.k, self.feats.genders),
                "retrieval/ndkl": metrics.ndkl(g, self.feats.genders),
                "retrieval/precision": metrics.precision_at_k([self.acts[i] for i in top], self.k, a),
            }
        mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in METRICS}
        return {"t": float(t), "prompts": rows, **mean}


def find_neutral_t(
    sweep: Sweep, activities, target: float = 0.5, lo: float = 0.0, hi: float = 1.0, grid: int = 101
) -> tuple[float, list[dict]]:
    """t* in [lo, hi] whose mean majority share over `activities` is closest to `target`.

    The share is a step function of t (top-k counts), so a grid scan finds the best plateau and
    t* is the middle of it; returns t* and the scanned curve.
    """
    ts = torch.linspace(lo, hi, grid).tolist()
    curve = [sweep.at(t, activities) for t in ts]
    err = [abs(c["retrieval/majority_share"] - target) for c in curve]
    best = min(err)
    idx = [i for i, e in enumerate(err) if e <= best + 1e-9]
    run = [idx[0]]  # the first contiguous plateau of best points
    for i in idx[1:]:
        if i != run[-1] + 1:
            break
        run.append(i)
    return ts[run[len(run) // 2]], curve


def evaluate(feats: Features, projection: SharedProjection | None = None, k: int = 10) -> dict:
    """t = 0, t = 1 and t* retrieval numbers over the skewed prompts (means over them), and the
    t* curve; with no projection, only t = 0."""
    skewed = feats.skewed or feats.activities
    sweep = Sweep(feats, projection, k)
    pick = lambda r: {m: r[m] for m in METRICS}
    out = {"skewed_prompts": list(skewed), "t0": pick(sweep.at(0.0, skewed))}
    if projection is None:
        return out
    t_star, curve = find_neutral_t(sweep, skewed)
    keep = ("t", "retrieval/majority_share", "retrieval/precision")
    return {
        **out,
        "t_star": t_star,
        "t1": pick(sweep.at(1.0, skewed)),
        "t_star_metrics": pick(sweep.at(t_star, skewed)),
        "curve": [{m: c[m] for m in keep} for c in curve],
    }
