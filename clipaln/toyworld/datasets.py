"""The toy world as datasets: objects, people, attack styles sized for 64 px, a balanced gallery.

Every item is drawn from a generator seeded by a string naming its split and index, so an item is
the same on every run and every machine, and string seeds never collide with pretraining's ints.
"""

from __future__ import annotations

import random

from PIL import Image

from ..data.fonts import UNSEEN_FONTS
from ..data.typographic import UNSEEN_COLORS, AttackStyle
from .render import ACTIVITIES, GENDERS, OBJECTS, TEXT_SIZE, render

#: Toy-world class names never written on training images (they appear only in unseen attacks).
HELD_OUT_WORDS = ("star", "tree", "umbrella")
#: The range of render's cue for a person drawn with a weak gender cue: nearly an even blend of the
#: two figures (chosen with WEAK_CUE_SHARE on the validation gallery; docs/toy-world.md).
WEAK_CUE = (0.5, 0.575)


class ToyObjects:
    """n fresh toy-world objects, classes in turn: (PIL image, label)."""

    def __init__(self, n: int, seed: int = 0, split: str = "train"):
        self.n, self.seed, self.split, self.classes = n, seed, split, list(OBJECTS)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        label = i % len(self.classes)
        return render(obj=self.classes[label], rng=random.Random(f"typo-{self.split}-{self.seed}-{i}")), label


class ToyPeople:
    """n_per_cell toy-world images for every (activity, gender): (PIL image, gender, activity).

    weak_cues: the share of people drawn with a weak gender cue (render's cue drawn uniformly from
    WEAK_CUE), chosen per item by its own seed, so the other items are drawn as without it."""

    def __init__(self, n_per_cell: int = 30, seed: int = 0, split: str = "train", weak_cues: float = 0.0):
        if not 0.0 <= weak_cues <= 1.0:
            raise ValueError(f"weak_cues is a share within [0, 1], got {weak_cues}")
        self.cells = [(g, a) for a in ACTIVITIES for g in GENDERS]
        self.n, self.seed, self.split, self.weak_cues = n_per_cell, seed, split, weak_cues
        self.genders, self.activities = list(GENDERS), list(ACTIVITIES)

    def cue(self, i: int) -> float:
        """How clearly item i shows its gender (1: the plain pictogram)."""
        r = random.Random(f"cue-{self.split}-{self.seed}-{i}")
        return r.uniform(*WEAK_CUE) if r.random() < self.weak_cues else 1.0

    def __len__(self):
        return self.n * len(self.cells)

    def __getitem__(self, i):
        g, a = self.cells[i // self.n]
        rng = random.Random(f"people-{self.split}-{self.seed}-{i}")
        return render(person=g, activity=a, rng=rng, cue=self.cue(i)), g, a


def attack_styles() -> tuple[AttackStyle, AttackStyle]:
    """Training style and unseen style for the toy world (text sized for its 64 px images)."""
    train = AttackStyle(size_range=TEXT_SIZE)
    unseen = AttackStyle(fonts=UNSEEN_FONTS, colors=UNSEEN_COLORS, size_range=(0.24, 0.34), rotation=25.0)
    return train, unseen


def heldout_rng(tag: str, seed: int, i: int) -> random.Random:
    """A generator for evaluation image i of a measurement named `tag`."""
    return random.Random(f"heldout-{tag}-{seed}-{i}")


def gallery(
    n_per_cell: int = 20, seed: int = 0, split: str = "test"
) -> tuple[list[Image.Image], list[tuple[str, str]]]:
    """A gender-balanced gallery of people: n images per (activity, gender); returns images, labels.

    split: "val" (what the toy CLIP's pretraining mixture was tuned on) or "test" (what is reported)."""
    images, labels = [], []
    for act in ACTIVITIES:
        for g in GENDERS:
            for j in range(n_per_cell):
                images.append(render(person=g, activity=act, rng=heldout_rng(f"{split}-gal-{act}-{g}", seed, j)))
                labels.append((g, act))
    return images, labels
