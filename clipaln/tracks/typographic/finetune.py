"""Fine-tuning the encoders on the typographic track (`--mode full`), and adversarial training (App. K)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ... import adversarial
from ... import distributed as dist
from ...features import (
    PreprocessedView,
    encode_dataset,
    encode_texts,
)
from ...finetune import finetune_encoders
from ...models import ClipBundle
from ...train import TrainConfig
from .experiment import build_features, evaluate_split
from .spec import NO_VALIDATION, Features, Spec, Split, attacked_datasets


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
        raise ValueError(f"--eval-every scores the model on validation data, and {NO_VALIDATION}")
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
