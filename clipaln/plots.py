"""Small matplotlib helpers shared by the notebooks: image grids, policy bars, loss curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from . import losses


def image_grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.5,
    title_colors: Sequence[str] | None = None,
    suptitle: str | None = None,
):
    """Show PIL images in a grid with optional per-image titles; returns the figure."""
    n = len(images)
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=8, color=(title_colors[i] if title_colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def policy_bars(ax, probs: torch.Tensor, labels: Sequence[str], highlight: dict[int, str] | None = None, top: int = 6):
    """Horizontal bars of the top actions of pi(.|x) for one image."""
    p, idx = probs.topk(min(top, len(labels)))
    colors = [(highlight or {}).get(int(i), "tab:gray") for i in idx]
    ax.barh(range(len(p))[::-1], p.tolist(), color=colors)
    ax.set_yticks(range(len(p))[::-1], [labels[int(i)] for i in idx], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("pi(y | x)")


def gradient_weights(betas: dict[str, float], h: torch.Tensor | None = None):
    """Each loss (top row) and its gradient weight -dL/dh (bottom row) against the margin h, one
    column per method so that each is read on its own scale; returns the figure."""
    h = torch.linspace(-10, 60, 701) if h is None else h
    fig, axes = plt.subplots(2, len(betas), figsize=(3.6 * len(betas), 5.2), squeeze=False, sharex=True)
    for col, (method, beta) in enumerate(betas.items()):
        entry = losses.method(method)
        if entry.weight is None:
            raise ValueError(
                f"{method} is not a function of the margin h; plot one of {', '.join(losses.PREFERENCE_METHODS)}"
            )
        top, bottom = axes[0, col], axes[1, col]
        top.plot(h, entry.of_margin(h, beta), color=f"C{col}")
        bottom.plot(h, entry.weight(h, beta), color=f"C{col}")
        top.set_title(f"{method.upper()} (beta = {beta})")
        top.set_ylabel("loss") if col == 0 else None
        bottom.set_ylabel("-dL/dh: how hard a sample pushes") if col == 0 else None
        bottom.set_xlabel("margin h")
        bottom.axhline(0, color="black", lw=0.5)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
