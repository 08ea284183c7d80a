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
    """Plot each loss and its gradient weight -dL/dh against the margin h; returns the figure."""
    h = torch.linspace(-10, 10, 401) if h is None else h
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, beta in betas.items():
        entry = losses.method(method)
        if entry.weight is None:
            raise ValueError(
                f"{method} is not a function of the margin h; plot one of {', '.join(losses.PREFERENCE_METHODS)}"
            )
        a.plot(h, entry.of_margin(h, beta), label=f"{method.upper()} (beta={beta})")
        b.plot(h, entry.weight(h, beta), label=f"{method.upper()} (beta={beta})")
    a.set(xlabel="margin h", ylabel="loss", title="loss against the margin")
    b.set(xlabel="margin h", ylabel="-dL/dh", title="how hard each sample pushes")
    b.axhline(0, color="black", lw=0.5)
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
