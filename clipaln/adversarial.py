"""Online adversarial preference training (Afzali et al., ICLR 2025, App. K) and PGD robustness.

PGD (Madry et al., ICLR 2018) looks for a perturbation delta with ||delta||_inf <= eps, in pixel
space ([0, 1] before the model's normalisation), that maximises the policy's cross-entropy:

    delta <- clip_eps(delta + alpha * sign(grad_delta CE(tau s(., x + delta), y))),  from a uniform start.

Online adversarial preference training crafts such perturbations of each batch against the
*current* policy and trains on them as D_pref: y_w = the true class, y_l = the class the attack
pushed the policy towards (its highest-scoring wrong class on the perturbed image); the reference
log-probabilities are the frozen model's on the same perturbed images. D_reg is the clean images,
KL to the frozen model, as in every track. The image encoder is in the loop twice: the attack needs
its input gradient, and its weights train (a shared projection W after a frozen encoder cannot
undo a perturbation made in pixel space). The text encoder and tau stay frozen; BatchNorm layers
keep their statistics (the model stays in eval mode, so crafting never moves them).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .models import ClipBundle
from .policy import logprobs, predict
from .train import TrainConfig, loop, preference_objective


def pixel_stats(bundle: ClipBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std (3, 1, 1) of the model's preprocessing, to move between normalised inputs
    and [0, 1] pixels."""
    for t in getattr(bundle.preprocess, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1)
            return as_tensor(t.mean), as_tensor(t.std)
    raise ValueError("the model's preprocessing has no Normalize step: cannot tell pixels from inputs")


def _embed(visual, x: torch.Tensor) -> torch.Tensor:
    # channels-last: oneDNN's fast layout for convolutions (PGD on the toy's ResNet: 1.3x on 2 cores)
    return F.normalize(visual(x.contiguous(memory_format=torch.channels_last)).float(), dim=-1)


def pgd(
    visual: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    texts: torch.Tensor,
    logit_scale: float,
    stats: tuple[torch.Tensor, torch.Tensor],
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L_inf PGD on preprocessed images (N, 3, H, W) against the zero-shot classifier
    `texts` (K, d) on top of `visual`; returns the perturbed images, preprocessed. eps and
    step_size (default 2.5 eps / steps) are in [0, 1] pixel units (8/255 is eight grey levels)."""
    if eps < 0 or steps < 1:
        raise ValueError(f"PGD needs eps >= 0 and steps >= 1, got eps={eps}, steps={steps}")
    device = images.device
    mean, std = (s.to(device) for s in stats)
    pixels = images.detach() * std + mean
    alpha = 2.5 * eps / steps if step_size is None else step_size
    noise = torch.rand(pixels.shape, generator=generator, device="cpu").to(device)
    # project onto the ball and onto valid pixels after every move: a pixel left outside [0, 1]
    # would sit behind the clamp with zero gradient and never move again
    project = lambda d: (pixels + d.clamp(-eps, eps)).clamp(0, 1) - pixels
    delta = project((2 * noise - 1) * eps)
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            x = (pixels + delta - mean) / std
            loss = F.cross_entropy(logprobs(_embed(visual, x), texts, logit_scale), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = project(delta.detach() + alpha * grad.sign())
    return ((pixels + delta - mean) / std).detach()


def robust_accuracy(
    bundle: ClipBundle,
    images: Any,
    labels: torch.Tensor,
    texts: torch.Tensor,
    eps: float,
    steps: int = 10,
    batch_size: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Zero-shot accuracy on clean images and under PGD-`steps` of radius eps (fractions), over
    `images` (a tensor or anything `[idx]` turns into a preprocessed batch)."""
    visual, device = bundle.model.visual, bundle.device
    texts, stats = texts.to(device), pixel_stats(bundle)
    gen = torch.Generator().manual_seed(seed)
    clean = robust = 0
    for start in tqdm(range(0, len(labels), batch_size), desc=f"PGD-{steps}", disable=not progress):
        idx = torch.arange(start, min(start + batch_size, len(labels)))
        x, y = images[idx].to(device), labels[idx].to(device)
        x_adv = pgd(visual, x, y, texts, bundle.logit_scale, stats, eps, steps, generator=gen)
        with torch.no_grad():
            clean += predict(visual(x).float(), texts).eq(y).sum().item()
            robust += predict(visual(x_adv).float(), texts).eq(y).sum().item()
    return {
        "accuracy/clean": clean / len(labels),
        "accuracy/pgd": robust / len(labels),
        "pgd/eps": eps,
        "pgd/steps": steps,
    }


def adversarial_finetune(
    bundle: ClipBundle,
    images: Any,
    labels: torch.Tensor,
    texts: torch.Tensor,
    cfg: TrainConfig,
    eps: float,
    pgd_steps: int = 3,
    progress: bool = True,
) -> tuple[ClipBundle, dict]:
    """Fine-tune a copy of the image encoder on PGD perturbations of `images` (N preprocessed clean
    images: a tensor or a features.PreprocessedView) crafted against the current policy at every
    step (D_pref, see the module docstring), with the clean images as D_reg. Returns a new frozen
    bundle and the history (with "pgd/fooled": the share of each batch the attack fooled)."""
    device, tau = bundle.device, bundle.logit_scale
    texts, stats = texts.to(device), pixel_stats(bundle)
    frozen = bundle.model.visual
    model = copy.deepcopy(bundle.model)
    model.eval()
    visual = model.visual
    params = list(visual.parameters())
    gen = torch.Generator().manual_seed(cfg.seed)

    def objective(idx, ridx, batch):
        if not len(idx):  # this process's share of a small last batch is empty (torchrun): same logs, zero
            empty = torch.zeros(0, len(texts), device=device) + sum(p.sum() for p in params) * 0
            none = torch.zeros(0, dtype=torch.long, device=device)
            loss, logs = preference_objective(cfg, empty, empty, none, none, empty, empty, batch)
            return loss, {**logs, "pgd/fooled": loss.detach() * 0}
        x, y, clean = images[idx].to(device), labels[idx].to(device), images[ridx].to(device)
        for p in params:
            p.requires_grad_(False)
        x_adv = pgd(visual, x, y, texts, tau, stats, eps, pgd_steps, generator=gen)
        for p in params:
            p.requires_grad_(True)
        with torch.no_grad():
            ref = logprobs(_embed(frozen, torch.cat([x_adv, clean])), texts, tau)
        logp_all = logprobs(_embed(visual, torch.cat([x_adv, clean])), texts, tau)
        logp, logp_reg = logp_all[: len(idx)], logp_all[len(idx) :]
        wrong = logp.detach().scatter(1, y[:, None], float("-inf"))
        y_l = wrong.argmax(-1)  # where the attack pushed the policy
        loss, logs = preference_objective(cfg, logp, ref[: len(idx)], y, y_l, logp_reg, ref[len(idx) :], batch)
        logs["pgd/fooled"] = len(idx) / batch * logp.detach().argmax(-1).ne(y).float().mean()
        return loss, logs

    hist = loop(params, objective, len(labels), len(labels), cfg, desc=f"adversarial {cfg.method}", progress=progress)
    for p in model.parameters():
        p.requires_grad_(False)
    return replace(bundle, model=model), hist
