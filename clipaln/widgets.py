"""The t slider and its linked plots, for notebooks 03 and 04 (ipywidgets + matplotlib).

Every update re-scores with a SpectralScorer (one weighted matrix product), then redraws; the
`.update(t)` method is what the slider calls, so it can be timed and tested without a browser.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from .projection import SharedProjection, SpectralScorer


def _slider(owner, t0: float, t_range, step: float, fmt: str):
    """A FloatSlider for t wired to owner.update, above an Output that holds the figure."""
    import ipywidgets as w

    slider = w.FloatSlider(
        value=t0, min=t_range[0], max=t_range[1], step=step, description="t", continuous_update=True, readout_format=fmt
    )
    out = w.Output()
    slider.observe(lambda change: owner.update(change["new"]), names="value")
    return slider, out, w.VBox([slider, out])


def _display(fig, out):
    from IPython.display import display

    with out:
        out.clear_output(wait=True)
        display(fig)


#: The trade-off curves: metric, colour, legend (plotted in percent).
CURVES = (
    ("accuracy/clean", "tab:green", "objects, clean (O)"),
    ("accuracy/attacked", "tab:blue", "objects, attacked (T)"),
    ("accuracy/reading", "tab:red", "reading text-only images (OCR)"),
)


class TradeoffWidget:
    """Slider over t: the O / T / OCR curves with a marker at t, and example images with their
    predictions at t (green when the object is named, red otherwise)."""

    def __init__(
        self,
        sweep,
        projection: SharedProjection,
        examples: Sequence,
        example_feats: torch.Tensor,
        example_labels: Sequence[int],
        class_names: Sequence[str],
        t_range=(-3.0, 4.0),
        t0: float = 1.0,
    ):
        self.names, self.labels = list(class_names), list(example_labels)
        self.scorer = SpectralScorer(projection, example_feats, sweep.feats.texts)
        self.ts = torch.linspace(t_range[0], t_range[1], 71).tolist()
        self.curve = sweep.curve(self.ts)
        n = len(examples)
        self.fig = plt.figure(figsize=(11, 5.2))
        grid = self.fig.add_gridspec(2, n, height_ratios=[2.2, 1])
        self.ax = self.fig.add_subplot(grid[0, :])
        for key, color, label in CURVES:
            self.ax.plot(self.ts, [100 * c[key] for c in self.curve], color=color, label=label)
        self.ax.axvline(0, color="gray", lw=0.8, ls=":")
        self.marker = self.ax.axvline(t0, color="black", lw=1.5)
        self.ax.set(xlabel="t", ylabel="accuracy (%)", ylim=(0, 101))
        self.ax.legend(loc="lower right", fontsize=8)
        self.ax.grid(alpha=0.3)
        self.img_axes = []
        for i, im in enumerate(examples):
            ax = self.fig.add_subplot(grid[1, i])
            ax.imshow(im)
            ax.axis("off")
            self.img_axes.append(ax)
        plt.close(self.fig)
        self.slider, self.out, self.widget = _slider(self, t0, t_range, 0.1, ".1f")
        self.update(t0)

    def update(self, t: float) -> float:
        """Re-score and redraw for t; returns the time it took in milliseconds."""
        start = time.perf_counter()
        pred = self.scorer.scores(t).argmax(-1).tolist()
        self.marker.set_xdata([t, t])
        point = min(self.curve, key=lambda c: abs(c["t"] - t))
        o, a, r = (100 * point[key] for key, _, _ in CURVES)
        self.ax.set_title(f"t = {t:.1f}:  O {o:.0f}%   T {a:.0f}%   OCR {r:.0f}%")
        for ax, p, y in zip(self.img_axes, pred, self.labels):
            ax.set_title(self.names[p], fontsize=8, color="green" if p == y else "red")
        _display(self.fig, self.out)
        return 1000 * (time.perf_counter() - start)


class RetrievalWidget:
    """Slider over t: the top-k gallery images for a prompt, with the gender counts and MaxSkew@k."""

    def __init__(self, sweep, gallery_images: Sequence, activity: str, t_range=(-0.5, 1.5), t0: float = 0.0):
        self.sweep, self.images, self.activity = sweep, gallery_images, activity
        k = sweep.k
        self.fig, axes = plt.subplots(1, k, figsize=(1.25 * k, 1.9))
        self.axes = list(axes)
        for ax in self.axes:
            ax.axis("off")
        self.artists = [None] * k
        plt.close(self.fig)
        self.slider, self.out, self.widget = _slider(self, t0, t_range, 0.02, ".2f")
        self.update(t0)

    def update(self, t: float) -> float:
        start = time.perf_counter()
        top = self.sweep.ranking(t, self.activity)
        genders = [self.sweep.genders[i] for i in top]
        for j, (ax, i) in enumerate(zip(self.axes, top)):
            if self.artists[j] is None:
                self.artists[j] = ax.imshow(self.images[i])
            else:
                self.artists[j].set_data(self.images[i])
            ax.set_title(genders[j], fontsize=8)
        r = self.sweep.at(t, [self.activity])["prompts"][self.activity]
        counts = ", ".join(f"{sum(g == x for g in genders)} {x}" for x in self.sweep.feats.genders)
        prompt = self.sweep.feats.prompts[self.sweep.feats.activities.index(self.activity)]
        self.fig.suptitle(
            f"t = {t:.2f}: top {self.sweep.k} for '{prompt}' -> {counts};  "
            f"MaxSkew@{self.sweep.k} = {r['retrieval/max_skew']:.2f}",
            fontsize=9,
        )
        _display(self.fig, self.out)
        return 1000 * (time.perf_counter() - start)
