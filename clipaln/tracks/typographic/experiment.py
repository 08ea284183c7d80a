"""The typographic track's experiment: encode once, train W, evaluate, sweep t, choose t on validation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ... import losses
from ...data.real import (
    MaterzynskaDataset,
    TypographicPhotoFolder,
    check_template,
)
from ...data.typographic import reading_images
from ...features import (
    FeatureCache,
    encode_dataset,
    encode_images,
    encode_texts,
    model_fingerprint,
    resolve_precision,
    zero_shot_texts,
)
from ...manifest import data_record
from ...metrics import accuracy
from ...models import ClipBundle
from ...policy import logprobs, refuse_unknown_words, similarities
from ...projection import SharedProjection, SpectralScorer, exponents, spectrum
from ...train import SCHEDULES, TrainConfig, fit_projection
from .spec import NO_VALIDATION, Features, Spec, Split, attacked_datasets, prompts_for

#: Per-method settings for a W on cached features. beta and lambda are the paper's (from the loss
#: registry) and every preference method averages its iterates with BMA, as the authors do. The
#: learning rate, epochs and the weight of the orthogonality penalty (orth) were chosen by
#: `clipaln.bench.tuning.tune` on
#: the toy world's validation split (never on test numbers), under the target for W
#: (clipaln.projection.MAX_GAP, S_RANGE) and the dial's: `clipaln bench tune --json` prints the grid and the choice.
DEFAULTS = SCHEDULES  # the package's defaults were tuned on this track (clipaln.train.SCHEDULES)
#: How much clean validation accuracy a choice of W or t may give up at t = 1.
MAX_CLEAN_DROP = 0.02
#: The dial: Fig. 2's range of t in steps of 0.2, and the clean accuracy a choice must keep at every t of it.
DIAL_TS = tuple(round(-2.0 + 0.2 * i, 1) for i in range(17))
MIN_CLEAN_ON_DIAL = 0.6
#: The paper's short names of the metrics, for printing.
SHORT_NAMES = {
    "O": "accuracy/clean",
    "T": "accuracy/attacked",
    "T_unseen": "accuracy/attacked_unseen",
    "OCR": "accuracy/ocr",
    "text-only": "accuracy/text_only",
    "zero-shot": "zeroshot/accuracy",  # with the dataset's prompt ensemble, where it has one
}


def in_percent(metrics: dict) -> dict:
    """The accuracies of `metrics` under the paper's short names (O, T, T_unseen, OCR, text-only), in
    percent: for printing."""
    return {short: 100 * metrics[key] for short, key in SHORT_NAMES.items() if key in metrics}


def format_metrics(metrics: dict) -> str:
    """One line for people, e.g. "O 100.0  T 94.0  T_unseen 90.1  OCR 4.2  text-only 80.3  KL 0.0009",
    then W's "|W^T W - I| 0.14  S 0.50-1.15" (the gap and the range of its singular values)."""
    kl = f"  KL {metrics['kl/clean']:.4f}" if "kl/clean" in metrics else ""
    w = (
        f"  |W^T W - I| {metrics['w/orthogonality_gap']:.2f}  S {metrics['w/s_min']:.2f}-{metrics['w/s_max']:.2f}"
        if "w/orthogonality_gap" in metrics
        else ""
    )
    return "  ".join(f"{k} {v:.1f}" for k, v in in_percent(metrics).items()) + kl + w


def train_config(method: str, **overrides) -> TrainConfig:
    """The TrainConfig of `method` on this track: registry defaults, DEFAULTS, then overrides (None = keep)."""
    entry = losses.method(method)
    if method not in losses.BUILTIN and method not in losses.registered_for("typographic"):
        raise ValueError(f"the loss {method!r} is registered for {', '.join(entry.tasks)}, not the typographic track")
    return TrainConfig.for_method(method, DEFAULTS, **overrides)


def build_features(
    bundle: ClipBundle,
    spec: Spec,
    cache: FeatureCache | None = None,
    batch_size: int = 256,
    progress: bool = True,
    with_train: bool = True,
    workers: int | None = None,
    precision: str = "auto",
) -> Features:
    """Render the attacks and encode every image once (cached on disk by model + data), streaming:
    DataLoader workers render and preprocess, and only embeddings are kept (features.encode_dataset).

    with_train=False encodes only what evaluate() needs (the features' .train is then None), e.g.
    to evaluate a fine-tuned encoder. workers: DataLoader workers (default: one per core but one);
    precision: "auto" (bf16 autocast on CUDA), "fp32", "bf16" or "fp16"."""
    if len(spec.class_names) < 2:
        raise ValueError("the typographic track needs at least two classes")
    prompts = prompts_for(spec)
    refuse_unknown_words(bundle, prompts, "class prompts")
    encoding = dict(batch_size=batch_size, workers=workers, precision=precision, progress=progress)
    resolved = resolve_precision(precision, bundle.device)

    def compute():
        out = {}
        for name, ds in attacked_datasets(spec).items():
            if name in ("train", "val") and not with_train:
                continue
            # the unseen-style attacks are written on the test images: their clean embeddings are the test ones
            columns = ("attacked",) if name == "unseen" else ("clean", "attacked")
            encoded = encode_dataset(
                bundle,
                ds,
                (1,) if name == "unseen" else (0, 1),
                (2, 3),
                desc=f"encode {name}",
                **encoding,
            )
            out.update(dict(zip([f"{name}.{c}" for c in (*columns, "labels", "written")], encoded, strict=True)))
        imgs, labels = reading_images(spec.class_names, spec.n_reading, spec.reading_size, spec.style, spec.seed)
        out["reading"] = encode_images(bundle, imgs, batch_size, progress, desc="encode reading", precision=precision)
        out["reading_labels"] = labels
        return out

    cache = cache or FeatureCache(enabled=False)
    key = {
        **spec.key,
        "track": "typographic",
        "template": spec.template,
        "style": repr(spec.style),
        "unseen": repr(spec.unseen_style),
        "held_out": spec.held_out,
        **({} if with_train else {"train": False}),
        **({} if resolved == "fp32" else {"precision": resolved}),
    }
    # an eval after training reads the training run's entry, which holds the test split too
    t = cache.get(bundle, key, compute, superset=None if with_train else {k: v for k, v in key.items() if k != "train"})
    split = lambda n: Split(
        t.get(f"{n}.clean", t["test.clean"]), t[f"{n}.attacked"], t[f"{n}.labels"].long(), t[f"{n}.written"].long()
    )
    return Features(
        list(spec.class_names),
        prompts,
        encode_texts(bundle, prompts),
        bundle.logit_scale,
        split("train") if with_train else None,
        split("val") if with_train and "val.attacked" in t else None,
        split("test"),
        split("unseen"),
        t["reading"],
        t["reading_labels"].long(),
        data_record(bundle.name, model_fingerprint(bundle), "typographic", spec.key, bundle.pretrained),
        zero_shot_texts(bundle, spec.class_names, spec.ensemble) if spec.ensemble else None,
    )


# --- training and evaluation ------------------------------------------------------------------


def train(
    feats: Features, cfg: TrainConfig, progress: bool = True, **checkpointing: Any
) -> tuple[SharedProjection, dict]:
    """Fit W on D_pref / D_reg; `checkpointing` goes to fit_projection (checkpoint, checkpoint_every, resume)."""
    return fit_projection(feats.preference_data(), cfg, progress=progress, **checkpointing)


def evaluate(
    feats: Features,
    projection: SharedProjection | None = None,
    texts: torch.Tensor | None = None,
    reference: Features | None = None,
) -> dict:
    """The track's metrics (fractions; see the module docstring) of the base model, of W, or of
    learned prompts (`texts`). kl/clean compares with the frozen model: `feats` themselves, or
    `reference` (the base model's features) when `feats` come from a fine-tuned encoder, which has no
    W: then no spectrum (w/...) either, unless a `projection` is given."""
    texts = feats.texts if texts is None else texts
    sim = lambda x: similarities(x, texts, projection)
    tau = feats.logit_scale
    ref = reference or feats
    kl = losses.kl_regularizer(
        logprobs(feats.test.clean, texts, tau, projection), logprobs(ref.test.clean, ref.texts, ref.logit_scale)
    ).item()
    return {
        "accuracy/clean": accuracy(sim(feats.test.clean), feats.test.labels),
        "accuracy/attacked": accuracy(sim(feats.test.attacked), feats.test.labels),
        "accuracy/attacked_unseen": accuracy(sim(feats.unseen.attacked), feats.unseen.labels),
        "accuracy/ocr": accuracy(sim(feats.test.attacked), feats.test.written),
        "accuracy/text_only": accuracy(sim(feats.reading), feats.reading_labels),
        "kl/clean": kl,
        **(spectrum(projection) if reference is None or projection is not None else {}),
        **zero_shot(feats, projection),
    }


def zero_shot(feats: Features, projection: SharedProjection | None = None) -> dict:
    """zeroshot/accuracy: clean test images against the dataset's prompt ensemble (the field's way to
    measure what a model keeps); empty where the dataset has no ensemble."""
    if feats.ensemble_texts is None:
        return {}
    hit = accuracy(similarities(feats.test.clean, feats.ensemble_texts, projection), feats.test.labels)
    return {"zeroshot/accuracy": hit}


@torch.no_grad()
def evaluate_photos(
    bundle: ClipBundle,
    photos: MaterzynskaDataset | TypographicPhotoFolder,
    projection: SharedProjection | None = None,
    template: str = "a photo of a {}.",
    **encoding: Any,
) -> dict:
    """Real typographic photos (clipaln.data.real.photo_set: items (image, true label, written label or
    -1)) classified over the set's own class names: photos/accuracy (the true object wins),
    photos/attack_success (the written word wins, over photos whose word is another class: a photo
    whose word is its own label is no attack), photos/n and photos/not_attacks (those same-word photos)."""
    emb, labels, written = encode_dataset(bundle, photos, (0,), (1, 2), desc="encode photos", **encoding)
    texts = encode_texts(bundle, [check_template(template).format(c) for c in photos.classes])
    pred = similarities(emb, texts, projection).argmax(-1)
    named = (written >= 0) & (written != labels)
    return {
        "photos/accuracy": (pred == labels).float().mean().item(),
        "photos/attack_success": (pred[named] == written[named]).float().mean().item() if named.any() else None,
        "photos/n": len(labels),
        "photos/not_attacks": int((written == labels).sum()),
    }


@torch.no_grad()
def evaluate_split(feats: Features, split: Split, projection: SharedProjection | None = None) -> dict:
    """Clean and attacked accuracy and OCR on one split (e.g. feats.val, to choose hyper-parameters)."""
    sim = lambda x: similarities(x, feats.texts, projection)
    return {
        "accuracy/clean": accuracy(sim(split.clean), split.labels),
        "accuracy/attacked": accuracy(sim(split.attacked), split.labels),
        "accuracy/ocr": accuracy(sim(split.attacked), split.written),
    }


def validator(feats: Features) -> Callable[[SharedProjection | None], dict[str, float]] | None:
    """W -> its clean and attacked accuracy and OCR on the validation split (what `--eval-every`
    logs during training), or None when the data has no validation split."""
    if feats.val is None:
        return None
    return lambda projection: evaluate_split(feats, feats.val, projection)


#: The t a validation choice scans by default: Fig. 2's range, in steps of 0.1.
CHOOSE_TS = tuple(round(-2.0 + 0.1 * i, 1) for i in range(33))


def choose_t(
    feats: Features,
    projection: SharedProjection,
    ts: Iterable[float] = CHOOSE_TS,
    max_clean_drop: float = MAX_CLEAN_DROP,
) -> dict:
    """t chosen on the validation split, reported on test: the t of `ts` with the highest attacked
    accuracy on validation among those whose clean accuracy there is within max_clean_drop of the base
    model's (ties: the t nearest 1). Returns {"t", "chosen_on", "val": its validation metrics,
    "test": evaluate() of W_t on the test split}."""
    if feats.val is None:
        raise ValueError(f"choosing t needs a validation split, and {NO_VALIDATION}")
    if projection is None:
        raise ValueError("choosing t needs a projection W")
    base = evaluate_split(feats, feats.val)["accuracy/clean"]
    rows = [(float(t), evaluate_split(feats, feats.val, projection.scaled(float(exponents(t))))) for t in ts]
    ok = [(t, r) for t, r in rows if r["accuracy/clean"] >= base - max_clean_drop]
    if not ok:
        raise ValueError(f"no t in the grid keeps clean validation accuracy within {max_clean_drop:.0%} of the base")
    t, val = max(ok, key=lambda tr: (tr[1]["accuracy/attacked"], -abs(tr[0] - 1.0)))
    return {"t": t, "chosen_on": "validation split", "val": val, "test": evaluate(feats, projection.scaled(t))}


def dial(sweep: Sweep, ts: Sequence[float] = DIAL_TS) -> dict:
    """How the dial turns over `ts` (Fig. 2's range by default): the lowest clean accuracy, T and O
    at t = 0 and 1, OCR at t = 0, -1 and -2, and the largest change of T between neighbouring t."""
    curve = {t: sweep.at(t) for t in sorted({*ts, 0.0, 1.0, -1.0, -2.0})}
    at = lambda t, k: curve[t][k]
    keys = sorted(curve)
    steps = [abs(at(b, "accuracy/attacked") - at(a, "accuracy/attacked")) for a, b in zip(keys, keys[1:])]
    return {
        "dial/min_clean": min(at(t, "accuracy/clean") for t in ts),
        "dial/clean_t0": at(0.0, "accuracy/clean"),
        "dial/clean_t1": at(1.0, "accuracy/clean"),
        "dial/attacked_t0": at(0.0, "accuracy/attacked"),
        "dial/attacked_t1": at(1.0, "accuracy/attacked"),
        "dial/ocr_t0": at(0.0, "accuracy/ocr"),
        "dial/ocr_t-1": at(-1.0, "accuracy/ocr"),
        "dial/ocr_t-2": at(-2.0, "accuracy/ocr"),
        "dial/max_attacked_step": max(steps),
    }


class Sweep:
    """accuracy/clean, /attacked, /ocr (the written word named on the attacked images) and /text_only
    (reading text-only images) for any t, from one SVD (the spectral scorer): what the slider calls.
    split: "test" (the default) or "val" (for choosing hyper-parameters; its text-only numbers are the
    test's text-only images)."""

    def __init__(self, feats: Features, projection: SharedProjection, split: str = "test"):
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        part = feats.test if split == "test" else feats.val
        if part is None:
            raise ValueError(f"these features have no {split} split")
        self.feats, self.split = feats, part
        images = torch.cat([part.clean, part.attacked, feats.reading])
        self.n1, self.n2 = len(part.clean), len(part.clean) + len(part.attacked)
        self.scorer = SpectralScorer(projection, images, feats.texts)
        self.labels = torch.cat([part.labels, part.labels, feats.reading_labels])

    def scores(self, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
        return self.scorer.scores(t)

    def at(self, t: float | Sequence[float] | torch.Tensor) -> dict:
        pred = self.scorer.classify(t)
        hit = (pred == self.labels).float()
        return {
            "t": float(t) if torch.as_tensor(t).ndim == 0 else t,
            "accuracy/clean": hit[: self.n1].mean().item(),
            "accuracy/attacked": hit[self.n1 : self.n2].mean().item(),
            "accuracy/ocr": (pred[self.n1 : self.n2] == self.split.written).float().mean().item(),
            "accuracy/text_only": hit[self.n2 :].mean().item(),
        }

    def curve(self, ts: Iterable[float]) -> list[dict]:
        return [self.at(float(t)) for t in ts]


def per_direction_reading(
    feats: Features, projection: SharedProjection, t: float = 2.0, metric: str = "accuracy/ocr"
) -> torch.Tensor:
    """For each singular direction i: the drop in `metric` (a fraction; OCR by default, or
    "accuracy/text_only") when only direction i is scaled by S_i^t (all others at t = 0). The
    directions whose amplification stops the model from reading are the ones that carry reading."""
    sweep = Sweep(feats, projection)
    base = sweep.at(0.0)[metric]
    out = torch.zeros(projection.dim)
    for i in range(projection.dim):
        tv = torch.zeros(projection.dim)
        tv[i] = t
        out[i] = base - sweep.at(tv)[metric]
    return out


def evaluator(feats: Features, projection: SharedProjection | None, split: str = "test") -> Callable[[float], dict]:
    """t -> the track's metrics of W_t (the Track protocol): `evaluate` on the test split, or clean and
    attacked accuracy and OCR on the validation split (`evaluate_split`)."""
    scaled = lambda t: None if projection is None else projection.scaled(t)
    if split == "val":
        if feats.val is None:
            raise ValueError("this typographic data has no validation split to score")
        return lambda t: evaluate_split(feats, feats.val, scaled(t))
    return lambda t: evaluate(feats, scaled(t))
