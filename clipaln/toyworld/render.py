"""The toy world: procedurally drawn objects, written words and pictogram people doing activities.

Everything is drawn with PIL from a seeded random generator, so every image is reproducible.
Scenes are drawn at twice the output size and downsampled, which keeps thin lines and letters
legible at the small resolution the toy CLIP sees.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

from ..data.typographic import attack, make_rng

SIZE = 64  #: default output side in pixels (the toy CLIP's input size)

OBJECTS = (
    "apple",
    "bird",
    "boat",
    "car",
    "clock",
    "cup",
    "fish",
    "house",
    "key",
    "star",
    "tree",
    "umbrella",
)
ACTIVITIES = (
    "cooking",
    "cleaning",
    "working as a nurse",
    "repairing a car",
    "playing football",
    "working as a police officer",
    "reading a book",
    "painting",
)
GENDERS = ("man", "woman")

#: Written words take 20-30% of the image side: the toy CLIP sees 64 px images, where the
#: protocol's 20-40 px at 224 px (9-18%) would be only 6-11 px tall.
TEXT_SIZE = (0.2, 0.3)

_PALETTE = [
    (200, 30, 30),
    (30, 120, 200),
    (40, 160, 60),
    (230, 150, 20),
    (130, 60, 170),
    (90, 60, 30),
    (20, 20, 20),
    (200, 80, 150),
    (60, 170, 170),
    (150, 150, 20),
]


def _background(rng: random.Random) -> tuple[int, int, int]:
    base = rng.randint(175, 250)
    return tuple(max(0, min(255, base + rng.randint(-25, 25))) for _ in range(3))


def _clutter(d: ImageDraw.ImageDraw, side: int, bg, rng: random.Random, n: int) -> None:
    """Faint lines and blobs so that the model cannot rely on an empty background."""
    for _ in range(n):
        c = tuple(max(0, min(255, v + rng.randint(-45, 45))) for v in bg)
        x0, y0 = rng.uniform(0, side), rng.uniform(0, side)
        x1, y1 = x0 + rng.uniform(-side / 3, side / 3), y0 + rng.uniform(-side / 3, side / 3)
        if rng.random() < 0.5:
            d.line([x0, y0, x1, y1], fill=c, width=max(1, side // 64))
        else:
            r = rng.uniform(side / 40, side / 14)
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=c)


# --- objects: each draws into the square (x, y, s) with a main colour -------------------------


def _apple(d, x, y, s, c, rng):
    d.ellipse([x + 0.12 * s, y + 0.25 * s, x + 0.88 * s, y + 0.95 * s], fill=c)
    d.line([x + 0.5 * s, y + 0.28 * s, x + 0.55 * s, y + 0.08 * s], fill=(90, 50, 20), width=max(2, int(s * 0.06)))
    d.ellipse([x + 0.56 * s, y + 0.08 * s, x + 0.8 * s, y + 0.2 * s], fill=(40, 150, 40))


def _bird(d, x, y, s, c, rng):
    d.ellipse([x + 0.15 * s, y + 0.35 * s, x + 0.75 * s, y + 0.75 * s], fill=c)
    d.ellipse([x + 0.6 * s, y + 0.22 * s, x + 0.88 * s, y + 0.5 * s], fill=c)
    d.polygon([(x + 0.86 * s, y + 0.32 * s), (x + s, y + 0.38 * s), (x + 0.86 * s, y + 0.42 * s)], fill=(240, 170, 0))
    d.polygon([(x + 0.2 * s, y + 0.5 * s), (x, y + 0.35 * s), (x + 0.05 * s, y + 0.62 * s)], fill=c)
    d.polygon([(x + 0.35 * s, y + 0.5 * s), (x + 0.5 * s, y + 0.1 * s), (x + 0.6 * s, y + 0.5 * s)], fill=c)
    d.line([x + 0.4 * s, y + 0.75 * s, x + 0.4 * s, y + 0.92 * s], fill=(0, 0, 0), width=max(1, int(s * 0.03)))
    d.line([x + 0.55 * s, y + 0.75 * s, x + 0.55 * s, y + 0.92 * s], fill=(0, 0, 0), width=max(1, int(s * 0.03)))


def _boat(d, x, y, s, c, rng):
    d.polygon(
        [(x, y + 0.65 * s), (x + s, y + 0.65 * s), (x + 0.8 * s, y + 0.9 * s), (x + 0.2 * s, y + 0.9 * s)], fill=c
    )
    d.line([x + 0.5 * s, y + 0.65 * s, x + 0.5 * s, y + 0.05 * s], fill=(60, 40, 20), width=max(2, int(s * 0.04)))
    d.polygon(
        [(x + 0.52 * s, y + 0.08 * s), (x + 0.52 * s, y + 0.58 * s), (x + 0.9 * s, y + 0.58 * s)],
        fill=(250, 250, 250),
        outline=(0, 0, 0),
    )


def _car(d, x, y, s, c, rng):
    d.rectangle([x, y + 0.45 * s, x + s, y + 0.75 * s], fill=c)
    d.polygon(
        [
            (x + 0.2 * s, y + 0.45 * s),
            (x + 0.32 * s, y + 0.22 * s),
            (x + 0.7 * s, y + 0.22 * s),
            (x + 0.82 * s, y + 0.45 * s),
        ],
        fill=c,
    )
    d.rectangle([x + 0.36 * s, y + 0.27 * s, x + 0.66 * s, y + 0.43 * s], fill=(200, 230, 250))
    for cx in (0.22, 0.78):
        d.ellipse([x + (cx - 0.12) * s, y + 0.63 * s, x + (cx + 0.12) * s, y + 0.87 * s], fill=(20, 20, 20))


def _clock(d, x, y, s, c, rng):
    d.ellipse(
        [x + 0.05 * s, y + 0.05 * s, x + 0.95 * s, y + 0.95 * s],
        fill=(250, 250, 245),
        outline=c,
        width=max(2, int(s * 0.08)),
    )
    for k in range(12):
        a = k * math.pi / 6
        d.point((x + 0.5 * s + 0.36 * s * math.cos(a), y + 0.5 * s + 0.36 * s * math.sin(a)), fill=(0, 0, 0))
    w = max(2, int(s * 0.05))
    d.line([x + 0.5 * s, y + 0.5 * s, x + 0.5 * s, y + 0.2 * s], fill=(0, 0, 0), width=w)
    d.line([x + 0.5 * s, y + 0.5 * s, x + 0.72 * s, y + 0.58 * s], fill=(0, 0, 0), width=w)


def _cup(d, x, y, s, c, rng):
    d.polygon(
        [
            (x + 0.15 * s, y + 0.25 * s),
            (x + 0.7 * s, y + 0.25 * s),
            (x + 0.63 * s, y + 0.9 * s),
            (x + 0.22 * s, y + 0.9 * s),
        ],
        fill=c,
    )
    d.arc([x + 0.55 * s, y + 0.35 * s, x + 0.95 * s, y + 0.7 * s], -90, 90, fill=c, width=max(2, int(s * 0.08)))
    d.ellipse([x + 0.15 * s, y + 0.2 * s, x + 0.7 * s, y + 0.32 * s], fill=(90, 50, 20))


def _fish(d, x, y, s, c, rng):
    d.ellipse([x + 0.05 * s, y + 0.3 * s, x + 0.75 * s, y + 0.7 * s], fill=c)
    d.polygon([(x + 0.7 * s, y + 0.5 * s), (x + s, y + 0.25 * s), (x + s, y + 0.75 * s)], fill=c)
    d.ellipse([x + 0.17 * s, y + 0.42 * s, x + 0.25 * s, y + 0.5 * s], fill=(0, 0, 0))


def _house(d, x, y, s, c, rng):
    d.rectangle([x + 0.15 * s, y + 0.45 * s, x + 0.85 * s, y + 0.95 * s], fill=c)
    d.polygon(
        [(x + 0.05 * s, y + 0.47 * s), (x + 0.5 * s, y + 0.08 * s), (x + 0.95 * s, y + 0.47 * s)], fill=(150, 40, 30)
    )
    d.rectangle([x + 0.42 * s, y + 0.65 * s, x + 0.58 * s, y + 0.95 * s], fill=(80, 50, 20))
    d.rectangle([x + 0.22 * s, y + 0.55 * s, x + 0.36 * s, y + 0.68 * s], fill=(200, 230, 250))


def _key(d, x, y, s, c, rng):
    d.ellipse([x + 0.02 * s, y + 0.3 * s, x + 0.38 * s, y + 0.66 * s], outline=c, width=max(3, int(s * 0.1)))
    d.rectangle([x + 0.36 * s, y + 0.44 * s, x + 0.98 * s, y + 0.52 * s], fill=c)
    for tx in (0.72, 0.86):
        d.rectangle([x + tx * s, y + 0.52 * s, x + (tx + 0.07) * s, y + 0.68 * s], fill=c)


def _star(d, x, y, s, c, rng):
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        r = 0.48 * s if k % 2 == 0 else 0.2 * s
        pts.append((x + 0.5 * s + r * math.cos(a), y + 0.52 * s + r * math.sin(a)))
    d.polygon(pts, fill=c)


def _tree(d, x, y, s, c, rng):
    d.rectangle([x + 0.42 * s, y + 0.55 * s, x + 0.58 * s, y + 0.97 * s], fill=(100, 60, 25))
    d.ellipse([x + 0.1 * s, y + 0.03 * s, x + 0.9 * s, y + 0.68 * s], fill=(30, 140, 40) if rng.random() < 0.7 else c)


def _umbrella(d, x, y, s, c, rng):
    d.pieslice([x + 0.02 * s, y + 0.1 * s, x + 0.98 * s, y + 0.9 * s], 180, 360, fill=c)
    d.line([x + 0.5 * s, y + 0.5 * s, x + 0.5 * s, y + 0.9 * s], fill=(40, 40, 40), width=max(2, int(s * 0.05)))
    d.arc([x + 0.5 * s, y + 0.8 * s, x + 0.7 * s, y + 0.98 * s], 0, 180, fill=(40, 40, 40), width=max(2, int(s * 0.05)))


_OBJECT_DRAWERS: dict[str, Callable] = {
    "apple": _apple,
    "bird": _bird,
    "boat": _boat,
    "car": _car,
    "clock": _clock,
    "cup": _cup,
    "fish": _fish,
    "house": _house,
    "key": _key,
    "star": _star,
    "tree": _tree,
    "umbrella": _umbrella,
}


# --- people: the familiar pictogram figures, plus one prop per activity ---------------------


def _figure(d, x, y, h, gender, c):
    """A pictogram person of height h whose top-left corner is (x, y); returns the hand point."""
    w = 0.5 * h
    cx = x + w / 2
    hr = 0.11 * h
    d.ellipse([cx - hr, y, cx + hr, y + 2 * hr], fill=c)
    top = y + 2.4 * hr
    lw = max(2, int(h * 0.07))
    if gender == "man":
        d.rounded_rectangle([cx - 0.17 * h, top, cx + 0.17 * h, top + 0.38 * h], radius=max(1, int(h * 0.04)), fill=c)
        d.rectangle([cx - 0.15 * h, top + 0.36 * h, cx - 0.03 * h, y + h], fill=c)
        d.rectangle([cx + 0.03 * h, top + 0.36 * h, cx + 0.15 * h, y + h], fill=c)
    else:
        d.polygon([(cx, top), (cx - 0.27 * h, top + 0.5 * h), (cx + 0.27 * h, top + 0.5 * h)], fill=c)
        d.rectangle([cx - 0.12 * h, top, cx + 0.12 * h, top + 0.12 * h], fill=c)
        d.rectangle([cx - 0.12 * h, top + 0.48 * h, cx - 0.04 * h, y + h], fill=c)
        d.rectangle([cx + 0.04 * h, top + 0.48 * h, cx + 0.12 * h, y + h], fill=c)
    d.line([cx - 0.15 * h, top + 0.05 * h, cx - 0.3 * h, top + 0.35 * h], fill=c, width=lw)
    d.line([cx + 0.15 * h, top + 0.05 * h, cx + 0.32 * h, top + 0.3 * h], fill=c, width=lw)
    return cx + 0.32 * h, top + 0.3 * h, cx, y, hr


def _prop(d, activity, hx, hy, cx, top, hr, h, rng):
    """Draw the prop that shows the activity, held at the hand (hx, hy) or worn on the head."""
    s = 0.38 * h
    lw = max(2, int(h * 0.04))
    if activity == "cooking":  # a frying pan with a long handle
        d.line([hx, hy, hx + 0.4 * s, hy - 0.1 * s], fill=(40, 40, 40), width=lw)
        d.ellipse([hx + 0.35 * s, hy - 0.45 * s, hx + 1.15 * s, hy + 0.2 * s], fill=(60, 60, 60))
        d.ellipse([hx + 0.55 * s, hy - 0.25 * s, hx + 0.8 * s, hy], fill=(250, 220, 40))
    elif activity == "cleaning":  # a broom
        d.line([hx + 0.1 * s, hy - 0.9 * s, hx + 0.5 * s, hy + 0.9 * s], fill=(140, 90, 30), width=lw)
        d.polygon(
            [
                (hx + 0.3 * s, hy + 0.8 * s),
                (hx + 0.75 * s, hy + 0.8 * s),
                (hx + 0.9 * s, hy + 1.3 * s),
                (hx + 0.2 * s, hy + 1.3 * s),
            ],
            fill=(220, 190, 60),
        )
    elif activity == "working as a nurse":  # a red cross on a white cap and on a bag
        d.rectangle([cx - hr, top - 0.35 * hr, cx + hr, top + 0.45 * hr], fill=(255, 255, 255), outline=(200, 0, 0))
        d.rectangle([hx + 0.1 * s, hy - 0.1 * s, hx + 0.9 * s, hy + 0.6 * s], fill=(255, 255, 255), outline=(0, 0, 0))
        d.rectangle([hx + 0.42 * s, hy - 0.02 * s, hx + 0.58 * s, hy + 0.52 * s], fill=(220, 0, 0))
        d.rectangle([hx + 0.2 * s, hy + 0.17 * s, hx + 0.8 * s, hy + 0.33 * s], fill=(220, 0, 0))
    elif activity == "repairing a car":  # a wrench beside a wheel
        d.line([hx, hy, hx + 0.6 * s, hy - 0.5 * s], fill=(120, 120, 130), width=lw + 1)
        d.arc([hx + 0.45 * s, hy - 0.8 * s, hx + 0.85 * s, hy - 0.4 * s], 90, 360, fill=(120, 120, 130), width=lw + 1)
        d.ellipse([hx + 0.2 * s, hy + 0.2 * s, hx + 1.0 * s, hy + 1.0 * s], fill=(20, 20, 20))
        d.ellipse([hx + 0.45 * s, hy + 0.45 * s, hx + 0.75 * s, hy + 0.75 * s], fill=(170, 170, 170))
    elif activity == "playing football":  # a black and white ball at the feet
        bx, by = hx, top + h - 3.2 * hr
        d.ellipse([bx, by, bx + 0.8 * s, by + 0.8 * s], fill=(255, 255, 255), outline=(0, 0, 0), width=lw)
        d.regular_polygon((bx + 0.4 * s, by + 0.4 * s, 0.15 * s), 5, fill=(0, 0, 0))
    elif activity == "working as a police officer":  # a peaked cap and a gold badge
        d.rectangle([cx - 1.2 * hr, top - 0.5 * hr, cx + 1.2 * hr, top + 0.35 * hr], fill=(20, 30, 110))
        d.rectangle([cx - 1.6 * hr, top + 0.25 * hr, cx + 1.6 * hr, top + 0.6 * hr], fill=(10, 10, 40))
        d.regular_polygon((cx, top - 0.05 * hr, 0.45 * hr), 6, fill=(240, 200, 0))
        d.regular_polygon((hx + 0.4 * s, hy + 0.1 * s, 0.3 * s), 6, fill=(240, 200, 0), outline=(0, 0, 0))
    elif activity == "reading a book":  # an open book
        d.polygon(
            [(hx, hy - 0.3 * s), (hx + 0.5 * s, hy - 0.15 * s), (hx + 0.5 * s, hy + 0.55 * s), (hx, hy + 0.4 * s)],
            fill=(250, 250, 250),
            outline=(40, 40, 140),
        )
        d.polygon(
            [
                (hx + 0.5 * s, hy - 0.15 * s),
                (hx + s, hy - 0.3 * s),
                (hx + s, hy + 0.4 * s),
                (hx + 0.5 * s, hy + 0.55 * s),
            ],
            fill=(250, 250, 250),
            outline=(40, 40, 140),
        )
        for k in range(3):
            yy = hy - 0.05 * s + k * 0.15 * s
            d.line([hx + 0.1 * s, yy, hx + 0.4 * s, yy + 0.05 * s], fill=(80, 80, 80), width=1)
            d.line([hx + 0.6 * s, yy + 0.05 * s, hx + 0.9 * s, yy], fill=(80, 80, 80), width=1)
    elif activity == "painting":  # an easel with a colourful canvas
        d.line([hx + 0.3 * s, hy - 0.6 * s, hx + 0.1 * s, hy + 1.2 * s], fill=(120, 80, 30), width=lw)
        d.line([hx + 0.7 * s, hy - 0.6 * s, hx + 0.9 * s, hy + 1.2 * s], fill=(120, 80, 30), width=lw)
        d.rectangle([hx, hy - 0.7 * s, hx + s, hy + 0.3 * s], fill=(250, 250, 250), outline=(120, 80, 30), width=lw)
        for k, col in enumerate(((230, 30, 30), (30, 90, 230), (250, 200, 0))):
            d.ellipse([hx + (0.15 + 0.25 * k) * s, hy - 0.45 * s, hx + (0.35 + 0.25 * k) * s, hy - 0.2 * s], fill=col)
    else:  # pragma: no cover - guarded by render()
        raise ValueError(activity)


# --- the scene --------------------------------------------------------------------------------


def render(
    obj: str | None = None,
    text: str | None = None,
    person: str | None = None,
    activity: str | None = None,
    rng: int | random.Random | None = None,
    *,
    size: int = SIZE,
    clutter: int | None = None,
    background: tuple[int, int, int] | None = None,
    color: tuple[int, int, int] | None = None,
    scale: float | None = None,
    cue: float = 1.0,
    **text_style: Any,
) -> Image.Image:
    """Draw one scene of the toy world and return it as an RGB PIL image.

    obj: one of OBJECTS; person: one of GENDERS (or "person" for a random one); activity: one of
    ACTIVITIES (a person is drawn with its prop); text: a word written on top. All other choices
    (colours, size, position, clutter, font) come from `rng` (a seed or random.Random) unless
    given. `text_style` goes to clipaln.data.typographic.attack (font, fill, stroke, position,
    fonts, colors, size_range, max_rotation; text_size is an alias of its size in pixels). cue: how
    clearly a person's figure shows their gender, 1 (the pictogram) down to 0.5 (the man's and the
    woman's figures blended half and half); it draws nothing from `rng`.
    """
    rng = make_rng(rng)
    if obj is not None and obj not in _OBJECT_DRAWERS:
        raise ValueError(f"unknown object {obj!r}; the toy world has {', '.join(OBJECTS)}")
    if activity is not None and activity not in ACTIVITIES:
        raise ValueError(f"unknown activity {activity!r}; the toy world has {', '.join(ACTIVITIES)}")
    if person is not None and person not in GENDERS + ("person",):
        raise ValueError(f"unknown person {person!r}; use one of {', '.join(GENDERS)} or 'person'")
    if activity is not None and person in (None, "person"):
        person = rng.choice(GENDERS)
    S = 2 * size  # supersampled canvas
    bg = background or _background(rng)
    img = Image.new("RGB", (S, S), bg)
    d = ImageDraw.Draw(img)
    _clutter(d, S, bg, rng, rng.randint(2, 8) if clutter is None else clutter)
    c = color or rng.choice(_PALETTE)
    if obj is not None:
        s = S * (scale or rng.uniform(0.45, 0.8))
        x, y = rng.uniform(0, S - s), rng.uniform(0, S - s)
        _OBJECT_DRAWERS[obj](d, x, y, s, c, rng)
    if person is not None:
        h = S * (scale or rng.uniform(0.72, 0.9))
        x = rng.uniform(0, S - h * 0.95)
        y = rng.uniform(0, S - h)
        if not 0.5 <= cue <= 1.0:
            raise ValueError(f"cue must be within [0.5, 1], got {cue}")
        if cue < 1.0:  # a weak gender cue: the other gender's figure blended in
            other = img.copy()
            _figure(ImageDraw.Draw(other), x, y, h, GENDERS[1 - GENDERS.index(person)], c)
        hx, hy, cx, top, hr = _figure(d, x, y, h, person, c)
        if cue < 1.0:
            img = Image.blend(img, other, 1.0 - cue)
            d = ImageDraw.Draw(img)
        if activity is not None:
            _prop(d, activity, hx, hy, cx, top, hr, h, rng)
    img = img.resize((size, size), Image.LANCZOS)
    if text:
        style = {"size_range": TEXT_SIZE, **text_style}
        if "text_size" in style:
            style["size"] = style.pop("text_size")
        img = attack(img, text, rng, **style)
    return img
