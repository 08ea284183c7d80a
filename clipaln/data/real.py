"""Real datasets: one registry of class names and templates, torchvision backends, image folders,
and loaders for real typographic photo sets.

Downloads are always the user's choice (`download=True`); nothing here downloads by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from . import imagenet

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one dataset's zero-shot classifier: its template, its torchvision class, the
    keyword arguments of its test and train splits, and the class names CLIP's zero-shot evaluation
    uses where they differ from the dataset's own."""

    name: str
    template: str  # "{}" stands for the class name
    torchvision: str | None  # class name in torchvision.datasets, None for folder-only sets
    split_kw: dict  # torchvision keyword arguments selecting the test split
    train_kw: dict | None = None  # ... and the train split, where the dataset has one
    names: dict | None = None  # the dataset's class name -> the name in prompts

    def prompt(self, class_name: str) -> str:
        return self.template.format(class_name)


#: EuroSAT's folders, as CLIP's zero-shot evaluation names them.
EUROSAT_NAMES = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}
#: Caltech101's categories that CLIP's zero-shot evaluation renames.
CALTECH101_NAMES = {
    "Faces": "off-center face",
    "Faces_easy": "centered face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
    "airplanes": "airplane",
}

#: The paper's nine evaluation sets plus Food101 (docs/method.md section 4), with their templates.
DATASETS = {
    "imagenet100": DatasetSpec("imagenet100", "a photo of a {}.", None, {}),
    "caltech101": DatasetSpec("caltech101", "a photo of a {}.", "Caltech101", {}, names=CALTECH101_NAMES),
    "oxford_pets": DatasetSpec(
        "oxford_pets", "a photo of a {}, a type of pet.", "OxfordIIITPet", {"split": "test"}, {"split": "trainval"}
    ),
    "stanford_cars": DatasetSpec(
        "stanford_cars", "a photo of a {}.", "StanfordCars", {"split": "test"}, {"split": "train"}
    ),
    "flowers102": DatasetSpec(
        "flowers102", "a photo of a {}, a type of flower.", "Flowers102", {"split": "test"}, {"split": "train"}
    ),
    "fgvc_aircraft": DatasetSpec(
        "fgvc_aircraft",
        "a photo of a {}, a type of aircraft.",
        "FGVCAircraft",
        {"split": "test"},
        {"split": "trainval"},
    ),
    "dtd": DatasetSpec("dtd", "{} texture.", "DTD", {"split": "test"}, {"split": "train"}),
    "sun397": DatasetSpec("sun397", "a photo of a {}.", "SUN397", {}),
    "eurosat": DatasetSpec("eurosat", "a centered satellite photo of {}.", "EuroSAT", {}, names=EUROSAT_NAMES),
    "food101": DatasetSpec(
        "food101", "a photo of a {}, a type of food.", "Food101", {"split": "test"}, {"split": "train"}
    ),
}
#: Optional packages some torchvision datasets need, and the extra that installs them.
EXTRA_HINT = "pip install 'clipaln[datasets]'"


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _clean_name(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().lower()


def torchvision_dataset(
    name: str, root: str | Path, download: bool = False, split_kw: dict | None = None, split: str = "test"
) -> tuple[Any, list[str]]:
    """The torchvision dataset behind `name` (its test split, or with split="train" its train split)
    and the class names its prompts use (no download unless asked)."""
    import torchvision.datasets as tvd

    s = spec(name)
    if s.torchvision is None:
        raise ValueError(f"{name} is read from a folder: use ImageFolderDataset(root)")
    root = Path(root)
    if not download and not root.exists():
        raise FileNotFoundError(
            f"dataset folder does not exist: {root} (to fetch {name}: --download, or download=True from Python)"
        )
    kw = split_kw if split_kw is not None else (s.train_kw if split == "train" else s.split_kw)
    try:
        ds = getattr(tvd, s.torchvision)(str(root), download=download, **(kw or {}))
    except ModuleNotFoundError as e:
        raise RuntimeError(f"{name} needs the package {e.name!r}: {EXTRA_HINT}") from None
    except RuntimeError as e:
        if "not found" not in str(e).lower():
            raise
        raise FileNotFoundError(  # torchvision's own words name neither the dataset nor where it looked
            f"{name} is not under {root} in torchvision's layout (to fetch it: --download, or download=True "
            "from Python)"
        ) from None
    classes = getattr(ds, "classes", None) or getattr(ds, "categories", None)
    if classes is None:
        raise ValueError(f"{name}: torchvision dataset has no class list")
    names = s.names or {}
    return ds, [names.get(c) or _clean_name(c) for c in classes]


def _open_image(path: Path) -> Image.Image:
    """An image file as 8-bit RGB, whatever mode PIL opens it in: 16- and 32-bit integer images are
    scaled from their range (PIL's convert would clip them to white), float images in [0, 1] or
    [0, 255] are scaled to 8 bits (others refused), and transparency is laid on white, as a page shows it."""
    try:
        with Image.open(path) as im:
            return _to_rgb(im, path)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def _to_rgb(im: Image.Image, path) -> Image.Image:
    import numpy as np

    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if a.size == 0 or not np.isfinite(a).all():
            raise ValueError(f"cannot read image {path}: empty or not finite ({im.mode})")
        if im.mode == "F":
            top = 1.0 if a.min() >= 0 and a.max() <= 1 else 255.0 if a.min() >= 0 and a.max() <= 255 else None
            if top is None:
                raise ValueError(
                    f"cannot read image {path}: float values in [{a.min():g}, {a.max():g}], neither [0, 1] nor "
                    "[0, 255]; save it as an 8-bit image"
                )
        else:  # 16-bit files (I;16) and 32-bit integers: the range their values use
            top = 255.0 if a.max() <= 255 else 65535.0 if a.max() <= 65535 else float(a.max())
        return Image.fromarray(np.round(np.clip(a / top, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _is_class_folder(p: Path) -> bool:
    """Folders that hold a class: not hidden (.ipynb_checkpoints) and not archive debris (__MACOSX)."""
    return p.is_dir() and not p.name.startswith((".", "__"))


def class_folders(root: Path) -> list[str]:
    """The class folders of root/{class}/*.jpg, sorted; refuses two folders with one readable name."""
    folders = sorted(p.name for p in root.iterdir() if _is_class_folder(p))
    seen: dict[str, str] = {}
    for f in folders:
        name = _clean_name(f)
        if name in seen:
            raise ValueError(
                f"class folders {seen[name]!r} and {f!r} in {root} both read as the class {name!r}: merge or rename one"
            )
        seen[name] = f
    return folders


def _images_in(folder: Path) -> list[Path]:
    """The images of a folder; hidden files, macOS's AppleDouble `._x.png` among them, are not images."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


class ImageFolderDataset:
    """root/{class}/*.jpg -> (PIL image, label); class names from the folder names, sorted.

    An unreadable or truncated image raises ValueError naming the file, unless skip_bad=True,
    in which case such files are dropped at construction (and listed in .skipped).
    """

    def __init__(self, root: str | Path, skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder does not exist: {root}")
        classes = class_folders(root)
        self.samples: list[tuple[Path, int]] = []
        for i, c in enumerate(classes):
            self.samples += [(p, i) for p in _images_in(root / c)]
        if not self.samples:
            raise ValueError(f"no images found in {root} (expected {root}/<class>/<image>.jpg)")
        # ImageNet layouts name folders by WordNet id (n01440764): prompts need the readable names
        self.classes = imagenet.readable(classes) or [_clean_name(c) for c in classes]
        self.skipped: list[Path] = []
        if skip_bad:
            good = []
            for p, y in self.samples:
                try:
                    _open_image(p)
                    good.append((p, y))
                except ValueError:
                    self.skipped.append(p)
            self.samples = good

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return _open_image(path), label


_LABEL_TEXT = re.compile(r"^label=(?P<label>.+?)_text=(?P<text>.+)$")
_COPY_SUFFIX = re.compile(r"\s*\(\d+\)$")


class TypographicPhotoFolder:
    """Real typographic photos named `label=X_text=Y.ext` (the PAINT / RTA-100 convention).

    Items are (PIL image, true label index, written label index or -1 when the written text is
    not a class name). Classes are the sorted union of the labels and the written words, unless given.
    """

    def __init__(self, root: str | Path, classes: Sequence[str] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder does not exist: {root}")
        self.root = root
        entries = []
        for p in _images_in(root):
            m = _LABEL_TEXT.match(p.stem)
            if m:  # "cat (2)": a second photo of the same pair, as file managers name copies
                text = _clean_name(_COPY_SUFFIX.sub("", m["text"]))
                if not text:
                    raise ValueError(f"{p}: the written word is empty (label=X_text=Y needs a Y)")
                entries.append((p, _clean_name(_COPY_SUFFIX.sub("", m["label"])), text))
        if not entries:
            raise ValueError(f"no images named label=X_text=Y.ext found in {root}")
        self.classes = list(classes) if classes else sorted({e[1] for e in entries} | {e[2] for e in entries})
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({e[1] for e in entries} - set(index))
        if unknown:
            raise ValueError(f"labels not in the class list: {', '.join(unknown)}")
        self.samples = [(p, index[label], index.get(text, -1), text) for p, label, text in entries]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label, written, _ = self.samples[i]
        return _open_image(path), label, written


class MaterzynskaDataset:
    """Materzynska et al. (2022) real typographic photos: a folder of images and annotation.json (their
    release), or annotations.json with classes.json and images/ (Defense-Prefix's packaging).

    The annotations map image file names to {"true object": ..., "typographic attack label": ...}.
    Items are (PIL image, true label index, written label index or -1). Classes: `classes`, else
    classes.json's, else every true object and attack word.
    """

    TRUE, ATTACK = "true object", "typographic attack label"
    ANNOTATIONS = ("annotation.json", "annotations.json")

    def __init__(self, root: str | Path, classes: Sequence[str] | None = None):
        root = Path(root)
        self.root = root
        ann = next((root / n for n in self.ANNOTATIONS if (root / n).is_file()), root / self.ANNOTATIONS[0])
        if not ann.is_file():
            raise FileNotFoundError(f"annotation file not found: {ann}")
        if not classes and (root / "classes.json").is_file():
            try:
                listed = json.loads((root / "classes.json").read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{root / 'classes.json'} is not valid JSON: {e}") from None
            classes = [_clean_name(str(c)) for c in listed]  # a list, or a dict keyed by class name
        try:
            data = json.loads(ann.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{ann} is not valid JSON: {e}") from None
        rows = []
        for fname, a in sorted(data.items()):
            if not isinstance(a, dict) or self.TRUE not in a or self.ATTACK not in a:
                raise ValueError(f"{ann}: entry {fname!r} needs '{self.TRUE}' and '{self.ATTACK}'")
            path = next((root / d / fname for d in ("", "IMG", "images") if (root / d / fname).is_file()), None)
            if path is None:
                raise FileNotFoundError(f"{ann} lists {fname}, which is not in {root}")
            rows.append((path, _clean_name(a[self.TRUE]), _clean_name(a[self.ATTACK])))
            if not rows[-1][1] or not rows[-1][2]:
                raise ValueError(f"{ann}: entry {fname!r} has an empty '{self.TRUE}' or '{self.ATTACK}'")
        if not rows:
            raise ValueError(f"{ann} lists no images")
        self.classes = list(classes) if classes else sorted({r[1] for r in rows} | {r[2] for r in rows})
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(p, index[t], index.get(w, -1)) for p, t, w in rows if t in index]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label, written = self.samples[i]
        return _open_image(path), label, written


#: Where each released photo set keeps its images under the folder it unpacks to: Defense-Prefix's
#: packaging of Materzynska et al. (also the paper's evaluation code), RTA-100 and PAINT.
PHOTO_SET_FOLDERS = ("typographic_attack_dataset", "ours/data", "typographic_real_data_from_PAINT/typographic_attacks")


def photo_set(root: str | Path, classes: Sequence[str] | None = None) -> MaterzynskaDataset | TypographicPhotoFolder:
    """A real typographic photo set by its layout: a folder with annotation.json (Materzynska et al.'s
    release) or annotations.json (+ classes.json, images/: Defense-Prefix's packaging of it), or images
    named label=X_text=Y.ext (PAINT, RTA-100); `root` may also be the folder a release unpacks to
    (PHOTO_SET_FOLDERS). Without `classes`, the class list is every true label and every written word,
    as the evaluation code behind the paper's RTA-100 and PAINT numbers builds it."""
    root = Path(root).expanduser()
    for sub in PHOTO_SET_FOLDERS:
        if (root / sub).is_dir():
            root = root / sub
            break
    if any((root / name).is_file() for name in MaterzynskaDataset.ANNOTATIONS):
        return MaterzynskaDataset(root, classes)
    return TypographicPhotoFolder(root, classes)


class Subset:
    """The first n items of a dataset (or given indices), for quick runs."""

    def __init__(self, base, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


def check_template(template: str) -> str:
    """A prompt template: exactly one "{}" for the class name (and optionally "{a}" for its article)."""
    if not isinstance(template, str) or template.replace("{a}", "").count("{}") != 1:
        raise ValueError(f"a template needs exactly one '{{}}' where the class name goes, got {template!r}")
    rest = template.replace("{a}", "").replace("{}", "")
    if "{" in rest or "}" in rest:
        raise ValueError(
            f"a template may hold only '{{}}' (the class name) and '{{a}}' (its article), got {template!r}"
        )
    return template


def class_prompts(names: Sequence[str], template: str | Callable[[str], str] = "a photo of a {}.") -> list[str]:
    if not names:
        raise ValueError("the class list is empty")
    if callable(template):
        return [template(n) for n in names]
    return [check_template(template).format(n) for n in names]
