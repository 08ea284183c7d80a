"""The sliders without a kernel: precomputed frames behind an HTML range input, for a committed
notebook, nbviewer or the book. The page's markup and script are templates (clipaln/templates/),
filled with escaped text and JSON that no label can end (`_script_json`)."""

from __future__ import annotations

import base64
import hashlib
import html as htmlmod
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from string import Template

from PIL import Image

#: The players' markup and script, one template each ($name is filled in; the script's braces stay).
_TEMPLATES = {
    p.stem: Template(p.read_text(encoding="utf-8").rstrip("\n"))
    for p in (Path(__file__).with_name("templates")).glob("*.html")
}


class StaticPlayer:
    """Precomputed frames behind an HTML range input: scrubbing t needs no kernel, only a browser
    that runs the page's script (a trusted notebook, nbviewer, the book). `.html` is the markup;
    notebooks display it through _repr_html_. The element's id follows the frames' bytes, so the
    same frames give the same page. The frames fill the page's width up to their own; font_px, the
    smallest text in a frame's pixels, is written beside them (data-font-px) so that a browser can
    tell how large a label is on screen. Each frame's alt text, and the slider's spoken value, name
    its t and what it shows (`captions`, one per frame)."""

    def __init__(
        self,
        ts: Sequence[float],
        frames: Sequence[bytes],
        start: int = 0,
        font_px: float | None = None,
        captions: Sequence[str] | None = None,
    ):
        ts = finite_ts(ts)
        if len(ts) != len(frames) or not frames:
            raise ValueError("one frame per t, and at least one")
        captions = [""] * len(ts) if captions is None else [str(c) for c in captions]
        if len(captions) != len(ts):
            raise ValueError("one caption per frame")
        self.alts = [f"t = {t:.2f}" + (f": {c}" if c else "") for t, c in zip(ts, captions)]
        if any(b <= a for a, b in zip(ts, list(ts)[1:])):
            raise ValueError("the frames' t must increase, as the range input does")
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(frames):
            raise ValueError(f"start is the index of a frame, 0 to {len(frames) - 1}, got {start!r}")
        self.ts, self.frames, self.start, self.font_px = list(ts), list(frames), start, font_px
        first = Image.open(io.BytesIO(self.frames[0]))
        self.width, self.mime = first.width, Image.MIME[first.format]
        self.id = "clipaln-player-" + hashlib.sha1(b"".join(frames)).hexdigest()[:12]

    @property
    def html(self) -> str:
        data = [base64.b64encode(f).decode() for f in self.frames]
        i = self.start
        return _TEMPLATES["static_player"].substitute(
            id=self.id,
            id_json=json.dumps(self.id),
            last=len(data) - 1,
            start=i,
            alt=htmlmod.escape(self.alts[i]),
            t=f"{self.ts[i]:.2f}",
            font="" if self.font_px is None else f' data-font-px="{self.font_px:.1f}"',
            width=self.width,
            mime=self.mime,
            src=data[i],
            frames=_script_json(data),
            ts=_script_json(self.ts),
            alts=_script_json(self.alts),
        )

    def _repr_html_(self) -> str:
        return self.html


#: What JSON may hold that changes how a browser reads a <script> (its end, a comment, HTML's
#: character references) or ends a line in older JavaScript: written as \\u escapes, which JSON and
#: JavaScript read as the same characters.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _script_json(value: object) -> str:
    """JSON to place inside a <script>: no text in it (a label, a caption) can end the script."""
    text = json.dumps(value, allow_nan=False)
    for char, escape in _SCRIPT_UNSAFE.items():
        text = text.replace(char, escape)
    return text


def finite_ts(ts: Sequence[float]) -> list[float]:
    """The player's t, each a finite number (one ValueError otherwise: a frame must not read "t = nan")."""
    values = [float(t) for t in ts]
    bad = [t for t in values if not math.isfinite(t)]
    if bad:
        raise ValueError(f"a player's t must be finite numbers, got {bad[0]}")
    return values


class GalleryPlayer:
    """The retrieval slider without a kernel, over a menu of prompts: each thumbnail once, and for
    each (prompt, t) the top k as indices into them with their labels and a caption, which the
    page's script lays out as an HTML table. The labels are the page's own text (legible at any
    zoom) and a prompt's frames cost a few hundred bytes. Without a script (a code host's view) the
    table shows the starting frame. frames[p][i] = (thumbnail indices, labels, caption) of prompt p
    at ts[i]."""

    LABEL_PX, CAPTION_PX = 14, 15

    def __init__(self, ts, prompts, frames, thumbs, start: int = 0, prompt: int = 0, columns: int = 5):
        ts = finite_ts(ts)
        if not prompts or len(frames) != len(prompts) or any(len(f) != len(ts) for f in frames):
            raise ValueError("one frame per (prompt, t), and at least one prompt")
        if any(b <= a for a, b in zip(ts, list(ts)[1:])):
            raise ValueError("the frames' t must increase, as the range input does")
        if not (0 <= start < len(ts) and 0 <= prompt < len(prompts)):
            raise ValueError(
                f"start is a t index (0 to {len(ts) - 1}), prompt a prompt index (0 to {len(prompts) - 1})"
            )
        self.ts, self.prompts, self.frames, self.thumbs = list(ts), list(prompts), frames, list(thumbs)
        self.start, self.prompt, self.columns = start, prompt, columns
        self.mime = Image.MIME[Image.open(io.BytesIO(self.thumbs[0])).format]
        blob = json.dumps([self.prompts, self.frames]).encode() + b"".join(self.thumbs)
        self.id = "clipaln-gallery-" + hashlib.sha1(blob).hexdigest()[:12]

    @property
    def html(self) -> str:
        thumbs = [base64.b64encode(b).decode() for b in self.thumbs]
        top, labels, caption = self.frames[self.prompt][self.start]
        options = "".join(
            f'<option value="{j}"{" selected" if j == self.prompt else ""}>{htmlmod.escape(p)}</option>'
            for j, p in enumerate(self.prompts)
        )
        cells = [
            _TEMPLATES["gallery_cell"].substitute(
                rank=j + 1, label=htmlmod.escape(g), mime=self.mime, src=thumbs[i], label_px=self.LABEL_PX
            )
            for j, (i, g) in enumerate(zip(top, labels))
        ]
        rows = "".join(
            "<tr>" + "".join(cells[r : r + self.columns]) + "</tr>" for r in range(0, len(cells), self.columns)
        )
        return _TEMPLATES["gallery_player"].substitute(
            id=self.id,
            id_json=json.dumps(self.id),
            style=f"font-size:{self.CAPTION_PX}px",
            options=options,
            last=len(self.ts) - 1,
            start=self.start,
            t=f"{self.ts[self.start]:.2f}",
            caption=htmlmod.escape(caption),
            grid_px=140 * self.columns,
            rows=rows,
            thumbs=_script_json(thumbs),
            frames=_script_json(self.frames),
            ts=_script_json(self.ts),
            mime=self.mime,
        )

    def _repr_html_(self) -> str:
        return self.html
