"""The gender track's settings and data: the paper's setting by method, the toy world's people or a real
folder of them, and the features they are encoded into."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ... import losses
from ...data.fingerprint import files_fingerprint, paths_fingerprint
from ...data.gender import GENDER_TEMPLATE, NEUTRAL_TEMPLATE, GenderCSV, GenderFolder
from ...data.real import Subset
from ...manifest import digest
from ...policy import PreferenceData
from ...toyworld import ACTIVITIES, GENDERS
from ...toyworld.config import SKEW
from ...toyworld.datasets import ToyPeople
from ...train import TrainConfig
from ..protocol import DataFlags

#: The paper's setting for the gender task, beta = lambda = 1, for every method (the paper gives
#: one setting for the task, not one per method), and BMA as for every preference method. lr,
#: epochs and the orthogonality penalty keep W within its target (clipaln.projection.MAX_GAP,
#: S_RANGE; docs/toy-world.md): lr 0.01 x 30 epochs would leave DPO's smallest singular value at
#: 0.36. KTO misses the target narrowly (smallest singular value 0.47-0.48 over seeds 0-2); with
#: orth = 100 it meets it but reverses no prompt.
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
