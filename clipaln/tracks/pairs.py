"""Your own preference task: (image, chosen caption, rejected caption) rows, as in the preference
datasets TRL users know, trained with the same W, losses and loop as the paper's two experiments.

A pairs file is a CSV (columns image, chosen, rejected) or JSON Lines (one {"image", "chosen",
"rejected"} object per line); image paths are relative to the file. The rows are split at random
(seeded) into pairs to train on and held-out pairs to report on; D_reg is the training images
(or --reg-images, a folder of images whose predictions W should leave alone).

The same API as the other tracks: Spec, real_spec, build_features, DEFAULTS, train_config,
train(feats, cfg), evaluate(feats, projection).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import losses
from ..data.files import group_by_content, image_identity, read_csv_rows
from ..data.fingerprint import paths_fingerprint
from ..data.real import IMAGE_EXTENSIONS, _open_image
from ..features import FeatureCache, encode_dataset, encode_texts, model_fingerprint, resolve_precision
from ..io import read_text
from ..manifest import data_record, digest
from ..models import ClipBundle
from ..policy import PreferenceData, logprobs, read_alike, refuse_unknown_words
from ..projection import SharedProjection
from ..train import TrainConfig, fit_projection, preference_accuracy
from . import typographic
from .protocol import DataFlags

#: W's settings for a task of your own: the typographic track's (tuned on its validation split), the
#: only tuned ones; tune on your own held-out pairs before you report.
DEFAULTS = {
    m: v for m, v in typographic.DEFAULTS.items() if m not in ("ce", "mdpo")
}  # mdpo would reject every other caption
FIELDS = ("image", "chosen", "rejected")


def methods() -> list[str]:
    """What a pairs task trains with: DEFAULTS' methods and every registered loss for "pairs"."""
    return list(DEFAULTS) + losses.registered_for("pairs")


def make_spec(
    data: DataFlags,
    reg_images: str | None = None,
    val_share: float | None = None,
    whole: bool = False,
) -> Spec:
    """The track's data from the command line's flags (the Track protocol): the pairs file at `root`
    (--pairs), split by image; reg_images, val_share and whole as real_spec takes them. Its split is
    the file's own: n_train, n_test and dataset are refused (clipaln.conflicts)."""
    if data.root is None:
        raise ValueError("the pairs task needs --pairs FILE (.csv or .jsonl with image, chosen, rejected)")
    path = str(Path(data.root).expanduser().resolve())
    return real_spec(path, seed=data.seed, reg_images=reg_images, val_share=val_share or 0.0, whole=whole)


def train_config(method: str, **overrides) -> TrainConfig:
    if method not in methods():
        raise ValueError(f"a pairs task trains with {', '.join(methods())}, not {method!r}")
    return TrainConfig.for_method(method, DEFAULTS, **overrides)


def read_pairs(path: str | Path) -> list[tuple[Path, str, str]]:
    """The rows of a pairs file: a .csv with columns image, chosen, rejected, or .jsonl (or a .json
    array) of such rows, checked: a missing image, an empty or equal caption, or opposite preferences
    for one image (by its pixels) is one line naming the row.

    Args:
        path: the pairs file; image paths in it are relative to its folder.

    Returns:
        list[tuple[Path, str, str]]: (image path, chosen caption, rejected caption) per row.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    text = read_text(path)  # UTF-8 or one line naming the file; a spreadsheet's BOM is not part of a column
    if path.suffix.lower() == ".csv":
        rows = read_csv_rows(path, text, FIELDS)
    elif path.suffix.lower() == ".json" and text.lstrip().startswith("["):  # one JSON array of rows
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {i}: not JSON ({e.msg})") from None
    else:
        raise ValueError(f"{path}: a pairs file is .csv or .jsonl")
    out = []
    for i, r in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        if isinstance(r, dict) and "image" not in r and isinstance(r.get("images"), list):  # TRL's vision rows
            if len(r["images"]) != 1:
                raise ValueError(f"{path}, row {i}: images holds {len(r['images'])} images; a pair has one")
            r = {**r, "image": r["images"][0]}
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) or not r[k].strip() for k in FIELDS):
            raise ValueError(
                f"{path}, row {i}: needs {', '.join(FIELDS)} (non-empty strings; TRL's images, a list of one, "
                "reads as image)"
            )
        image = Path(r["image"]).expanduser()
        image = (image if image.is_absolute() else path.parent / image).resolve()  # one image, one name
        if not image.is_file():
            raise FileNotFoundError(f"{path}, row {i}: image {r['image']} does not exist")
        if r["chosen"].strip() == r["rejected"].strip():
            raise ValueError(f"{path}, row {i}: chosen and rejected are the same caption")
        out.append((image, r["chosen"].strip(), r["rejected"].strip()))
    if len(out) < 2:
        raise ValueError(f"{path} holds {len(out)} pairs: need at least 2 (some to train on, some to test)")
    first = {}
    for i, (image, chosen, rejected) in enumerate(out, start=2 if path.suffix.lower() == ".csv" else 1):
        same = image_identity(image)  # its pixels: a copy under another name is the same image
        other = first.get((same, rejected, chosen))
        if other is not None:  # A over B and B over A for one image: the preference cancels
            raise ValueError(
                f"{path}: rows {other} and {i} prefer opposite captions for {image.name} "
                f"({chosen!r} / {rejected!r}): keep one"
            )
        first.setdefault((same, chosen, rejected), i)
    return out


class _Images:
    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return (_open_image(self.paths[i]),)


@dataclass
class Spec:
    rows: list  # (image path, chosen, rejected)
    train_idx: list[int]
    test_idx: list[int]
    reg_paths: list[Path] | None = None  # D_reg: other images (default: the training images)
    key: dict = field(default_factory=dict)
    val_idx: list[int] = field(default_factory=list)  # held out to choose settings on (--val-share)
    #: images listed under more than one name (the same pixels): {first path: [the others]}, kept together
    duplicates: dict[str, list[str]] = field(default_factory=dict)


def real_spec(
    path: str,
    seed: int = 0,
    test_share: float = 0.2,
    reg_images: str | None = None,
    val_share: float = 0.0,
    whole: bool = False,
) -> Spec:
    """A pairs file split at random (seeded) by image into training and held-out pairs (a fifth of the
    images, with all their pairs, are held out), and with val_share a validation share of the images
    apart from both. whole=True: every row is held out (a separate file scored whole, none trained on)."""
    if not 0 <= val_share < 1 or test_share + val_share >= 1:
        raise ValueError(f"--val-share is a share of the images in [0, {1 - test_share:g}), got {val_share}")
    rows = read_pairs(path)
    # split by image, an image being its pixels: every pair of a held-out image is held out, under any name
    groups = group_by_content([r[0] for r in rows])
    duplicates = {str(g[0]): [str(p) for p in g[1:]] for g in groups.values() if len(g) > 1}
    same = {p: g[0] for g in groups.values() for p in g}  # every path -> its group's first path
    images = sorted(g[0] for g in groups.values())
    if len(images) < 2 and not whole:
        raise ValueError(f"{path} shows {len(images)} image: need at least 2 (some to train on, some to test)")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = len(images) if whole else max(1, round(test_share * len(images)))
    n_val = max(1, round(val_share * len(images))) if val_share else 0
    if not whole and n_test + n_val >= len(images):
        raise ValueError(f"{path} shows {len(images)} images: too few for a test share and --val-share {val_share}")
    held = {images[i] for i in order[:n_test]}
    checking = {images[i] for i in order[n_test : n_test + n_val]}
    perm = [i for i, r in enumerate(rows) if same[r[0]] in held] + [
        i for i, r in enumerate(rows) if same[r[0]] not in held
    ]
    n_test = sum(same[r[0]] in held for r in rows)
    val_idx = [i for i, r in enumerate(rows) if same[r[0]] in checking]
    reg = None
    if reg_images is not None:
        folder = Path(reg_images).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--reg-images folder not found: {folder}")
        reg = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not reg:
            raise ValueError(f"no images in {folder}")
    root = Path(path).expanduser().resolve()
    key = {
        "world": "pairs",
        "files": paths_fingerprint([root, *sorted({r[0] for r in rows})]),  # relative to the file: not where it lies
        "split": digest(perm),
        "n_test": n_test,
        "seed": seed,
        "reg": paths_fingerprint(reg) if reg else None,
        **({"val": digest(val_idx), "val_share": val_share} if val_share else {}),
        **({"whole": True} if whole else {}),
    }
    train_idx = sorted(set(perm[n_test:]) - set(val_idx))
    return Spec(rows, train_idx, sorted(perm[:n_test]), reg, key, val_idx, duplicates)


@dataclass
class Features:
    captions: list[str]
    train: PreferenceData | None  # None: a file scored whole, none of it trained on
    test: PreferenceData
    val: PreferenceData | None = None

    def on_val(self) -> Features:
        """The same features with the validation pairs in the test's place (to score or choose on)."""
        if self.val is None:
            raise ValueError("this pairs run has no validation pairs: train it with --val-share")
        return dataclasses.replace(self, test=self.val)


def build_features(
    bundle: ClipBundle, spec: Spec, cache: FeatureCache | None = None, with_train: bool = True, **encoding
) -> Features:
    """Encode every image once (streamed, cached by model + data) and every distinct caption;
    with_train: every split is encoded either way (one cache entry), as the Track protocol allows."""
    paths = [r[0] for r in spec.rows]
    refuse_unknown_words(bundle, [c for r in spec.rows for c in r[1:3]], "captions")
    alike = read_alike(bundle, [r[1] for r in spec.rows], [r[2] for r in spec.rows])
    if alike:  # row numbers as in the file: the CSV's header is line 1
        rows = ", ".join(str(i + 1) for i in alike[:5])
        raise ValueError(
            f"pairs {rows}{' ...' if len(alike) > 5 else ''}: chosen and rejected read the same to the model's "
            f"tokenizer ({spec.rows[alike[0]][1]!r} / {spec.rows[alike[0]][2]!r}): case, punctuation or words "
            "past its context length"
        )

    def compute():
        out = {"images": encode_dataset(bundle, _Images(paths), desc="encode pair images", **encoding)[0]}
        if spec.reg_paths:
            out["reg"] = encode_dataset(bundle, _Images(spec.reg_paths), desc="encode reg images", **encoding)[0]
        return out

    resolved = resolve_precision(encoding.get("precision", "auto"), bundle.device)
    key = {**spec.key, "track": "pairs", **({} if resolved == "fp32" else {"precision": resolved})}
    t = (cache or FeatureCache(enabled=False)).get(bundle, key, compute)
    captions = sorted({c for r in spec.rows for c in r[1:]})
    index = {c: i for i, c in enumerate(captions)}
    texts = encode_texts(bundle, captions)

    def data(idx, reg):
        emb = t["images"][idx]
        y_w = [index[spec.rows[i][1]] for i in idx]
        y_l = [index[spec.rows[i][2]] for i in idx]
        return PreferenceData(emb, y_w, y_l, texts, emb if reg is None else reg, bundle.logit_scale, record=record)

    record = data_record(bundle.name, model_fingerprint(bundle), "pairs", spec.key, bundle.pretrained)

    train = data(spec.train_idx, t.get("reg")) if spec.train_idx else None
    val = data(spec.val_idx, t.get("reg")) if spec.val_idx else None
    return Features(captions, train, data(spec.test_idx, t.get("reg")), val)


def train(
    feats: Features, cfg: TrainConfig, progress: bool = True, **checkpointing: Any
) -> tuple[SharedProjection, dict]:
    if feats.train is None:
        raise ValueError("these pairs are all held out (a file scored whole): nothing to train on")
    return fit_projection(feats.train, cfg, progress=progress, **checkpointing)


@torch.no_grad()
def prefers(d: PreferenceData, projection: SharedProjection | None = None) -> float:
    """The share of d's pairs whose chosen caption the model scores above the rejected one."""
    return preference_accuracy(d.pref_images, d.texts, d.y_w, d.y_l, projection)


def validator(feats: Features) -> Callable[[SharedProjection | None], dict[str, float]] | None:
    """W -> preference/accuracy on the validation pairs (what `--eval-every` logs during training),
    or None without them (train with --val-share)."""
    if feats.val is None:
        return None
    return lambda projection: {"preference/accuracy": prefers(feats.val, projection)}


@torch.no_grad()
def evaluate(feats: Features, projection: SharedProjection | None = None) -> dict:
    """preference/accuracy (held-out pairs whose chosen caption the model scores above the rejected
    one), preference/accuracy_train (None for a file scored whole), preference/accuracy_val (with
    validation pairs), and kl/reg = KL(pi_ref || pi) on the D_reg images."""
    d = feats.test
    kl = losses.kl_regularizer(
        logprobs(d.reg_images, d.texts, d.logit_scale, projection), logprobs(d.reg_images, d.texts, d.logit_scale)
    )
    out = {"preference/accuracy": prefers(d, projection), "preference/accuracy_train": None, "kl/reg": kl.item()}
    if feats.train is not None:
        out["preference/accuracy_train"] = prefers(feats.train, projection)
    if feats.val is not None:
        out["preference/accuracy_val"] = prefers(feats.val, projection)
    return out


def format_metrics(m: dict) -> str:
    pct = lambda k: "n/a" if m.get(k) is None else f"{100 * m[k]:.1f}%"
    val = f", validation {pct('preference/accuracy_val')}" if "preference/accuracy_val" in m else ""
    train = f"train {pct('preference/accuracy_train')}{val}"
    return f"held-out pairs preferred {pct('preference/accuracy')}  ({train})  KL {m['kl/reg']:.4f}"


def evaluator(feats: Features, projection: SharedProjection | None, split: str = "test") -> Callable[[float], dict]:
    """t -> the track's metrics of W_t on the held-out pairs or the validation pairs (the Track protocol)."""
    if split == "val":
        feats = feats.on_val()
    return lambda t: evaluate(feats, None if projection is None else projection.scaled(t))
