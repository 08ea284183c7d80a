"""Small matplotlib helpers shared by the notebooks: image grids, policy bars, loss curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from . import losses

#: Right and wrong, in the Okabe-Ito palette (told apart with every common colour-vision deficiency),
#: and always with a mark as well, never by colour alone.
RIGHT, WRONG = "#0072B2", "#D55E00"
MARKS = {True: "\u2713", False: "\u2717"}  # check, cross
#: The widest figure, in inches: about the book's column at a 1280 px window (some 820 px), at
#: matplotlib's 100 dpi, so that a figure is shown at its own size and its 8 pt text reads at 11 px.
#: A wider figure is shrunk into the column, and its text with it.
WIDTH = 8.0


def marked(title: str, right: bool) -> tuple[str, str]:
    """A title that says right or wrong by its mark and its colour: (text, colour)."""
    return f"{MARKS[bool(right)]} {title}", RIGHT if right else WRONG


def image_grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.5,
    correct: Sequence[bool] | None = None,
    suptitle: str | None = None,
) -> plt.Figure:
    """Show PIL images in a grid with optional per-image titles; with `correct`, each title carries a
    check or a cross and the matching colour (`marked`). Returns the figure."""
    n = len(images)
    nrows = max(1, (n + ncols - 1) // ncols)
    size = min(size, WIDTH / ncols)  # no wider than the column
    chars = max(8, int(size * 72 / (8 * 0.6)))  # what fits on a line of the cell at 8 pt
    marks = [marked(t, r) for t, r in zip(titles, correct)] if titles is not None and correct is not None else None
    shown = [("\n".join(textwrap.wrap(t, chars)), c) for t, c in marks or [(t, "black") for t in titles or []]]
    lines = max((t.count("\n") + 1 for t, _ in shown), default=0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, nrows * (size + 0.15 * lines)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if shown:
                ax.set_title(shown[i][0], fontsize=8, color=shown[i][1])
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def policy_bars(
    ax: plt.Axes, probs: torch.Tensor, labels: Sequence[str], highlight: dict[int, str] | None = None, top: int = 6
) -> None:
    """Horizontal bars of the top actions of pi(.|x) for one image."""
    p, idx = probs.topk(min(top, len(labels)))
    colors = [(highlight or {}).get(int(i), "tab:gray") for i in idx]
    ax.barh(range(len(p))[::-1], p.tolist(), color=colors)
    ax.set_yticks(range(len(p))[::-1], [labels[int(i)] for i in idx], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("pi(y | x)")


def gradient_weights(betas: dict[str, float], h: torch.Tensor | None = None) -> plt.Figure:
    """Each loss (top row) and its gradient weight -dL/dh (bottom row) against the margin h, one
    column per method so that each is read on its own scale; returns the figure."""
    h = torch.linspace(-10, 60, 701) if h is None else h
    fig, axes = plt.subplots(2, len(betas), figsize=(3.6 * len(betas), 5.2), squeeze=False, sharex=True)
    for col, (method, beta) in enumerate(betas.items()):
        entry = losses.method(method)
        if entry.weight is None:
            raise ValueError(
                f"{method} is not a function of the margin h; plot one of {', '.join(losses.preference_methods())}"
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


def pipeline() -> plt.Figure:
    """The method in one picture (the paper's Fig. 1): D_pref and D_reg go through the frozen
    encoders, the shared projection W maps both sides, the preference loss reads the pairs, the KL
    term keeps D_reg's predictions, and W_t = U S^t V^T is read off the trained W. Returns the figure."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set(xlim=(0, 11), ylim=(0, 4.6))
    ax.axis("off")

    def box(x, y, w, h, text, color, size=10):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(a, b, text=None, color="0.25"):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.2))
        if text:
            ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.12, text, ha="center", fontsize=10, color=color)

    box(0.1, 3.0, 2.2, 1.2, "D_pref\nimage x, caption y_w\npreferred over y_l", "#fde2c8")
    box(0.1, 0.5, 2.2, 1.2, "D_reg\nclean images x\n(knowledge to keep)", "#d6ead6")
    box(3.0, 3.0, 1.9, 1.2, "image encoder\n(frozen)", "#e6e6e6")
    box(3.0, 1.6, 1.9, 1.0, "text encoder\n(frozen)", "#e6e6e6")
    box(3.0, 0.5, 1.9, 0.8, "image encoder\n(frozen)", "#e6e6e6")
    box(5.6, 1.3, 1.4, 2.0, "W\n(shared:\nimages and\ncaptions)", "#cfe0f7", size=11)
    box(
        7.7,
        3.0,
        3.1,
        1.2,
        "L_pref: DPO / IPO / KTO on\nh = log-ratio of y_w minus y_l\n(against the frozen model)",
        "#fde2c8",
    )
    box(7.7, 0.5, 3.1, 1.2, "L_reg: lambda KL(pi_ref || pi_W)\non D_reg's predictions", "#d6ead6")
    box(7.7, 1.85, 3.1, 0.9, "after training: W = U S V^T,\nW_t = U S^t V^T  (t = 0: CLIP)", "#f3f3c8")
    arrow((2.3, 3.6), (3.0, 3.6), "x")
    arrow((2.3, 3.2), (3.0, 2.2), "y_w, y_l")
    arrow((2.3, 0.9), (3.0, 0.9), "x")
    arrow((2.3, 1.3), (3.0, 1.8), "its captions")
    for y in (3.6, 2.1, 0.9):
        arrow((4.9, y), (5.6, 2.3))
    arrow((7.0, 2.6), (7.7, 3.5), "cosines")
    arrow((7.0, 2.0), (7.7, 1.1), "cosines")
    arrow((7.0, 2.3), (7.7, 2.3), color="tab:olive")
    ax.text(
        5.5,
        4.45,
        "train only W: L = L_pref + L_reg   (the paper's Fig. 1, as clipaln implements it)",
        ha="center",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def unit_circle_under(weight: torch.Tensor, ts: Sequence[float], ax: plt.Axes | None = None) -> plt.Axes:
    """What W_t = U S^t V^T does in 2-D: the unit circle mapped by W_t for each t, with W's right
    singular directions (V) and their images scaled by S^t. weight: a (2, 2) matrix. Returns the axes."""
    weight = torch.as_tensor(weight, dtype=torch.float64)
    if weight.shape != (2, 2):
        raise ValueError(f"the picture is 2-D: weight must be (2, 2), got {tuple(weight.shape)}")
    u, s, vh = torch.linalg.svd(weight)
    theta = torch.linspace(0, 2 * torch.pi, 200, dtype=torch.float64)
    circle = torch.stack([theta.cos(), theta.sin()])
    ax = ax or plt.subplots(figsize=(4.6, 4.6))[1]
    cmap = plt.get_cmap("coolwarm")
    lo, hi = min(ts), max(ts)
    for t in ts:
        wt = u @ torch.diag(s**t) @ vh
        pts = wt @ circle
        color = cmap(0.5 if hi == lo else (t - lo) / (hi - lo))
        ax.plot(pts[0], pts[1], color=color, lw=1.5, label=f"t = {t:g}")
        for i in range(2):
            end = (wt @ vh[i]) if t != 0 else vh[i]
            ax.annotate("", xy=end.tolist(), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, lw=1))
    ax.set_aspect("equal")
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"W_t maps the unit circle (S = {s[0]:.2f}, {s[1]:.2f})", fontsize=9)
    return ax
