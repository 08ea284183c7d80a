"""The typographic track's data: what defines an experiment (Spec: the toy world's or a real dataset's
images, the attack styles, the held-out words), and the features it is encoded into."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...data.fingerprint import files_fingerprint
from ...data.fonts import UNSEEN_FONTS
from ...data.real import (
    ImageFolderDataset,
    Subset,
    check_template,
    torchvision_dataset,
)
from ...data.real import spec as dataset_spec
from ...data.typographic import UNSEEN_COLORS, AttackStyle, TypographicDataset
from ...manifest import digest
from ...policy import PreferenceData
from ...toyworld import OBJECTS
from ...toyworld.config import article
from ...toyworld.datasets import HELD_OUT_WORDS, ToyObjects, attack_styles
from ..protocol import DataFlags


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


def refuse_capped_sizes(spec: Spec, n_train: int | None, n_test: int | None) -> None:
    """One line where a size typed for a new run is more than the dataset gives (real_spec caps the
    track's defaults, and would cap these silently). Not for eval or --resume: a run recorded before
    this check holds the size it was asked for, and its data key the size it used."""
    one_set = getattr(spec.test_set, "base", None) is getattr(spec.train_set, "base", spec)  # data.real.Subset
    for name, asked in (("n_train", n_train), ("n_test", n_test)):
        if asked is None or spec.key.get(name, asked) >= asked:
            continue
        where = spec.key["world"]
        if one_set:
            has = f"has {spec.key['n']} images, split between --n-train (at most half) and --n-test (the rest)"
        else:
            split = "training" if name == "n_train" else "test"
            has = f"has {spec.key[name]} usable images in its {split} split"
        raise ValueError(f"--{name.replace('_', '-')} {asked}: {where} {has}: ask for {spec.key[name]} or fewer")


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


#: Why a typographic spec has no validation split, and what to do (the toy's is n_val; a real dataset's
#: is the training images that n_train leaves over).
NO_VALIDATION = (
    "this data has no validation split: a real dataset's validation images are the images --n-train (and, "
    "in a dataset of one split, --n-test) leave over, so pass a smaller --n-train or --n-test (the toy: n_val > 0)"
)


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


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    """(train, test) for a folder laid out as root/train/<class> and root/val/<class> (or test/)."""
    test = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test is not None else None


def ensemble(dataset: str) -> tuple[str, ...]:
    """The prompt ensemble open_clip ships for a dataset: its 80 OpenAI ImageNet templates for the
    ImageNet classes (ImageNet-100 is named with open_clip's ImageNet class names); () for any other."""
    if dataset != "imagenet100":
        return ()
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


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
        ensemble=ensemble(dataset),
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
