"""A track in one file (CONTRIBUTING.md's recipe, run by tests/test_tracks_protocol.py): on toy scenes
of an object with another object's name written on it, prefer the caption that names the written
word over the one that names the object (the reading the typographic track trains away)."""

import random
from dataclasses import dataclass

from clipaln.policy import PreferenceData
from clipaln.toyworld import OBJECTS, render
from clipaln.tracks.protocol import DataFlags
from clipaln.train import TrainConfig, fit_projection, preference_accuracy


@dataclass(frozen=True)
class Spec:
    n_train: int
    n_test: int
    seed: int

    @property
    def key(self) -> str:  # names the data: the feature cache's key, what eval checks a split against
        return f"words_over_objects:{self.n_train}:{self.n_test}:{self.seed}"


def make_spec(data: DataFlags) -> Spec:
    if data.dataset not in (None, "toy") or data.root is not None or data.download:
        raise ValueError("words_over_objects draws its own toy scenes: no --dataset, --root or --download")
    return Spec(data.n_train or 24, data.n_test or 12, data.seed)


def build_features(bundle, spec, cache=None, **encoding):
    rng = random.Random(spec.seed)
    scenes = []
    for _ in range(spec.n_train + spec.n_test):
        obj, word = rng.sample(OBJECTS, 2)
        scenes.append(
            (render(obj=obj, text=word, rng=rng.randrange(10**6)), f"a photo of a {word}.", f"a photo of a {obj}.")
        )
    part = lambda rows: PreferenceData.from_captions(bundle, *map(list, zip(*rows)))
    return {"train": part(scenes[: spec.n_train]), "test": part(scenes[spec.n_train :])}


def train_config(method, **overrides):
    return TrainConfig(method=method, **overrides)


def train(feats, cfg, **training):
    return fit_projection(feats["train"], cfg, **training)


def evaluate(feats, projection=None):
    d = feats["test"]
    return {"preference/accuracy": preference_accuracy(d.pref_images, d.texts, d.y_w, d.y_l, projection)}
