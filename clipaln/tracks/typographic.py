"""The typographic experiment end to end: build D_pref / D_reg, encode once, train W, evaluate, sweep t.

One API for both experiments (see clipaln.tracks): Spec, toy_spec / real_spec, build_features,
DEFAULTS, train_config, train(feats, cfg), evaluate(feats, projection), Sweep(feats, W).at(t).
The same functions serve the toy world and real data: both give (image, label) datasets, and
attacks are written by clipaln.data.typographic.attack.

Metrics (docs/method.md section 4), fractions in [0, 1]: accuracy/clean (the paper's O), accuracy/attacked
(T, training style), accuracy/attacked_unseen (T_unseen: other fonts, colours, sizes, rotation,
words never written in training), accuracy/ocr (OCR as the paper's Fig. 2 plots it: naming the
written word on the same attacked images), accuracy/text_only (reading text-only images over the
class names), kl/clean = KL(pi_ref || pi) on clean test images, and W's spectrum (w/orthogonality_gap,
w/s_min, w/s_max; clipaln.projection.spectrum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from .. import adversarial, losses
from .. import distributed as dist
from ..data.fonts import UNSEEN_FONTS
from ..data.real import (
    ImageFolderDataset,
    MaterzynskaDataset,
    Subset,
    TypographicPhotoFolder,
    check_template,
    files_fingerprint,
    torchvision_dataset,
)
from ..data.real import spec as dataset_spec
from ..data.typographic import UNSEEN_COLORS, AttackStyle, TypographicDataset, reading_images
from ..features import (
    FeatureCache,
    PreprocessedView,
    encode_dataset,
    encode_images,
    encode_texts,
    model_fingerprint,
    resolve_precision,
    zero_shot_texts,
)
from ..finetune import finetune_encoders
from ..manifest import data_record, digest
from ..metrics import accuracy
from ..models import ClipBundle
from ..policy import PreferenceData, logprobs, refuse_unknown_words, similarities
from ..projection import SharedProjection, SpectralScorer, exponents, spectrum
from ..toyworld import OBJECTS
from ..toyworld.config import article
from ..toyworld.datasets import HELD_OUT_WORDS, ToyObjects, attack_styles
from ..train import SCHEDULES, TrainConfig, fit_projection
from .protocol import DataFlags

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


def make_spec(data: DataFlags) -> Spec:
    """The track's data from the command line's flags (the Track protocol): the toy world for the toy
    model, else a dataset by registry name (or "folder") at `root`; n_train / n_test images (None:
    the track's default)."""
    toy_data = data.dataset in (None, "toy")
    keep = {k: v for k, v in (("n_train", data.n_train), ("n_test", data.n_test)) if v is not None}
    if toy_data and data.root is not None:
        raise ValueError("--root goes with --dataset NAME (or folder); the toy world is drawn, not read")
    if data.model == "toy" and toy_data:
        return toy_spec(seed=data.seed, **keep)
    if toy_data:
        raise ValueError("a real model needs --dataset NAME --root PATH (or --dataset folder --root PATH)")
    if data.root is None:
        raise ValueError("--dataset needs --root PATH")
    root = str(Path(data.root).expanduser().resolve())  # the same folder gives the same key from anywhere
    return real_spec(data.dataset, root, seed=data.seed, download=data.download, **keep)


def train_config(method: str, **overrides) -> TrainConfig:
    """The TrainConfig of `method` on this track: registry defaults, DEFAULTS, then overrides (None = keep)."""
    entry = losses.method(method)
    if method not in losses.BUILTIN and method not in losses.registered_for("typographic"):
        raise ValueError(f"the loss {method!r} is registered for {', '.join(entry.tasks)}, not the typographic track")
    return TrainConfig.for_method(method, DEFAULTS, **overrides)


@dataclass
class Split:
    clean: torch.Tensor  # (N, d)
    attacked: torch.Tensor  # (N, d)
    labels: torch.Tensor  # (N,)
    written: torch.Tensor  # (N,)


@dataclass
class Features:
    class_names: list[str]
    prompts: list[str]
    texts: torch.Tensor  # (K, d)
    logit_scale: float
    train: Split | None  # None when built with with_train=False
    val: Split | None  # for choosing hyper-parameters; None without a validation set or with_train=False
    test: Split
    unseen: Split
    reading: torch.Tensor  # (R, d) text-only images
    reading_labels: torch.Tensor  # (R,)
    record: dict = field(default_factory=dict)  # the data's identity (manifest.data_record)
    ensemble_texts: torch.Tensor | None = None  # (K, d) zero-shot classifier of the spec's prompt ensemble

    def preference_data(self) -> PreferenceData:
        """D_pref = (x', y_w = true class, y_l = written class); D_reg = the clean images."""
        tr = self.train
        return PreferenceData(
            tr.attacked, tr.labels, tr.written, self.texts, tr.clean, self.logit_scale, record=self.record
        )


# --- datasets ---------------------------------------------------------------------------------


@dataclass
class Spec:
    """Everything that defines one typographic experiment's data (and its cache key)."""

    class_names: list[str]
    template: str
    train_set: object
    test_set: object
    style: AttackStyle
    unseen_style: AttackStyle
    held_out: tuple[int, ...] = ()  # class indices never written in training
    val_set: object | None = None  # for choosing hyper-parameters, never for reporting
    n_reading: int = 240
    reading_size: int = 224
    seed: int = 0
    key: dict = field(default_factory=dict)
    # templates of the prompt ensemble the field's zero-shot evaluation uses for this dataset ("{}" for the
    # class name): open_clip's 80 OpenAI ImageNet templates for imagenet100; empty where there is none
    ensemble: tuple[str, ...] = ()


def toy_spec(n_train: int = 7200, n_test: int = 600, seed: int = 0, n_val: int = 600) -> Spec:
    """The toy world's objects: n_train for D_pref / D_reg, n_val to choose hyper-parameters on,
    n_test for evaluation (three disjoint sets of fresh renders)."""
    train, unseen = attack_styles()
    held = tuple(OBJECTS.index(w) for w in HELD_OUT_WORDS)
    return Spec(
        class_names=list(OBJECTS),
        template="a photo of {a} {}.",
        train_set=ToyObjects(n_train, seed, "train"),
        test_set=ToyObjects(n_test, seed, "test"),
        style=train,
        unseen_style=unseen,
        held_out=held,
        val_set=ToyObjects(n_val, seed, "val") if n_val else None,
        n_reading=n_test,
        reading_size=64,
        seed=seed,
        key={"world": "toy", "n_train": n_train, "n_test": n_test, "n_val": n_val, "seed": seed, "version": 2},
    )


def prompts_for(spec: Spec) -> list[str]:
    """One prompt per class; "{a}" in the template becomes the class name's article."""
    check_template(spec.template)
    if "{a}" in spec.template:
        return [spec.template.replace("{a}", article(c)).format(c) for c in spec.class_names]
    return [spec.template.format(c) for c in spec.class_names]


def attacked_datasets(spec: Spec) -> dict[str, TypographicDataset]:
    """The train, val (when the spec has one), test (training style) and unseen-style attacked datasets."""
    k = len(spec.class_names)
    train_words = [c for c in range(k) if c not in spec.held_out]
    unseen_words = list(spec.held_out) or None
    val = {}
    if spec.val_set is not None:
        val["val"] = TypographicDataset(
            spec.val_set, spec.class_names, spec.seed + 3, style=spec.style, written_classes=train_words
        )
    return val | {
        "train": TypographicDataset(
            spec.train_set, spec.class_names, spec.seed, style=spec.style, written_classes=train_words
        ),
        "test": TypographicDataset(
            spec.test_set, spec.class_names, spec.seed + 1, style=spec.style, written_classes=train_words
        ),
        "unseen": TypographicDataset(
            spec.test_set, spec.class_names, spec.seed + 2, style=spec.unseen_style, written_classes=unseen_words
        ),
    }


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


def finetune(
    bundle: ClipBundle,
    spec: Spec,
    cfg: TrainConfig,
    progress: bool = True,
    feats: Features | None = None,
    train_text: bool = False,
    lock_image: bool = False,
    workers: int | None = None,
    eval_every: int = 0,
    **checkpointing: Any,
) -> tuple[ClipBundle, dict]:
    """Full fine-tuning of the image encoder (and with train_text the text encoder too, as the
    authors do; lock_image keeps the image tower frozen, as open_clip's --lock-image) on the
    experiment's D_pref / D_reg (`--mode full`); returns the fine-tuned bundle (evaluate it with
    build_features(..., with_train=False) and evaluate(..., reference=feats)) and the history.
    `feats`: the base model's features of `spec`, if already built; workers: DataLoader worker
    processes that load each step's images; eval_every: the validation split's clean and attacked
    accuracy and OCR under the current model every so many steps; checkpointing: checkpoint,
    checkpoint_every, resume, identity, report (train.loop)."""
    feats = feats or build_features(bundle, spec, progress=progress)
    ds = attacked_datasets(spec)["train"]
    validate = _model_validator(spec, feats, workers, train_text) if eval_every else None
    return finetune_encoders(
        bundle,
        PreprocessedView(ds, 1, bundle.preprocess),  # rendered and preprocessed per batch: memory holds one batch
        PreprocessedView(spec.train_set, 0, bundle.preprocess),
        feats.train.labels,
        feats.train.written,
        feats.texts,
        cfg,
        progress=progress,
        ref_attacked=feats.train.attacked,
        ref_clean=feats.train.clean,
        prompts=feats.prompts if train_text else None,
        lock_image=lock_image,
        workers=workers,
        validate=validate,
        eval_every=eval_every,
        **checkpointing,
    )


def _model_validator(
    spec: Spec, feats: Features, workers: int | None, train_text: bool
) -> Callable[[ClipBundle], dict[str, float]]:
    """A model -> evaluate_split of its own features of the validation split (encoded anew each time;
    the class texts too where the text encoder trains)."""
    if spec.val_set is None or feats.val is None:
        raise ValueError("--eval-every scores the model on validation data, and this data has none")
    val = attacked_datasets(spec)["val"]

    def validate(tuned: ClipBundle) -> dict[str, float]:
        with dist.suspended():  # every rank scores the whole split: it is small
            clean, attacked, labels, written = encode_dataset(
                tuned, val, (0, 1), (2, 3), workers=workers, progress=False
            )
        texts = encode_texts(tuned, feats.prompts) if train_text else feats.texts
        split = Split(clean, attacked, labels, written)
        return evaluate_split(dataclasses.replace(feats, texts=texts.to(clean.device)), split)

    return validate


def adversarial_finetune(
    bundle: ClipBundle,
    spec: Spec,
    cfg: TrainConfig,
    eps: float,
    pgd_steps: int = 3,
    n_train: int | None = None,
    progress: bool = True,
    feats: Features | None = None,
) -> tuple[ClipBundle, dict]:
    """Online adversarial preference training (App. K; clipaln.adversarial) of the image encoder
    on the first n_train clean training images of `spec` (all by default), perturbed by PGD of
    radius eps against the current policy at every step. Returns the fine-tuned bundle and the history.
    `feats`: any features of `spec` (for the class texts); without the training split (with_train=False)
    the labels are read from the training images themselves."""
    feats = feats or build_features(bundle, spec, progress=progress, with_train=False)
    total = len(spec.train_set)
    n = total if n_train is None else min(n_train, total)
    if feats.train is not None:
        labels = feats.train.labels[:n]
    else:
        labels = torch.tensor([int(spec.train_set[i][1]) for i in range(n)])
    images = PreprocessedView(spec.train_set, 0, bundle.preprocess)  # rendered per batch
    return adversarial.adversarial_finetune(bundle, images, labels, feats.texts, cfg, eps, pgd_steps, progress=progress)


def robust_accuracy(
    bundle: ClipBundle, spec: Spec, feats: Features, eps: float, split: str = "test", n: int | None = None, **pgd
) -> dict:
    """Accuracy on the clean images of a split ("test" or "val") of `spec`, and under PGD of radius
    eps against `bundle` (clipaln.adversarial.robust_accuracy; `pgd`: steps, seed, progress), over
    the first n images (all by default). `feats`: any features of `spec` (for the labels)."""
    dataset, labels = (spec.test_set, feats.test.labels) if split == "test" else (spec.val_set, feats.val.labels)
    if dataset is None or labels is None:
        raise ValueError(f"this experiment has no {split} split")
    labels = labels if n is None else labels[:n]
    images = PreprocessedView(dataset, 0, bundle.preprocess)
    return adversarial.robust_accuracy(bundle, images, labels, feats.texts, eps, **pgd)


@torch.no_grad()
def evaluate(
    feats: Features,
    projection: SharedProjection | None = None,
    texts: torch.Tensor | None = None,
    reference: Features | None = None,
) -> dict:
    """The track's metrics (fractions; see the module docstring) of the base model, of W, or of
    learned prompts (`texts`). kl/clean compares with the frozen model: `feats` themselves, or
    `reference` (the base model's features) when `feats` come from a fine-tuned encoder."""
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
        **spectrum(projection),
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
        raise ValueError("choosing t needs a validation split: build the features with one (n_val > 0, with_train)")
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
        pred = self.scorer.scores(t).argmax(-1)
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


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    """(train, test) for a folder laid out as root/train/<class> and root/val/<class> (or test/)."""
    test = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test is not None else None


#: The prompt ensembles open_clip ships, by dataset: its 80 OpenAI ImageNet templates, for the
#: ImageNet classes (ImageNet-100 is named with open_clip's ImageNet class names).
ENSEMBLES = {"imagenet100": tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)}


def _sources(dataset: str, root: str, download: bool):
    """(train source, test source or None when both are carved from one set, class names, template)."""
    if dataset == "folder" or dataset_spec(dataset).torchvision is None:  # ImageNet-100 is a folder
        template = "a photo of a {}." if dataset == "folder" else dataset_spec(dataset).template
        split = _split_folders(Path(root))
        if split is None:
            ds = ImageFolderDataset(root)
            return ds, None, ds.classes, template
        train, test = ImageFolderDataset(split[0]), ImageFolderDataset(split[1])
        if train.classes != test.classes:
            raise ValueError(f"{split[0]} and {split[1]} hold different class folders")
        return train, test, train.classes, template
    template = dataset_spec(dataset).template
    test, names = torchvision_dataset(dataset, root, download=download)
    if dataset_spec(dataset).train_kw is None:
        return test, None, names, template
    train, _ = torchvision_dataset(dataset, root, download=download, split="train")
    return train, test, names, template


def real_spec(
    dataset: str,
    root: str,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    download: bool = False,
    image_size: int = 224,
    n_val: int = 500,
) -> Spec:
    """A real dataset: a registry name (torchvision, or ImageNet-100's wnid folders) or "folder"
    (root/{class}/*.jpg, or root/train/{class} and root/val/{class}).

    Where the dataset has a train and a test split, n_train images for D_pref/D_reg and up to n_val
    (to choose hyper-parameters on) are drawn from the train split and n_test from the test split;
    otherwise the one set is split at random (seeded) into the three. Attacks follow the protocol
    (20-40 px at 224 px); held-out written words are a seeded fifth of the classes (at least two) when
    there are 5 or more classes; with fewer, none are held out and T_unseen reuses the training words.
    """
    train_ds, test_ds, names, template = _sources(dataset, root, download)
    if len(names) < 2:
        raise ValueError(f"{dataset} at {root} has fewer than two classes")
    if len(train_ds) < 2:
        raise ValueError(f"{dataset} at {root} has fewer than two images")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train_ds), generator=g).tolist()
    if test_ds is None:  # one set: train, test and val carved from it
        n_train = min(n_train, len(train_ds) // 2)
        n_test = min(n_test, len(train_ds) - n_train)
        test_idx, rest = perm[n_train : n_train + n_test], perm[n_train + n_test :]
        test_ds = train_ds
    else:
        n_train = min(n_train, len(train_ds))
        test_perm = torch.randperm(len(test_ds), generator=g).tolist()
        n_test = min(n_test, len(test_ds))
        test_idx, rest = test_perm[:n_test], perm[n_train:]
    n_val = min(n_val, len(rest))
    held = (
        tuple(sorted(torch.randperm(len(names), generator=g)[: max(2, len(names) // 5)].tolist()))
        if len(names) >= 5
        else ()
    )
    unseen = AttackStyle(fonts=UNSEEN_FONTS, colors=UNSEEN_COLORS, size_range=(0.15, 0.25), rotation=25.0)
    return Spec(
        class_names=list(names),
        template=template,
        train_set=Subset(train_ds, perm[:n_train]),
        test_set=Subset(test_ds, test_idx),
        val_set=Subset(train_ds, rest[:n_val]) if n_val else None,
        style=AttackStyle(),
        unseen_style=unseen,
        held_out=held,
        n_reading=max(len(names), min(n_test, 500)),
        reading_size=image_size,
        seed=seed,
        ensemble=ENSEMBLES.get(dataset, ()),
        key={
            "world": dataset,
            "files": files_fingerprint(root),  # where root lies is not part of it: a copy elsewhere is the same data
            "split": digest([perm[:n_train], test_idx, rest[:n_val]]),
            "n": len(train_ds) + (len(test_ds) if test_ds is not train_ds else 0),
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "n_val": n_val,
            "version": 3,
        },
    )


def evaluator(feats: Features, projection: SharedProjection | None, split: str = "test") -> Callable[[float], dict]:
    """t -> the track's metrics of W_t (the Track protocol): `evaluate` on the test split, or clean and
    attacked accuracy and OCR on the validation split (`evaluate_split`)."""
    scaled = lambda t: None if projection is None else projection.scaled(t)
    if split == "val":
        if feats.val is None:
            raise ValueError("this typographic data has no validation split to score")
        return lambda t: evaluate_split(feats, feats.val, scaled(t))
    return lambda t: evaluate(feats, scaled(t))
