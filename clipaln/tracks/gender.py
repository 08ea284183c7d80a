"""The gender experiment end to end: train W to reverse gender, find the neutral point t*, retrieve.

After training, t = 0 is the original model, t = 1 reverses its notion of gender, and an
intermediate t* neutralises it (docs/method.md section 5). The retrieval prompts are neutral ("a photo
of a person {activity}."); the gallery is gender-balanced; for each prompt we count the men and
women in the top k, and track MaxSkew@k, NDKL and the activity precision@k.

The same API as clipaln.tracks.typographic: Spec, toy_spec, build_features, DEFAULTS,
train_config, train(feats, cfg), evaluate(feats, projection), Sweep(feats, W).at(t).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import losses, metrics
from ..data.gender import GENDER_TEMPLATE, NEUTRAL_TEMPLATE, GenderCSV, GenderFolder, reversal_task
from ..data.real import Subset, files_fingerprint, paths_fingerprint
from ..features import FeatureCache, encode_dataset, encode_texts, model_fingerprint, resolve_precision
from ..manifest import data_record, digest
from ..models import ClipBundle
from ..policy import PreferenceData, refuse_unknown_words
from ..projection import SharedProjection, SpectralScorer, exponents
from ..toyworld import ACTIVITIES, GENDERS
from ..toyworld.config import SKEW
from ..toyworld.datasets import ToyPeople
from ..train import TrainConfig, fit_projection
from .protocol import DataFlags

#: The paper's setting for the gender task, beta = lambda = 1, for every method (the paper gives
#: one setting for the task, not one per method), and BMA as for every preference method. lr,
#: epochs and the orthogonality penalty keep W within its target (clipaln.projection.MAX_GAP,
#: S_RANGE; docs/toy-world.md): last round's lr 0.01 x 30 epochs left DPO's smallest singular value
#: at 0.36. KTO misses it narrowly (smallest singular value 0.47-0.48 over seeds 0-2); with orth = 100
#: it meets it but no longer reverses any prompt.
DEFAULTS = {
    "dpo": dict(beta=1.0, lam=1.0, lr=0.003, epochs=10, orth=10.0, batch_size=256, bma=True),
    "ipo": dict(beta=1.0, lam=1.0, lr=0.01, epochs=10, orth=1.0, batch_size=256, bma=True),
    "kto": dict(beta=1.0, lam=1.0, lr=0.003, epochs=10, orth=10.0, batch_size=256, bma=True),
}
RETRIEVAL_TEMPLATE = "a photo of a person {activity}."


def methods() -> list[str]:
    """What the gender track trains with: DEFAULTS' methods and every registered loss for "gender"."""
    return list(DEFAULTS) + losses.registered_for("gender")


def make_spec(data: DataFlags) -> Spec:
    """The track's data from the command line's flags (the Track protocol): the toy world's people
    (n_train / n_test people spread over its (activity, gender) cells), or `--dataset people --root`
    a CSV or folder of real people, split 60/20/20 in every cell."""
    if data.dataset == "people":
        if data.root is None:
            raise ValueError("--dataset people needs --root PEOPLE.csv (path, gender, activity) or a folder")
        return real_spec(str(Path(data.root).expanduser().resolve()), seed=data.seed)
    if data.dataset not in (None, "toy"):
        raise ValueError("the gender task reads --dataset toy (the toy world) or --dataset people --root PATH")
    if data.model != "toy":
        raise ValueError("a real model needs real people: --dataset people --root PEOPLE.csv (or a folder)")
    cells = len(ACTIVITIES) * len(GENDERS)
    for flag, n in (("--n-train", data.n_train), ("--n-test", data.n_test)):
        if n is not None and n % cells:
            raise ValueError(
                f"gender {flag} counts people over {cells} (activity, gender) cells: use a multiple of {cells}"
            )
    per_cell = lambda n, default: default if n is None else n // cells
    return toy_spec(per_cell(data.n_train, 30), per_cell(data.n_test, 20), data.seed)


def train_config(method: str, **overrides) -> TrainConfig:
    """The TrainConfig of `method` on this track: DEFAULTS, then overrides (None = keep)."""
    if method not in methods():
        raise ValueError(f"the gender track trains with {', '.join(methods())}, not {method!r}")
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
    val_gallery_set: object | None = None  # a second balanced gallery, where t* is chosen


#: The share of the toy's people drawn with a weak gender cue (clipaln.toyworld.datasets.WEAK_CUE),
#: so that the skew is graded rather than saturated: chosen on the validation gallery for police
#: about 8 / 2 and most skewed prompts 6 to 9 of 10 (docs/toy-world.md, "A graded skew").
WEAK_CUE_SHARE = 0.5


def toy_spec(
    n_train_per_cell: int = 30, n_gallery_per_cell: int = 20, seed: int = 0, weak_cues: float = WEAK_CUE_SHARE
) -> Spec:
    """The toy world's people: n images per (activity, gender) to train on, to choose t* on (a
    validation gallery) and to report retrieval on (the test gallery); a share `weak_cues` of them
    drawn with a weak gender cue."""
    tr = ToyPeople(n_train_per_cell, seed, "train", weak_cues)
    ga = ToyPeople(n_gallery_per_cell, seed, "gallery", weak_cues)
    val = ToyPeople(n_gallery_per_cell, seed, "val-gallery", weak_cues)
    key = {
        "world": "toy",
        "n_train": n_train_per_cell,
        "n_gallery": n_gallery_per_cell,
        "seed": seed,
        "weak_cues": weak_cues,
        "version": 3,
    }
    return Spec(tr, ga, tr.genders, tr.activities, list(SKEW), key, val_gallery_set=val)


def real_spec(root: str, seed: int = 0, train_share: float = 0.6) -> Spec:
    """Real people: a CSV of image, gender, activity (columns path, gender, activity) or a folder
    root/{activity}/{gender}/*.jpg. Each (activity, gender) cell is split at random (seeded): a
    train_share to train on, the rest halved into a validation gallery (where t* is chosen) and a
    test gallery; both galleries are gender-balanced per activity (cells cut to the smaller one).
    Every activity is a retrieval prompt."""
    path = Path(root)
    people = GenderCSV(path) if path.suffix.lower() == ".csv" else GenderFolder(path)
    if len(people.genders) != 2:
        raise ValueError(f"the gender track needs exactly two genders, {path} has {people.genders}")
    g = torch.Generator().manual_seed(seed)
    cells: dict[tuple[str, str], list[int]] = {}
    for i, (_, gender_, activity) in enumerate(people.samples):
        cells.setdefault((activity, gender_), []).append(i)
    train, val, test = [], [], []
    for a in people.activities:
        parts = []
        for gen in people.genders:
            idx = cells.get((a, gen), [])
            idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            cut = round(train_share * len(idx))
            rest = idx[cut:]
            train += idx[:cut]
            parts.append((rest[: len(rest) // 2], rest[len(rest) // 2 :]))
        m_val, m_test = min(len(p[0]) for p in parts), min(len(p[1]) for p in parts)
        if m_test == 0 or m_val == 0:
            raise ValueError(f"activity {a!r} needs at least 4 images of each gender (train, and each gallery)")
        for v, t in parts:
            val += v[:m_val]
            test += t[:m_test]
    files = paths_fingerprint([path, *(s[0] for s in people.samples)]) if path.is_file() else files_fingerprint(path)
    key = {"world": "people", "files": files, "split": digest([train, val, test]), "seed": seed}  # not where it lies
    return Spec(
        Subset(people, train),
        Subset(people, test),
        list(people.genders),
        list(people.activities),
        list(people.activities),
        key,
        val_gallery_set=Subset(people, val),
    )


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
    val_gallery: torch.Tensor | None = None  # (M', d) where t* is chosen
    val_gallery_labels: list[tuple[str, str]] | None = None
    record: dict = field(default_factory=dict)  # the data's identity (manifest.data_record)

    def trained_on(self, genders: Collection[str]) -> Features:
        """The same features with only the training images of `genders` (D_pref and D_reg): which
        gender's images the reversal moves decides where every prompt tilts (notebook 04)."""
        unknown = set(genders) - set(self.genders)
        if unknown or not genders:
            raise ValueError(f"genders must be among {self.genders}, got {list(genders)}")
        keep = [i for i, (g, _) in enumerate(self.train_labels) if g in genders]
        return dataclasses.replace(
            self,
            train_images=self.train_images[keep],
            train_labels=[self.train_labels[i] for i in keep],
            y_w=self.y_w[keep],
            y_l=self.y_l[keep],
        )

    def on_val_gallery(self) -> Features:
        """The same features with the validation gallery in place of the test gallery."""
        if self.val_gallery is None:
            raise ValueError("these features have no validation gallery")
        return dataclasses.replace(self, gallery=self.val_gallery, gallery_labels=self.val_gallery_labels)

    def preference_data(self) -> PreferenceData:
        return PreferenceData(
            self.train_images,
            self.y_w,
            self.y_l,
            self.pref_texts,
            self.train_images,
            self.logit_scale,
            reg_texts=self.reg_texts,
            record=self.record,
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


def image_gender_direction(feats: Features) -> torch.Tensor:
    """The unit vector from the mean (unit-length) training image of genders[1] to that of genders[0]:
    the direction along which the pictured gender varies, from the labels the reversal task uses."""
    x = torch.nn.functional.normalize(feats.train_images.double(), dim=-1)
    first = torch.tensor([g == feats.genders[0] for g, _ in feats.train_labels])
    return torch.nn.functional.normalize(x[first].mean(0) - x[~first].mean(0), dim=0).float()


class PromptReflection:
    """Ours, not the paper's: reflect every text along a unit direction g, scaled by t,

        y_t = y - 2t (g . y) g,        so that g . y_t = (1 - 2t) g . y   and   x . y_t = x . y - 2t (x . g)(g . y).

    With g = image_gender_direction(feats), t = 0 is the pretrained model, t = 1/2 removes each
    prompt's component along g (debiasing by projection, Chuang et al. 2023) and t = 1 reverses it,
    prompt by prompt; the rest of each prompt, the activity, is untouched. Images are not changed.
    It stands where a projection does in Sweep, evaluate and understanding (notebook 04 derives why
    no shared W can do this: W^T W would need the eigenvalue -1)."""

    def __init__(self, direction):
        try:
            direction = torch.as_tensor(direction, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"the direction must be a vector of numbers, got {type(direction).__name__}") from None
        if direction.ndim != 1 or not torch.isfinite(direction).all() or direction.norm() == 0:
            raise ValueError("the direction must be a finite, non-zero vector")
        self.direction = torch.nn.functional.normalize(direction, dim=0).float()
        self.dim = direction.numel()

    def scorer(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> _ReflectionScorer:
        for name, e in (("image", image_emb), ("text", text_emb)):
            if e.ndim != 2 or e.shape[-1] != self.dim:
                raise ValueError(f"the reflection is {self.dim}-d; the {name} embeddings are {tuple(e.shape)}")
        return _ReflectionScorer(self.direction, image_emb, text_emb)


class _ReflectionScorer:
    def __init__(self, g, image_emb, text_emb):
        self.g = g
        self.x = torch.nn.functional.normalize(image_emb.float(), dim=-1)
        self.y = torch.nn.functional.normalize(text_emb.float(), dim=-1)

    def scores(self, t) -> torch.Tensor:
        t = float(exponents(t))  # a finite number, as SharedProjection.scaled takes it
        y = self.y - 2 * t * (self.y @ self.g)[:, None] * self.g[None]
        return self.x @ torch.nn.functional.normalize(y, dim=-1).T


def _scorer(projection, image_emb: torch.Tensor, text_emb: torch.Tensor):
    if isinstance(projection, PromptReflection):
        return projection.scorer(image_emb, text_emb)
    return SpectralScorer(projection or SharedProjection(image_emb.shape[-1]), image_emb, text_emb, retrieval=True)


def _unit_after(projection, emb: torch.Tensor, t: float) -> torch.Tensor:
    """Unit-length embeddings under W_t, in float64 (W_t itself as SharedProjection.scaled builds it)."""
    e = emb.double()
    return torch.nn.functional.normalize(e, dim=-1) if projection is None else projection.scaled(t)(e)


def metric(projection: SharedProjection | None, t: float, dim: int) -> torch.Tensor:
    """M_t = W_t^T W_t = V S^{2t} V^T in float64 (the identity without a projection): every score
    under a shared W_t is x^T M_t y over the norms (notebook 04, 4.1)."""
    if projection is None:
        return torch.eye(dim, dtype=torch.float64)
    _, s, vh = projection.svd()
    return vh.double().T @ torch.diag(s.double() ** (2 * t)) @ vh.double()


def activity_gaps(feats: Features) -> dict[str, torch.Tensor]:
    """G_a per activity: the mean unit test-gallery image of its genders[0] minus that of genders[1]."""
    x = torch.nn.functional.normalize(feats.gallery.double(), dim=-1)
    first = torch.tensor([g == feats.genders[0] for g, _ in feats.gallery_labels])
    out = {}
    for a in feats.activities:
        of_a = torch.tensor([act == a for _, act in feats.gallery_labels])
        out[a] = x[of_a & first].mean(0) - x[of_a & ~first].mean(0)
    return out


def lean_terms(feats: Features, projection: SharedProjection | None, t: float) -> dict:
    """What a shared W_t does to each prompt's gender lean, split as notebook 04 derives it.

    With x, y unit embeddings, M_t = W_t^T W_t, g = image_gender_direction(feats), G_a the mean
    image of activity a's genders[0] minus that of its genders[1] (test gallery), and the prompt
    y = alpha g + r (r orthogonal to g), the gap in the score numerator x^T M_t y is exactly

        G_a^T M_t y  =  alpha (G_a^T M_t g)   (the gain term: g's own part, scaled by M_t)
                     +  G_a^T M_t r           (the coupled term: the rest of the prompt, coupled in by M_t).

    Returns {prompt: {"alpha", "gain", "gain_term", "coupled_term", "numerator", "lean"}}, with
    "gain" = G_a^T M_t g and "lean" the retrieval quantity itself: the mean cosine of genders[0]'s
    images minus that of genders[1]'s under W_t (cosines divide the numerator by ||W_t x|| ||W_t y||)."""
    if projection is not None and not isinstance(projection, SharedProjection):
        raise ValueError(f"this splits what a shared W does; got a {type(projection).__name__}, not a SharedProjection")
    g = image_gender_direction(feats).double()
    y = torch.nn.functional.normalize(feats.prompt_texts.double(), dim=-1)
    m = metric(projection, t, g.numel())
    xu, yu = _unit_after(projection, feats.gallery, t), _unit_after(projection, feats.prompt_texts, t)
    first = torch.tensor([gg == feats.genders[0] for gg, _ in feats.gallery_labels])
    gaps = activity_gaps(feats)
    out = {}
    for j, a in enumerate(feats.activities):
        of_a = torch.tensor([act == a for _, act in feats.gallery_labels])
        g_a = gaps[a]
        alpha = y[j] @ g
        r = y[j] - alpha * g
        gain = g_a @ m @ g
        out[a] = {
            "alpha": alpha.item(),
            "gain": gain.item(),
            "gain_term": (alpha * gain).item(),
            "coupled_term": (g_a @ m @ r).item(),
            "numerator": (g_a @ m @ y[j]).item(),
            "lean": ((xu[of_a & first].mean(0) - xu[of_a & ~first].mean(0)) @ yu[j]).item(),
        }
    return out


def caption_pull(feats: Features, projection: SharedProjection | None, t: float) -> dict:
    """How each gender's images sit, under W_t, towards the captions: per gender of the test
    gallery, the mean cosine to its own gender's caption ("this man is cooking."), to the other's,
    and to the neutral retrieval prompt of its activity; and the share whose own caption wins."""
    if projection is not None and not isinstance(projection, SharedProjection):
        raise ValueError(f"this splits what a shared W does; got a {type(projection).__name__}, not a SharedProjection")
    x = _unit_after(projection, feats.gallery, t)
    c = _unit_after(projection, feats.pref_texts, t)
    v = _unit_after(projection, feats.prompt_texts, t)
    gi = {g: i for i, g in enumerate(feats.genders)}
    ai = {a: i for i, a in enumerate(feats.activities)}
    out = {}
    for g in feats.genders:
        idx = [i for i, (gg, _) in enumerate(feats.gallery_labels) if gg == g]
        acts = torch.tensor([ai[feats.gallery_labels[i][1]] for i in idx])
        own = (x[idx] * c[2 * acts + gi[g]]).sum(1)
        other = (x[idx] * c[2 * acts + 1 - gi[g]]).sum(1)
        neutral = (x[idx] * v[acts]).sum(1)
        out[g] = {
            "own caption": own.mean().item(),
            "other caption": other.mean().item(),
            "neutral prompt": neutral.mean().item(),
            "own wins": (own > other).double().mean().item(),
        }
    return out


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
        self.scorer = _scorer(projection, feats.gallery, feats.prompt_texts)
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
                "retrieval/max_skew": metrics.max_skew_at_k(g, self.k, self.feats.genders),
                "retrieval/ndkl": metrics.ndkl(g, self.feats.genders),
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
    scorer = _scorer(projection, f.gallery, f.pref_texts)
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
        "curve": [{m: c[m] for m in keep} for c in curve],
        "distinct_counts": distinct,
        "understanding": fig3,
        "understanding_crossing": crossing(fig3),
    }


def format_result(result: dict) -> str:
    """evaluate()'s result for people: men / women in the top k per prompt at t = 0, 1 and t*."""
    cols = [("t=0", result["t0"])]
    if "t1" in result:
        cols += [("t=1", result["t1"]), (f"t*={result['t_star']:.2f}", result["t_star_metrics"])]
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
