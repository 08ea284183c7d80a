"""Hold a per-sample loss written from its equation (notebook 01, exercise 5) against one of clipaln's:
values and gradients on margins from a pair lost badly to one won by far, with one sentence for each
typical mistake."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .losses import dpo


def check_against(candidate: Callable, reference: Callable = dpo, betas: tuple[float, ...] = (0.1, 1.0, 2.5)) -> str:
    """Hold a per-sample loss L(h, beta) written from its equation (notebook 01, exercise 5) against
    one of these: values and gradients on margins from -200 (a pair lost badly) to 200, at each beta.

    Raises an AssertionError whose one sentence names what is wrong: a batch mean where one value per
    pair is wanted, beta dropped, the sign of h flipped, or the first margin where they differ.
    Returns a one-line summary."""
    h = torch.cat([torch.linspace(-20, 20, 401), torch.tensor([-200.0, -100.0, 100.0, 200.0])])
    for beta in betas:
        h_candidate, h_ref = h.clone().requires_grad_(), h.clone().requires_grad_()
        got, want = candidate(h_candidate, beta), reference(h_ref, beta)
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"your loss returns {type(got).__name__}, not a tensor with one value per pair")
        if got.shape != want.shape:
            shape = tuple(got.shape)
            raise AssertionError(
                f"your loss returns {shape} for {len(h)} margins where one value per pair, shape {tuple(want.shape)}, "
                "is wanted: a per-sample loss takes no mean or sum over the batch"
            )
        close = lambda a, b: torch.isclose(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        if beta != 1.0 and close(got, reference(h, 1.0)).all():
            raise AssertionError(f"your loss ignores beta: at beta = {beta:g} it equals clipaln's loss at beta = 1")
        if not close(got, want).all() and close(got, reference(-h, beta)).all():
            raise AssertionError("your loss has the sign of h flipped: it is smallest for pairs lost badly")
        if got.requires_grad:  # a loss detached from h has no gradient: it shows as the gradient check's 0
            got.sum().backward()
        want.sum().backward()
        grad = h_candidate.grad if h_candidate.grad is not None else torch.zeros_like(h)
        for what, a, b in (("loss", got, want), ("gradient", grad, h_ref.grad)):
            bad = ~close(a, b)
            if bad.any():
                i = int(bad.nonzero()[0])
                raise AssertionError(f"at h = {h[i]:g} and beta = {beta:g} your {what} is {a[i]:g}, clipaln's {b[i]:g}")
    return (
        f"matches clipaln.losses.{reference.__name__} on all {len(h)} margins at beta = "
        f"{', '.join(f'{b:g}' for b in betas)}, values and gradients"
    )
