"""Typographic attacks: write a word on any image (docs/method.md section 4), and a dataset wrapper.

The protocol of the Defense-Prefix line of work: a random class name other than the true one;
one of three fonts; size 20-40 px on a 224 px image (here a fraction of the image side, so it
scales to any size), shrunk until it fits; a random position; fill and stroke from eight colours,
fill != stroke, stroke width 1; names of two or more words split over two lines.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw

from .fonts import TRAIN_FONTS, load_font

#: The eight colours of the protocol.
COLORS = {
    "white": (255, 255, 255),
    "blue": (20, 40, 230),
    "green": (20, 170, 40),
    "red": (220, 20, 20),
    "magenta": (220, 20, 220),
    "cyan": (20, 210, 220),
    "yellow": (250, 230, 20),
    "black": (0, 0, 0),
}
#: 20-40 px on a 224 px image, as a fraction of the image side.
PROTOCOL_SIZE = (20 / 224, 40 / 224)


@dataclass(frozen=True)
class AttackStyle:
    """Where attack() draws its random choices from."""

    fonts: tuple[str, ...] = TRAIN_FONTS
    colors: tuple[str, ...] = tuple(COLORS)
    size_range: tuple[float, float] = PROTOCOL_SIZE  # fraction of the image side
    rotation: float = 0.0  # maximum absolute rotation in degrees

    def kwargs(self) -> dict:
        return {
            "fonts": self.fonts,
            "colors": self.colors,
            "size_range": self.size_range,
            "max_rotation": self.rotation,
        }


#: Unseen styles for evaluation: other fonts, other (non-protocol) colours, rotation.
UNSEEN_COLORS = ("orange", "purple", "gray", "brown", "pink", "navy")
_EXTRA = {
    "orange": (250, 140, 0),
    "purple": (110, 30, 160),
    "gray": (120, 120, 120),
    "brown": (110, 60, 20),
    "pink": (250, 150, 200),
    "navy": (10, 20, 90),
}


def _rgb(c):
    if isinstance(c, str):
        if c in COLORS:
            return COLORS[c]
        if c in _EXTRA:
            return _EXTRA[c]
        raise ValueError(f"unknown colour {c!r}")
    return tuple(c)


def make_rng(rng: int | random.Random | None) -> random.Random:
    """A random.Random from None (fresh), a seed, or a random.Random (returned as is)."""
    if rng is None:
        return random.Random()
    return rng if isinstance(rng, random.Random) else random.Random(int(rng))


def attack(
    image: Image.Image,
    text: str,
    rng: int | random.Random | None = None,
    *,
    font: str | None = None,
    size: int | None = None,
    fill: str | tuple[int, int, int] | None = None,
    stroke: str | tuple[int, int, int] | None = None,
    position: tuple[float, float] | None = None,
    stroke_width: int = 1,
    rotation: float | None = None,
    fonts: Sequence[str] = TRAIN_FONTS,
    colors: Sequence[str] = tuple(COLORS),
    size_range: tuple[float, float] = PROTOCOL_SIZE,
    max_rotation: float = 0.0,
) -> Image.Image:
    """Return a copy of `image` with `text` written on it (any PIL image, any size).

    Every choice not given explicitly (font, size in px, fill, stroke, position, rotation) is
    drawn from `rng` (a seed or random.Random) within fonts / colors / size_range / max_rotation.
    """
    if not text or not text.strip():
        raise ValueError("attack text must be a non-empty string")
    rng = make_rng(rng)
    img = image.convert("RGB").copy()
    side = min(img.size)
    font = font or rng.choice(list(fonts))
    size = int(size or side * rng.uniform(*size_range))
    fill = fill or rng.choice(list(colors))
    stroke = stroke or rng.choice([c for c in colors if c != fill])
    if fill == stroke:
        raise ValueError("fill and stroke colours must differ")
    words = text.split()
    text = (
        " ".join(words)
        if len(words) < 2
        else " ".join(words[: len(words) // 2]) + "\n" + " ".join(words[len(words) // 2 :])
    )
    d = ImageDraw.Draw(img)
    while True:  # shrink until it fits
        f = load_font(font, size)
        x0, y0, x1, y1 = d.multiline_textbbox((0, 0), text, font=f, stroke_width=stroke_width, spacing=0)
        if (x1 - x0 <= img.width * 0.98 and y1 - y0 <= img.height * 0.98) or size <= 6:
            break
        size -= 1
    if position is None:
        px = rng.uniform(0, max(0, img.width - (x1 - x0))) - x0
        py = rng.uniform(0, max(0, img.height - (y1 - y0))) - y0
    else:
        px, py = position[0] - x0, position[1] - y0
    angle = rotation if rotation is not None else (rng.uniform(-max_rotation, max_rotation) if max_rotation else 0.0)
    style = dict(
        font=f, fill=_rgb(fill), stroke_width=stroke_width, stroke_fill=_rgb(stroke), spacing=0, align="center"
    )
    if not angle:
        d.multiline_text((px, py), text, **style)
        return img
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).multiline_text((px, py), text, **style)
    cx, cy = px + x0 + (x1 - x0) / 2, py + y0 + (y1 - y0) / 2
    layer = layer.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    img.paste(layer, (0, 0), layer)
    return img


def wrong_label(true_label: int, num_classes: int, rng: random.Random, allowed: Sequence[int] | None = None) -> int:
    """A class index other than the true one, uniformly from `allowed` (default: all classes)."""
    pool = [c for c in (range(num_classes) if allowed is None else allowed) if c != true_label]
    if not pool:
        raise ValueError("need at least two classes to write a wrong class name")
    return rng.choice(pool)


@dataclass
class TypographicDataset:
    """Turn any (image, label) dataset into (clean, attacked, true label, written label) items.

    The written label and every style choice are drawn from a generator seeded by (seed, index,
    copy), so item i is the same on every run and every machine. `copies` attacked versions are
    made of each image; `written_classes` restricts which class names may be written.
    """

    base: Sequence  # anything with __len__ and __getitem__ -> (PIL image, int label)
    class_names: Sequence[str]
    seed: int = 0
    copies: int = 1
    style: AttackStyle = field(default_factory=AttackStyle)
    written_classes: Sequence[int] | None = None
    text_for: callable = None  # class index -> text to write (default: the class name)

    def __post_init__(self):
        if len(self.class_names) < 2:
            raise ValueError("a typographic dataset needs at least two class names")
        if self.copies < 1:
            raise ValueError("copies must be >= 1")

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        image, label = self.base[i // self.copies]
        rng = random.Random(f"typographic-{self.seed}-{i // self.copies}-{i % self.copies}")
        written = wrong_label(int(label), len(self.class_names), rng, self.written_classes)
        text = self.text_for(written) if self.text_for else self.class_names[written]
        return image, attack(image, text, rng, **self.style.kwargs()), int(label), written


def reading_images(
    class_names: Sequence[str], n: int, size: int, style: AttackStyle, seed: int = 0
) -> tuple[list[Image.Image], torch.Tensor]:
    """n images carrying only a class name, on plain light canvases, classes in turn; and the labels."""
    images, labels = [], []
    for i in range(n):
        rng = random.Random(f"reading-{seed}-{i}")
        shade = tuple(rng.randint(170, 250) for _ in range(3))
        y = i % len(class_names)
        images.append(attack(Image.new("RGB", (size, size), shade), class_names[y], rng, **style.kwargs()))
        labels.append(y)
    return images, torch.tensor(labels)
