"""The t slider and its linked plots, for notebooks 03 and 04 (ipywidgets + matplotlib).

A slider move must feel instant (under 30 ms in the kernel), so nothing is redrawn from scratch:
the figure's unchanging parts (curves, axes, legend) are drawn once and kept as a bitmap; each
update re-scores with a SpectralScorer (one weighted matrix product, in blocks of 1,024 images),
restores that bitmap, draws only the artists that change (matplotlib's blitting, on the Agg canvas)
and sends the frame as a PNG to an `ipywidgets.Image`. Gallery thumbnails are made once. Slider events that arrive while
a frame is being made are coalesced: only the newest value is drawn. `.update(t)` is what the
slider calls, so it can be timed and tested without a browser; `.snapshot()` is the current frame
for readers without widgets.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image, ImageOps

from .features import FeatureCache
from .models import MissingPackage, load_clip
from .players import GalleryPlayer, StaticPlayer, finite_ts
from .plots import marked
from .projection import SharedProjection, SpectralScorer
from .tracks import gender, typographic

#: The side of a thumbnail, in pixels (a gallery cell is about 125 px wide).
THUMBNAIL = 128
#: The smallest text of a slider's frame, in points: 15 px at matplotlib's 100 dpi, and still 12 px
#: where a page shrinks the trade-off's 720 px frame into the book's narrowest column (572 px).
FONT = 11


def thumbnail(image: Image.Image | np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """A (side, side, 3) uint8 array of the image, centre-cropped to a square."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return np.asarray(ImageOps.fit(im.convert("RGB"), (side, side), Image.BICUBIC))


class Frames:
    """Blitting on an Agg canvas. Everything but the `animated` artists is drawn once, here; each
    frame restores that background, draws the animated artists over it, pastes images into their
    boxes as pixels and is encoded as PNG. Text is the slow part of a draw (about 1.5 ms per label),
    so the pixels of a text artist whose box meets no other animated artist are kept per (artist,
    text, colour) and pasted when seen again: exact, since its box then holds only the background
    and itself. Texts that do meet another animated artist are drawn every time."""

    def __init__(self, fig, animated):
        self.fig, self.animated = fig, list(animated)
        self.canvas = FigureCanvasAgg(fig)
        for a in self.animated:
            a.set_animated(True)
        self.canvas.draw()  # skips the animated artists
        fig.set_layout_engine("none")  # freeze the layout: the background's positions must hold
        self.background = self.canvas.copy_from_bbox(fig.bbox)
        self.height = int(round(fig.bbox.height))
        self.texts: dict[tuple, np.ndarray] = {}

    def box(self, ax: plt.Axes) -> tuple[int, int, int]:
        """(top row, left column, side) in frame pixels of the largest square centred in ax."""
        x0, y0, x1, y1 = ax.get_window_extent().extents
        side = int(min(x1 - x0, y1 - y0))
        return int(self.height - (y0 + y1 + side) / 2), int((x0 + x1 - side) / 2), side

    def _rect(self, artist) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) frame pixels that hold the artist, with a pixel to spare."""
        x0, y0, x1, y1 = artist.get_window_extent(self.canvas.get_renderer()).extents
        top, bottom = max(int(self.height - y1) - 1, 0), min(int(self.height - y0) + 2, self.height)
        return top, bottom, max(int(x0) - 1, 0), int(x1) + 2

    def cacheable(self) -> list[bool]:
        """For each animated artist: a text whose box meets no other animated artist's box."""
        rects = [self._rect(a) for a in self.animated]
        meets = lambda r, q: r[0] < q[1] and q[0] < r[1] and r[2] < q[3] and q[2] < r[3]
        return [
            isinstance(a, Text) and not any(meets(r, q) for j, q in enumerate(rects) if j != i)
            for i, (a, r) in enumerate(zip(self.animated, rects))
        ]

    def render(self, tiles: Iterable[tuple[tuple[int, int, int], np.ndarray]] = ()) -> bytes:
        """The frame as PNG; tiles: (box, (side, side, 3) uint8 array) pairs to paste."""
        self.canvas.restore_region(self.background)
        paste, fresh = [], []
        for a, cache in zip(self.animated, self.cacheable()):
            key = (id(a), a.get_text(), str(a.get_color())) if cache else None
            if key in self.texts:
                paste.append((self._rect(a), self.texts[key]))
                continue
            self.fig.draw_artist(a)
            if key is not None:
                fresh.append((key, a))
        rgb = np.asarray(self.canvas.buffer_rgba())[..., :3].copy()
        for key, a in fresh:
            top, bottom, left, right = self._rect(a)
            self.texts[key] = rgb[top:bottom, left:right].copy()
        for (top, bottom, left, right), pixels in paste:
            rgb[top:bottom, left:right] = pixels
        for (top, left, side), pixels in tiles:
            rgb[top : top + side, left : left + side] = pixels
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="png", compress_level=1)
        return out.getvalue()

    def fresh(self, tiles: Iterable[tuple[tuple[int, int, int], np.ndarray]] = ()) -> bytes:
        """The same frame drawn from scratch, with no cached text (what render must equal)."""
        saved, self.texts = self.texts, {}
        try:
            return self.render(tiles)
        finally:
            self.texts = saved


class _Slider:
    """A FloatSlider for t above an Image holding the frame; slider events call owner.update,
    coalesced when the kernel's event loop runs (the newest value wins)."""

    def __init__(self, owner, t0: float, t_range, step: float, fmt: str):
        try:
            import ipywidgets as w
        except ModuleNotFoundError:
            raise MissingPackage("the sliders need ipywidgets: pip install 'clipaln[notebooks]'") from None

        self.owner, self.pending, self.scheduled = owner, None, False
        self.slider = w.FloatSlider(
            value=t0, min=t_range[0], max=t_range[1], step=step, description="t", continuous_update=True,
            readout_format=fmt,
        )  # fmt: skip
        self.image = w.Image(format="png")
        self.slider.observe(self._changed, names="value")
        self.widget = w.VBox([self.slider, self.image])

    def _changed(self, change):
        self.pending = change["new"]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): draw now
            self._flush()
            return
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._flush)

    def _flush(self):
        self.scheduled = False
        if self.pending is not None:
            t, self.pending = self.pending, None
            self.owner.update(t)

    def show(self, png: bytes):
        self.image.value = png


class _Widget:
    """What both widgets share: the frame, the slider, the timing and the snapshot."""

    def _start(self, fig, animated, t0, t_range, step, fmt):
        plt.close(fig)
        self.fig, self.frames, self.png = fig, Frames(fig, animated), b""
        self.ui = _Slider(self, t0, t_range, step, fmt)
        self.slider, self.widget = self.ui.slider, self.ui.widget
        self.update(t0)

    def update(self, t: float) -> float:
        """Re-score and redraw for t; returns the time it took in milliseconds."""
        start = time.perf_counter()
        self._draw(t)
        self.png = self.frames.render(self._tiles())
        self.ui.show(self.png)
        return 1000 * (time.perf_counter() - start)

    def _tiles(self):
        return ()

    def describe(self) -> str:
        """What the frame shows now, in words (a player frame's alt text)."""
        return ""

    def snapshot(self):
        """The frame the widget shows now, as an IPython image (for readers without widgets), its smallest
        text in its metadata, as a figure's (benchmarks/figure_text.py)."""
        from IPython.display import Image as PNG

        return PNG(data=self.png, metadata={"clipaln": {"smallest_text_px": round(self.font_px(), 2)}})

    def font_px(self) -> float:
        """The smallest text of the frame, in the frame's pixels (a font's size, as CSS gives it)."""
        sizes = [t.get_fontsize() for t in self.fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
        return min(sizes) * self.fig.dpi / 72

    def player(self, ts, t0: float | None = None, quality: int = 80, scale: float = 1.0) -> StaticPlayer:
        """The slider without a kernel: the frames at each t of `ts`, precomputed and packed into a
        self-contained HTML range input (WebP frames, half the bytes of JPEG at the same quality;
        `scale` of the live size), for a committed
        notebook, nbviewer or the book. Starts at the t nearest t0 (default: the slider's value);
        the live widget is left as it was."""
        ts = sorted(finite_ts(ts))  # the range input scrubs left to right: smallest t first
        if not ts or len(set(ts)) != len(ts):
            raise ValueError("the player needs distinct values of t")
        now = self.slider.value
        t0 = now if t0 is None else float(t0)
        frames, captions = [], []
        for t in ts:
            self.update(t)
            captions.append(self.describe())
            im = Image.open(io.BytesIO(self.png)).convert("RGB")
            if scale != 1.0:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            out = io.BytesIO()
            im.save(out, format="webp", quality=quality)
            frames.append(out.getvalue())
        self.update(now)
        start = min(range(len(ts)), key=lambda i: abs(ts[i] - t0))
        return StaticPlayer(ts, frames, start, font_px=self.font_px() * scale, captions=captions)


#: The trade-off curves: metric, colour, legend (plotted in percent).
CURVES = (
    ("accuracy/clean", "tab:green", "objects, clean (O)"),
    ("accuracy/attacked", "tab:blue", "objects, attacked (T)"),
    ("accuracy/ocr", "tab:red", "attacked: the written word named (OCR)"),
    ("accuracy/text_only", "tab:purple", "text-only images read"),
)


class TradeoffWidget(_Widget):
    """Slider over t: the O / T / OCR curves with a marker at t, and example images with their
    predictions at t (a check in blue when the object is named, a cross in vermillion otherwise)."""

    def __init__(
        self,
        sweep,
        projection: SharedProjection,
        examples: Sequence,
        example_feats: torch.Tensor,
        example_labels: Sequence[int],
        class_names: Sequence[str],
        t_range=(-2.0, 2.0),
        t0: float = 1.0,
    ):
        self.names, self.labels = list(class_names), list(example_labels)
        self.scorer = SpectralScorer(projection, example_feats, sweep.feats.texts)
        self.ts = torch.linspace(t_range[0], t_range[1], round((t_range[1] - t_range[0]) / 0.1) + 1).tolist()
        self.curve = sweep.curve(self.ts)
        n = len(examples)
        cols = (n + 1) // 2 if n > 4 else max(n, 1)  # more than four examples: two rows
        rows = -(-n // cols)
        with plt.rc_context({"font.size": FONT}):
            fig = plt.figure(figsize=(7.2, 3.9 + 1.45 * rows), layout="constrained")
            grid = fig.add_gridspec(1 + rows, cols, height_ratios=[3.4] + [1.45] * rows)
            self.ax = fig.add_subplot(grid[0, :])
            for key, color, label in CURVES:
                self.ax.plot(self.ts, [100 * c[key] for c in self.curve], color=color, label=label)
            self.ax.axvline(0, color="gray", lw=0.8, ls=":")
            self.marker = self.ax.axvline(t0, color="black", lw=1.5)
            self.ax.set(xlabel="t", ylabel="accuracy (%)", ylim=(0, 101))
            self.ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=FONT, frameon=False)
            self.ax.grid(alpha=0.3)
            self.img_axes = []
            for i, im in enumerate(examples):
                ax = fig.add_subplot(grid[1 + i // cols, i % cols])
                ax.imshow(thumbnail(im))
                ax.axis("off")
                ax.set_title(" ", fontsize=FONT)
                self.img_axes.append(ax)
        self.ax.set_title(" ")
        animated = [self.marker, self.ax.title] + [ax.title for ax in self.img_axes]
        self._start(fig, animated, t0, t_range, 0.1, ".1f")

    def predictions(self, t: float) -> list[int]:
        return self.scorer.classify(t).tolist()

    def _draw(self, t: float) -> None:
        self.marker.set_xdata([t, t])
        point = min(self.curve, key=lambda c: abs(c["t"] - t))
        o, a, r, x = (100 * point[key] for key, _, _ in CURVES)
        self.ax.set_title(f"t = {t:.1f}:  O {o:.0f}%   T {a:.0f}%   OCR {r:.0f}%   text-only {x:.0f}%")
        named = []
        for ax, p, y in zip(self.img_axes, self.predictions(t), self.labels):
            text, color = marked(self.names[p], p == y)
            ax.set_title(text, fontsize=FONT, color=color)
            named.append((self.names[p], p == y))
        right = sum(ok for _, ok in named)
        self._said = (
            f"accuracy O {o:.0f}%, T {a:.0f}%, OCR {r:.0f}%, text-only {x:.0f}%; the attacked examples read as "
            + ", ".join(f"{name} ({'right' if ok else 'wrong'})" for name, ok in named)
            + f": {right} of {len(named)} right"
        )

    def describe(self) -> str:
        return self._said


class RetrievalWidget(_Widget):
    """Slider over t: the top-k gallery images for a prompt, with the gender counts and MaxSkew@k.
    With `choices` (activities), a menu above the slider switches the prompt (.select(activity))."""

    def __init__(
        self, sweep, gallery_images: Sequence, activity: str, t_range=(-0.5, 1.5), t0: float = 0.0, choices=None
    ):
        if activity not in sweep.feats.activities or any(c not in sweep.feats.activities for c in choices or ()):
            raise ValueError(f"activities must be among {sweep.feats.activities}")
        self.sweep, self.images, self.activity = sweep, gallery_images, activity
        self.thumbs: dict[tuple[int, int], np.ndarray] = {}  # (gallery index, side)
        self.top: list[int] = []
        k = sweep.k
        cols = min(k, 5)  # rows of five: the frame fits the book's column (plots.WIDTH) at its own size
        rows = -(-k // cols)
        height = 1.75 * rows + 1.0
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, height))
        self.axes = list(np.atleast_1d(axes).ravel())[:k]
        for ax in list(np.atleast_1d(axes).ravel())[k:]:
            ax.remove()
        for ax in self.axes:
            ax.axis("off")
            ax.set_title(" ", fontsize=FONT)
        fig.suptitle(f"the top {k} of the gallery", fontsize=FONT, y=0.99)
        # what changes with t, as an axes-level text so that blitting can redraw it
        self.title = self.axes[0].text(
            0.5, 0.9, " ", transform=fig.transFigure, ha="center", va="top", fontsize=FONT
        )  # fmt: skip
        fig.subplots_adjust(top=1 - 1.0 / height, bottom=0.0, left=0.01, right=0.99, hspace=0.25)
        self._start(fig, [ax.title for ax in self.axes] + [self.title], t0, t_range, 0.01, ".2f")
        if choices:
            import ipywidgets as w

            self.menu = w.Dropdown(options=list(choices), value=activity, description="prompt")
            self.menu.observe(lambda change: self.select(change["new"]), names="value")
            self.widget = w.VBox([self.menu, self.widget])

    def select(self, activity: str) -> float:
        """Show another prompt at the slider's t; returns the update time in milliseconds."""
        if activity not in self.sweep.feats.activities:
            raise ValueError(f"{activity!r} is not among {self.sweep.feats.activities}")
        self.activity = activity
        return self.update(self.slider.value)

    def _thumb(self, i: int, side: int) -> np.ndarray:
        if (i, side) not in self.thumbs:
            self.thumbs[i, side] = thumbnail(self.images[i], side)
        return self.thumbs[i, side]

    def _tiles(self):
        boxes = [self.frames.box(ax) for ax in self.axes]
        return [(box, self._thumb(i, box[2])) for box, i in zip(boxes, self.top)]

    def frame(self, t: float, activity: str | None = None) -> tuple[list[int], list[str], str]:
        """The top k gallery indices at t for a prompt (default: the one shown), their genders, and
        the counts and MaxSkew@k as one line."""
        activity = self.activity if activity is None else activity
        top = self.sweep.ranking(t, activity)
        genders = [self.sweep.genders[i] for i in top]
        r = self.sweep.at(t, [activity])["prompts"][activity]
        counts = ", ".join(f"{sum(g == x for g in genders)} {x}" for x in self.sweep.feats.genders)
        return top, genders, f"{counts};  MaxSkew@{self.sweep.k} = {r['retrieval/max_skew']:.2f}"

    def prompt(self, activity: str) -> str:
        return self.sweep.feats.prompts[self.sweep.feats.activities.index(activity)]

    def _draw(self, t: float) -> None:
        self.top, genders, line = self.frame(t)
        for ax, g in zip(self.axes, genders):
            ax.set_title(g, fontsize=FONT)
        self.title.set_text(f"'{self.prompt(self.activity)}'\nt = {t:.2f}: {line}")
        self._said = f"the top {self.sweep.k} for '{self.prompt(self.activity)}': {line}"

    def describe(self) -> str:
        return self._said

    def player(
        self, ts: Iterable[float], t0: float | None = None, prompts: Iterable[str] | None = None, quality: int = 80
    ) -> GalleryPlayer:
        """The slider without a kernel, for each prompt of `prompts` (default: the menu's, else the
        one shown): the top k at each t of `ts`, with the thumbnails they show once (WebP); starts
        at the t nearest t0 (default: the slider's value) on the prompt shown. Changes nothing here."""
        ts = sorted(float(t) for t in ts)
        if not ts or len(set(ts)) != len(ts):
            raise ValueError("the player needs distinct values of t")
        if prompts is None:
            prompts = self.menu.options if hasattr(self, "menu") else [self.activity]
        prompts = list(prompts)
        if any(a not in self.sweep.feats.activities for a in prompts):
            raise ValueError(f"prompts must be among {self.sweep.feats.activities}")
        if self.activity not in prompts:
            prompts.insert(0, self.activity)
        used: dict[int, int] = {}  # gallery index -> thumbnail index
        frames = []
        for activity in prompts:
            frames.append([])
            for t in ts:
                top, genders, line = self.frame(t, activity)
                frames[-1].append(([used.setdefault(i, len(used)) for i in top], genders, line))
        thumbs = []
        for i in used:  # in order of first use
            out = io.BytesIO()
            Image.fromarray(self._thumb(i, THUMBNAIL)).save(out, format="webp", quality=quality)
            thumbs.append(out.getvalue())
        t0 = self.slider.value if t0 is None else float(t0)
        start = min(range(len(ts)), key=lambda i: abs(ts[i] - t0))
        labels = [self.prompt(a) for a in prompts]
        return GalleryPlayer(ts, labels, frames, thumbs, start=start, prompt=prompts.index(self.activity))


# --- `clipaln bench sliders` -----------------------------------------------------------------


def bench(cache: FeatureCache | None = None) -> dict:
    """`clipaln bench sliders`: the in-kernel update time of notebooks 03 and 04's t sliders (re-score,
    redraw what changed, encode the frame), at every position each slider can take, once, in the
    toy world as the notebooks build them (key press to repaint in a browser:
    benchmarks/slider_in_browser.py)."""
    bundle = load_clip("toy", device="cpu")
    spec = typographic.toy_spec()
    feats = typographic.build_features(bundle, spec, cache, progress=False)
    W, _ = typographic.train(feats, typographic.train_config("dpo"), progress=False)
    idx = [0, 5, 10, 15, 20, 25, 30, 35]
    test = typographic.attacked_datasets(spec)["test"]
    tradeoff = TradeoffWidget(
        typographic.Sweep(feats, W), W, [test[i][1] for i in idx], feats.test.attacked[idx],
        feats.test.labels[idx].tolist(), spec.class_names,
    )  # fmt: skip
    people = gender.toy_spec(n_train_per_cell=30, n_gallery_per_cell=20, seed=0)
    pfeats = gender.build_features(bundle, people, cache, progress=False)
    Wg, _ = gender.train(pfeats, gender.train_config("dpo"), progress=False)
    retrieval = RetrievalWidget(
        gender.Sweep(pfeats, Wg, k=10), [people.gallery_set[i][0] for i in range(len(pfeats.gallery_labels))],
        "working as a police officer",
    )  # fmt: skip
    out = {}
    for name, ui, positions in (
        ("tradeoff (notebook 03)", tradeoff, [round(0.1 * i, 1) for i in range(-20, 21)]),
        ("retrieval (notebook 04)", retrieval, [round(0.01 * i, 2) for i in range(-50, 151)]),
    ):
        times = [ui.update(t) for t in positions]
        out[name] = {
            "positions": len(times),
            "median_ms": round(statistics.median(times), 1),
            "p90_ms": round(sorted(times)[int(0.9 * len(times))], 1),
            "max_ms": round(max(times), 1),
            "frame_kb": round(len(ui.png) / 1024, 1),
        }
    return {"sliders": out, "threads": torch.get_num_threads()}
