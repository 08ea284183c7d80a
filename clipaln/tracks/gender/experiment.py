"""The gender track's experiment: encode once, train W, retrieve along t, find the neutral point t*."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ... import metrics
from ...data.gender import reversal_task
from ...features import FeatureCache, encode_dataset, encode_texts, model_fingerprint, resolve_precision
from ...manifest import data_record
from ...models import ClipBundle
from ...policy import refuse_unknown_words
from ...projection import SharedProjection
from ...train import TrainConfig, fit_projection
from .analysis import PromptReflection, retrieval_scorer
from .spec import (
    Features,
    Spec,
)


class _Indexed:
    """(image, gender, activity) items as (image, gender index, activity index), for encode_dataset."""

    def __init__(self, ds, genders, activities):
        self.ds, self.gi, self.ai = ds, {g: i for i, g in enumerate(genders)}, {a: i for i, a in enumerate(activities)}

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        im, g, a = self.ds[i]
        return im, self.gi[g], self.ai[a]


def _encode_labelled(bundle, ds, genders, activities, desc, **encoding):
    """Stream the images through the encoder; (embeddings, (N, 2) gender and activity indices)."""
    emb, g, a = encode_dataset(bundle, _Indexed(ds, genders, activities), (0,), (1, 2), desc=desc, **encoding)
    return emb, torch.stack([g, a], dim=1)


def build_features(
    bundle: ClipBundle, spec: Spec, cache: FeatureCache | None = None, with_train: bool = True, **encoding
) -> Features:
    """Encode the training people and the gallery once (cached on disk by model + data); `encoding`
    (progress, workers, precision) goes to features.encode_dataset. with_train: every split is
    encoded either way (one cache entry), as the Track protocol allows."""
    genders, activities = spec.genders, spec.activities
    words = [spec.template.format(gender=g, activity=a) for a in activities for g in genders]
    words += [spec.neutral_template.format(activity=a) for a in activities]
    refuse_unknown_words(bundle, words + [spec.retrieval_template.format(activity=a) for a in activities], "prompts")
    if cache is None or not spec.key:  # without a key that names the data, never cache
        cache = FeatureCache(enabled=False)

    def compute():
        enc = lambda ds, desc: _encode_labelled(bundle, ds, genders, activities, desc, **encoding)
        tr, tr_l = enc(spec.train_set, "encode train people")
        ga, ga_l = enc(spec.gallery_set, "encode gallery")
        out = {"train": tr, "train_labels": tr_l, "gallery": ga, "gallery_labels": ga_l}
        if spec.val_gallery_set is not None:
            va, va_l = enc(spec.val_gallery_set, "encode validation gallery")
            out |= {"val_gallery": va, "val_gallery_labels": va_l}
        return out

    resolved = resolve_precision(encoding.get("precision", "auto"), bundle.device)
    t = cache.get(
        bundle, {**spec.key, "track": "gender", **({} if resolved == "fp32" else {"precision": resolved})}, compute
    )
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
        t.get("val_gallery"),
        dec(t["val_gallery_labels"]) if "val_gallery_labels" in t else None,
        data_record(bundle.name, model_fingerprint(bundle), "gender", spec.key, bundle.pretrained),
    )


def train(
    feats: Features, cfg: TrainConfig, progress: bool = True, **checkpointing: Any
) -> tuple[SharedProjection, dict]:
    """Fit W on D_pref / D_reg; `checkpointing` goes to fit_projection (checkpoint, checkpoint_every, resume)."""
    return fit_projection(feats.preference_data(), cfg, progress=progress, **checkpointing)


def validator(feats: Features, k: int = 10) -> Callable[[SharedProjection | None], dict[str, float]] | None:
    """W -> the summaries of retrieval on the validation gallery at t = 1 (summed NDKL, flipped and
    balanced prompts, precision@k: what `--eval-every` logs during training), or None without one."""
    if feats.val_gallery is None:
        return None
    val = feats.on_val_gallery()

    def validate(projection):
        r = Sweep(val, projection, k=k).at(1.0, val.skewed)
        return {n: v for n, v in r.items() if n.startswith("retrieval/")}

    return validate


class Sweep:
    """Retrieval for any t, from one SVD: the slider of notebook 04 calls .at(t).

    Per prompt it reports how many of each gender are in the top k (never a "majority share" that
    hides which gender is the majority), MaxSkew@k, NDKL and the activity precision@k; over the
    prompts asked for, the summed NDKL, how many prompts are balanced (3-7 of each gender in the top
    10) and how many have flipped (the gender that led at t = 0 now trails; a prompt with no leader at
    t = 0, an even split, cannot flip)."""

    def __init__(self, feats: Features, projection: SharedProjection | PromptReflection | None = None, k: int = 10):
        if len(feats.gallery) < 4:
            raise ValueError(f"the gallery holds {len(feats.gallery)} images: retrieval needs at least 4 to rank")
        # at most half the gallery: were the top k all of it, no t could change who is in it, and every
        # prompt would read as balanced at every t
        self.feats, self.k = feats, min(k, len(feats.gallery) // 2)
        self.scorer = retrieval_scorer(projection, feats.gallery, feats.prompt_texts)
        self.genders = [g for g, _ in feats.gallery_labels]
        self.acts = [a for _, a in feats.gallery_labels]
        self.lead = {a: self._counts(self.scorer.scores(0.0), a) for a in feats.activities}  # t = 0 counts

    def _counts(self, scores: torch.Tensor, activity: str) -> dict[str, int]:
        top = metrics.rank(scores[:, self.feats.activities.index(activity)], self.k)
        return {g: sum(self.genders[i] == g for i in top) for g in self.feats.genders}

    def ranking(self, t: float, activity: str) -> list[int]:
        j = self.feats.activities.index(activity)
        return metrics.rank(self.scorer.scores(t)[:, j], self.k)

    def at(self, t: float, activities: Sequence[str] | None = None) -> dict:
        """Per prompt: gender counts in the top k, MaxSkew@k, NDKL, precision@k; then the summaries."""
        scores = self.scorer.scores(t)
        activities = activities or self.feats.activities
        low, high = round(0.3 * self.k), round(0.7 * self.k)
        rows = {}
        for a in activities:
            top = metrics.rank(scores[:, self.feats.activities.index(a)], self.k)
            g = [self.genders[i] for i in top]
            counts = {x: g.count(x) for x in self.feats.genders}
            led = max(self.lead[a], key=self.lead[a].get)  # the gender that led at t = 0
            had_lead = self.lead[a][led] > self.k / 2  # an even split at t = 0 has no majority to flip
            rows[a] = {
                "retrieval/top_k": counts,
                **_ranking_metrics(tuple(g), tuple(self.feats.genders), self.k),
                "retrieval/precision": metrics.precision_at_k([self.acts[i] for i in top], self.k, a),
                "retrieval/balanced": all(low <= c <= high for c in counts.values()),
                "retrieval/had_majority": had_lead,
                "retrieval/flipped": had_lead and counts[led] < self.k / 2,
            }
        return {
            "t": float(t),
            "prompts": rows,
            "retrieval/ndkl_sum": sum(r["retrieval/ndkl"] for r in rows.values()),
            "retrieval/balanced_prompts": sum(r["retrieval/balanced"] for r in rows.values()),
            "retrieval/flipped_prompts": sum(r["retrieval/flipped"] for r in rows.values()),
            "retrieval/precision": sum(r["retrieval/precision"] for r in rows.values()) / len(rows),
            "n_prompts": len(rows),
            "k": self.k,
        }


@functools.lru_cache(maxsize=4096)
def _ranking_metrics(genders_ranked: tuple[str, ...], genders: tuple[str, ...], k: int) -> dict[str, float]:
    """MaxSkew@k and NDKL of a top k, by its genders in ranked order: a slider's scan meets the same
    few rankings again and again (2^10 orders of two genders in a top 10)."""
    return {
        "retrieval/max_skew": metrics.max_skew_at_k(genders_ranked, k, genders),
        "retrieval/ndkl": metrics.ndkl(genders_ranked, genders),
    }


def find_neutral_t(
    sweep: Sweep, activities: Sequence[str], lo: float = 0.0, hi: float = 1.0, grid: int = 101
) -> tuple[float, dict[str, float | None], list[dict]]:
    """t* in [lo, hi] where the summed NDKL over `activities` is smallest, and each prompt's own t*.

    NDKL is a step function of t (top-k sets), so a grid scan finds the best plateau and t* is the
    middle of it (ties: the plateau nearest t = 0). Returns (t*, {prompt: its t*, or None when no t
    in [lo, hi] changes its NDKL}, the scanned curve)."""
    ts = torch.linspace(lo, hi, grid).tolist()
    curve = [sweep.at(t, activities) for t in ts]

    def middle_of_best(values):
        best = min(values)
        idx = [i for i, v in enumerate(values) if v <= best + 1e-9]
        run = [idx[0]]
        for i in idx[1:]:
            if i != run[-1] + 1:
                break
            run.append(i)
        return ts[run[len(run) // 2]]

    ndkl = {a: [c["prompts"][a]["retrieval/ndkl"] for c in curve] for a in activities}
    per_prompt = {a: middle_of_best(v) if max(v) > min(v) else None for a, v in ndkl.items()}  # None: no t helps
    return middle_of_best([c["retrieval/ndkl_sum"] for c in curve]), per_prompt, curve


def understanding(
    feats: Features, projection: SharedProjection, ts: Iterable[float], gallery: str = "test"
) -> list[dict]:
    """The analogue of the paper's Fig. 3, "the models' understanding of gender", against t: on a
    gallery's images (never trained on), the share for which the caption of the pictured person's
    gender ("this man is cooking.") scores above the other gender's ("this woman is cooking.") under
    W_t. 1 means the model tells gender as the pretrained one does, 0 that W_t reversed it, 0.5 that
    it no longer tells the two apart. gallery: "test" or "val". Returns [{"t", "gender/understanding"}]."""
    if gallery not in ("test", "val"):
        raise ValueError(f"gallery must be 'test' or 'val', got {gallery!r}")
    f = feats if gallery == "test" else feats.on_val_gallery()
    gi = {g: i for i, g in enumerate(f.genders)}
    ai = {a: i for i, a in enumerate(f.activities)}
    own = torch.tensor([2 * ai[a] + gi[g] for g, a in f.gallery_labels])  # the order of reversal_task's captions
    other = torch.tensor([2 * ai[a] + 1 - gi[g] for g, a in f.gallery_labels])
    scorer = retrieval_scorer(projection, f.gallery, f.pref_texts)
    out = []
    for t in ts:
        s = scorer.scores(float(t))
        right = s.gather(1, own[:, None]) > s.gather(1, other[:, None])
        out.append({"t": float(t), "gender/understanding": right.float().mean().item()})
    return out


def crossing(curve: list[dict], key: str = "gender/understanding", level: float = 0.5) -> float | None:
    """The first t of `curve` (sorted by t) where `key` crosses `level`, interpolated linearly
    between the two grid points around it; None when it never does."""
    for a, b in zip(curve, curve[1:]):
        lo, hi = a[key] - level, b[key] - level
        if lo == 0:
            return a["t"]
        if lo * hi < 0:
            return a["t"] + (b["t"] - a["t"]) * lo / (lo - hi)
    return curve[-1]["t"] if curve and curve[-1][key] == level else None


def evaluate(feats: Features, projection: SharedProjection | None = None, k: int = 10) -> dict:
    """Retrieval of the skewed prompts on the test gallery at t = 0, and with a projection at t = 1
    and at t*, the smallest summed NDKL, chosen on the validation gallery when there is one (so the
    numbers reported at t* are not the ones it was chosen on); each prompt's own t* (same gallery);
    the curve over t in [0, 1] on the test gallery, with how many distinct counts each prompt takes
    along it (a dial: many; a step: 2); and the Fig. 3 analogue (understanding) over t in [-0.5, 1.5]
    on the test gallery, with the t where it crosses 50% (None: it does not)."""
    skewed = feats.skewed or feats.activities
    sweep = Sweep(feats, projection, k)
    out = {"skewed_prompts": list(skewed), "t0": sweep.at(0.0, skewed)}
    if projection is None:
        return out
    chooser = Sweep(feats.on_val_gallery(), projection, k) if feats.val_gallery is not None else sweep
    t_star, per_prompt, _ = find_neutral_t(chooser, skewed)
    curve = [sweep.at(t, skewed) for t in torch.linspace(0.0, 1.0, 101).tolist()]  # the test gallery, for plots
    first = feats.genders[0]
    distinct = {a: len({c["prompts"][a]["retrieval/top_k"][first] for c in curve}) for a in skewed}
    fig3 = understanding(feats, projection, torch.linspace(-0.5, 1.5, 81).tolist())
    keep = ("t", "retrieval/ndkl_sum", "retrieval/balanced_prompts", "retrieval/flipped_prompts", "retrieval/precision")
    return {
        **out,
        "t1": sweep.at(1.0, skewed),
        "t_star": t_star,
        "t_star_chosen_on": "validation gallery" if feats.val_gallery is not None else "test gallery",
        "t_star_metrics": sweep.at(t_star, skewed),
        "t_star_per_prompt": per_prompt,
        "t_star_flat": all(v is None for v in per_prompt.values()),  # no t in [0, 1] moves any prompt
        "curve": [{m: c[m] for m in keep} for c in curve],
        "distinct_counts": distinct,
        "understanding": fig3,
        "understanding_crossing": crossing(fig3),
    }


def format_result(result: dict) -> str:
    """evaluate()'s result for people: men / women in the top k per prompt at t = 0, 1 and t*."""
    cols = [("t=0", result["t0"])]
    if "t1" in result:
        flat = result.get("t_star_flat", False)  # t* would be the middle of a flat scan: a number that means nothing
        cols += [("t=1", result["t1"]), ("t*=n/a" if flat else f"t*={result['t_star']:.2f}", result["t_star_metrics"])]
    genders = list(next(iter(result["t0"]["prompts"].values()))["retrieval/top_k"])
    lines = [f"{'prompt (' + ' / '.join(genders) + ' in the top k)':<40}" + "".join(f"{c:>10}" for c, _ in cols)]
    for a in result["skewed_prompts"]:
        cells = ["/".join(str(r["prompts"][a]["retrieval/top_k"][g]) for g in genders) for _, r in cols]
        lines.append(f"{a:<40}" + "".join(f"{c:>10}" for c in cells))
    for name, key in (
        ("summed NDKL", "retrieval/ndkl_sum"),
        ("balanced prompts", "retrieval/balanced_prompts"),
        ("flipped prompts", "retrieval/flipped_prompts"),
        ("precision@k", "retrieval/precision"),
    ):
        lines.append(
            f"{name:<40}"
            + "".join(f"{r[key]:>10.2f}" if isinstance(r[key], float) else f"{r[key]:>10}" for _, r in cols)
        )
    if result.get("t_star_flat"):
        where = result["t_star_chosen_on"]
        lines.append(f"t*: no t in [0, 1] changes any prompt's NDKL on the {where} (W moves nothing)")
    return "\n".join(lines)


def evaluator(feats: Features, projection: SharedProjection | None, split: str = "test") -> Callable[[float], dict]:
    """t -> the track's metrics of W_t on the test gallery or the validation one (the Track protocol),
    through one Sweep: the prompts' rankings along t."""
    if split == "val":
        if feats.val_gallery is None:
            raise ValueError("this gender data has no validation split to score")
        feats = feats.on_val_gallery()
    sweep = Sweep(feats, projection)
    return lambda t: sweep.at(t, feats.skewed)
