"""Gender preference data (docs/method.md section 5): reverse the model's notion of gender.

From images labelled (gender, activity):
- D_pref: action set {"this {g} is {a}."} over genders x activities; for an image of gender g
  doing a: y_w = "this {other gender} is {a}.", y_l = "this {g} is {a}.";
- D_reg: the same images with the action set {"this person is {a}."}.
Templates are configurable. Loaders: a folder root/{activity}/{gender}/*.jpg, and
a CSV with columns path, gender, activity (such as one exported from VL-Bias or FairFace);
the toy world's people are clipaln.toyworld.datasets.ToyPeople.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import read_text
from .files import image_identity, read_csv_rows
from .real import _images_in, _open_image

GENDER_TEMPLATE = "this {gender} is {activity}."
NEUTRAL_TEMPLATE = "this person is {activity}."


@dataclass
class GenderTask:
    """Action sets and preference indices for the gender-reversal task."""

    genders: list[str]
    activities: list[str]
    pref_prompts: list[str]  # (G * A) in the order index(g, a) = a * G + g
    reg_prompts: list[str]  # (A)
    y_w: torch.Tensor
    y_l: torch.Tensor


def reversal_task(
    labels: Sequence[tuple[str, str]],
    genders: Sequence[str],
    activities: Sequence[str],
    template: str = GENDER_TEMPLATE,
    neutral_template: str = NEUTRAL_TEMPLATE,
) -> GenderTask:
    """Build the action sets and (y_w, y_l) for images labelled (gender, activity)."""
    genders, activities = list(genders), list(activities)
    if len(genders) != 2:
        raise ValueError(f"the reversal task needs exactly two genders, got {genders}")
    if not activities:
        raise ValueError("the activity list is empty")
    gi = {g: i for i, g in enumerate(genders)}
    ai = {a: i for i, a in enumerate(activities)}
    pref = [template.format(gender=g, activity=a) for a in activities for g in genders]
    reg = [neutral_template.format(activity=a) for a in activities]
    y_w, y_l = [], []
    for g, a in labels:
        if g not in gi or a not in ai:
            raise ValueError(f"label ({g!r}, {a!r}) is not in the gender/activity lists")
        y_w.append(ai[a] * 2 + (1 - gi[g]))
        y_l.append(ai[a] * 2 + gi[g])
    return GenderTask(genders, activities, pref, reg, torch.tensor(y_w), torch.tensor(y_l))


class GenderFolder:
    """root/{activity}/{gender}/*.jpg -> (PIL image, gender, activity)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder does not exist: {root}")
        self.samples = []
        for act in sorted(p for p in root.iterdir() if p.is_dir()):
            for gen in sorted(p for p in act.iterdir() if p.is_dir()):
                self.samples += [(p, gen.name, act.name.replace("_", " ")) for p in _images_in(gen)]
        if not self.samples:
            raise ValueError(f"no images found in {root} (expected {root}/<activity>/<gender>/<image>.jpg)")
        self.genders = sorted({s[1] for s in self.samples})
        self.activities = sorted({s[2] for s in self.samples})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        p, g, a = self.samples[i]
        return _open_image(p), g, a


class GenderCSV:
    """A CSV with columns path, gender, activity (paths relative to the CSV's folder)."""

    COLUMNS = ("path", "gender", "activity")

    def __init__(self, csv_path: str | Path):
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"CSV file not found: {csv_path}")
        rows = read_csv_rows(csv_path, read_text(csv_path), self.COLUMNS)  # UTF-8; a BOM is not a column
        if not rows:
            raise ValueError(f"{csv_path} has no rows")
        self.samples = []
        first_line: dict[Path, int] = {}
        seen: dict[str, tuple[int, str]] = {}  # image identity -> (line, path as written)
        for line, r in enumerate(rows, start=2):
            if any(not (r.get(c) or "").strip() for c in self.COLUMNS):
                raise ValueError(f"{csv_path}, line {line}: needs a path, a gender and an activity")
            p = Path(r["path"])
            p = (p if p.is_absolute() else csv_path.parent / p).resolve()
            if not p.is_file():
                raise FileNotFoundError(f"{csv_path} lists {r['path']}, which does not exist")
            if p in first_line:  # a repeated image could land in training and in the test gallery at once
                raise ValueError(f"{csv_path}, line {line}: {r['path']} is listed already (line {first_line[p]})")
            first_line[p] = line
            same = seen.setdefault(image_identity(p), (line, r["path"]))
            if same[0] != line:  # the same pixels under another name: one person twice
                raise ValueError(
                    f"{csv_path}, line {line}: {r['path']} is the same image as {same[1]} (line {same[0]}): "
                    "list each image once"
                )
            self.samples.append((p, r["gender"].strip(), r["activity"].strip()))
        self.genders = sorted({s[1] for s in self.samples})
        self.activities = sorted({s[2] for s in self.samples})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        p, g, a = self.samples[i]
        return _open_image(p), g, a
