"""Fit the shared projection W on cached features (encoders frozen, encoded once).

    L = L_pref(D_pref) + lambda * KL(pi_ref || pi)(D_reg)          (PAPER.md section 2)

D_pref holds (x', y_w, y_l) as image embeddings and action indices; D_reg holds clean image
embeddings. Adamax with linear warm-up (10%) and cosine decay, as in the paper; optional BMA
averaging of the iterates with Beta(0.7, 0.7) weights over training progress.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed as dist
from . import losses
from .policy import logprobs
from .projection import SharedProjection


@dataclass
class PreferenceData:
    """Cached features for one preference task (all embeddings L2-normalised)."""

    pref_images: torch.Tensor  # (N, d) images x' of D_pref
    y_w: torch.Tensor  # (N,) preferred action index
    y_l: torch.Tensor  # (N,) dispreferred action index
    texts: torch.Tensor  # (K, d) action set of D_pref
    reg_images: torch.Tensor  # (M, d) clean images of D_reg
    logit_scale: float  # tau
    reg_texts: torch.Tensor | None = None  # (K', d) action set of D_reg (default: texts)

    def __post_init__(self):
        n, d = self.pref_images.shape
        if self.texts.shape[-1] != d or self.reg_images.shape[-1] != d:
            raise ValueError("image and text embeddings must have the same size")
        if len(self.y_w) != n or len(self.y_l) != n:
            raise ValueError(f"y_w and y_l need one entry per preference image ({n})")
        if n == 0 or len(self.reg_images) == 0:
            raise ValueError("D_pref and D_reg must not be empty")
        if (self.y_w == self.y_l).any():
            raise ValueError(f"{int((self.y_w == self.y_l).sum())} preference pairs have y_w == y_l")
        k = len(self.texts)
        if int(self.y_w.max()) >= k or int(self.y_l.max()) >= k or int(min(self.y_w.min(), self.y_l.min())) < 0:
            raise ValueError(f"action indices must lie in [0, {k})")


@dataclass
class TrainConfig:
    method: str = "dpo"
    beta: float = 1.0
    lam: float = 1.0
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 512
    warmup_ratio: float = 0.1
    seed: int = 0
    bma: bool = False

    def __post_init__(self):
        if self.method not in losses.METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {', '.join(losses.METHODS)}")
        if not self.beta > 0 or not math.isfinite(self.beta):
            raise ValueError(f"beta must be a positive number, got {self.beta}")
        if not self.lam >= 0 or not math.isfinite(self.lam):
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, batch_size and lr must be positive")


def lr_at(step: int, total: int, base: float, warmup_ratio: float) -> float:
    """Linear warm-up for warmup_ratio of the steps, then cosine decay to zero."""
    warm = max(1, int(total * warmup_ratio))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def bma_weight(progress: float, a: float = 0.7) -> float:
    """Beta(a, a) density at progress in (0, 1): U-shaped, favours early and late iterates."""
    p = min(max(progress, 1e-6), 1 - 1e-6)
    return p ** (a - 1) * (1 - p) ** (a - 1) / math.exp(2 * math.lgamma(a) - math.lgamma(2 * a))


def preference_loss(method, logp, ref_logp, y_w, y_l, beta, z0=None) -> torch.Tensor:
    """Per-sample L_pref for one batch, (B,) (KTO: the mean of its two terms)."""
    if method == "ce":
        return losses.ce(logp, y_w)
    if method == "kto":
        return losses.kto(logp, ref_logp, y_w, y_l, z0, beta).mean(-1)
    h = losses.preference_margin(logp, ref_logp, y_w, y_l)
    return losses.PAIRED_LOSSES[method](h, beta)


def batch_objective(method: str, beta: float, lam: float, logp, ref_logp, y_w, y_l, logp_reg, ref_logp_reg,
                    batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This process's part of L = L_pref + lambda KL(pi_ref || pi) for a global batch of `batch`
    samples, of which it holds len(y_w): summed over processes it is the global batch mean.
    Returns (loss, pref, kl), each already weighted by this process's share."""
    z0 = None
    if method == "kto":  # the detached KL estimate z0, over the global batch (a collective call)
        local = losses.kl_batch_estimate(logp_reg, ref_logp_reg) if len(y_w) else torch.zeros((), device=logp.device)
        z0 = dist.all_sum(local * len(y_w)) / batch
    if not len(y_w):
        zero = logp.sum() * 0
        return zero, zero, zero
    share = len(y_w) / batch
    pref = share * preference_loss(method, logp, ref_logp, y_w, y_l, beta, z0).mean()
    kl = share * losses.kl_regularizer(logp_reg, ref_logp_reg)
    return pref + lam * kl, pref, kl


@torch.no_grad()
def preference_accuracy(images, texts, y_w, y_l, projection=None) -> float:
    """Share of D_pref where the policy scores y_w above y_l."""
    from .policy import similarities

    s = similarities(images, texts, projection)
    return (s.gather(1, y_w[:, None]) > s.gather(1, y_l[:, None])).float().mean().item()


def _generator(*seed_parts: int) -> torch.Generator:
    """A generator for one epoch or one step, so a resumed run draws exactly what it would have."""
    seed = 0
    for part in seed_parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def rank_batch(step: int, n: int, m: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This process's D_pref and D_reg indices at `step`, and the size of the global batch.

    The global batch is the step's slice of the epoch's seeded shuffle (plus as many random D_reg
    indices); with several processes each takes every world()-th sample of it.
    """
    epoch, i = divmod(step, math.ceil(n / batch_size))
    idx = torch.randperm(n, generator=_generator(seed, epoch))[i * batch_size:(i + 1) * batch_size]
    ridx = torch.randint(0, m, (len(idx),), generator=_generator(seed, epoch, i, 1))
    return idx[dist.rank()::dist.world()], ridx[dist.rank()::dist.world()], len(idx)


def save_checkpoint(path, proj: SharedProjection, opt: torch.optim.Optimizer, step: int, avg: torch.Tensor,
                    avg_w: float, cfg: TrainConfig) -> None:
    """W, the optimiser state and the BMA sums at `step`, as safetensors (atomically)."""
    from .io import save_tensors

    state = opt.state_dict()["state"].get(0, {})  # Adamax: step (a scalar), exp_avg, exp_inf
    tensors = {"weight": proj.weight, "bma_sum": avg, **{f"opt.{k}": torch.atleast_1d(v) for k, v in state.items()}}
    save_tensors(path, tensors, {"step": step, "bma_weight": repr(avg_w), **asdict(cfg)})


def load_checkpoint(path, proj: SharedProjection, opt: torch.optim.Optimizer, cfg: TrainConfig):
    """Restore what save_checkpoint wrote; returns (step, bma_sum, bma_weight)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in asdict(cfg).items():
        if meta.get(k) != str(v):
            raise ValueError(f"checkpoint {path} was written with {k}={meta.get(k)}, not {v}: refusing to resume")
    with torch.no_grad():
        proj.weight.copy_(tensors["weight"])
    state = {k[4:]: (v.reshape(()) if k == "opt.step" else v) for k, v in tensors.items() if k.startswith("opt.")}
    if state:
        sd = opt.state_dict()
        sd["state"] = {0: state}
        opt.load_state_dict(sd)
    return int(meta["step"]), tensors["bma_sum"], float(meta["bma_weight"])


def fit_projection(data: PreferenceData, cfg: TrainConfig, projection: SharedProjection | None = None,
                   progress: bool = True, checkpoint=None, checkpoint_every: int = 0,
                   resume: bool = False) -> tuple[SharedProjection, dict]:
    """Train W on cached features; returns the projection and a per-step history.

    checkpoint: a file that receives W and the optimiser state every `checkpoint_every` steps;
    resume=True continues from it to the same final W as an uninterrupted run.
    """
    d = data.pref_images.shape[-1]
    proj = projection or SharedProjection(d)
    opt = torch.optim.Adamax(proj.parameters(), lr=cfg.lr)
    tau = data.logit_scale
    reg_texts = data.texts if data.reg_texts is None else data.reg_texts
    ref_pref = logprobs(data.pref_images, data.texts, tau)  # (N, K), the frozen pi_ref
    ref_reg = logprobs(data.reg_images, reg_texts, tau)  # (M, K')
    n, m = len(data.pref_images), len(data.reg_images)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = cfg.epochs * steps_per_epoch
    hist = {k: [] for k in ("loss", "pref_loss", "kl", "margin", "pref_acc", "lr")}
    avg, avg_w, start = torch.zeros_like(proj.weight), 0.0, 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        start, avg, avg_w = load_checkpoint(checkpoint, proj, opt, cfg)
    bar = tqdm(total=total, initial=start, desc=f"fit W ({cfg.method})", unit="step", disable=not progress)
    for step in range(start, total):
        # learning rate
        lr = lr_at(step, total, cfg.lr, cfg.warmup_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        # forward: this process's part of a D_pref batch and a D_reg batch of the same size
        idx, ridx, batch = rank_batch(step, n, m, bs, cfg.seed)
        logp = logprobs(data.pref_images[idx], data.texts, tau, proj)  # (b, K)
        logp_reg = logprobs(data.reg_images[ridx], reg_texts, tau, proj)  # (b, K')
        y_w, y_l = data.y_w[idx], data.y_l[idx]
        loss, pref, kl = batch_objective(cfg.method, cfg.beta, cfg.lam, logp, ref_pref[idx], y_w, y_l,
                                         logp_reg, ref_reg[ridx], batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the lr or beta"
                                     + (f" (the last good checkpoint is {checkpoint})" if checkpoint else ""))
        # backward, step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dist.sum_gradients(proj.parameters())
        opt.step()
        # BMA average, log, checkpoint
        if cfg.bma:
            w = bma_weight((step + 0.5) / total)
            avg += w * proj.weight.detach()
            avg_w += w
        with torch.no_grad():
            h = losses.preference_margin(logp, ref_pref[idx], y_w, y_l)
            hist["loss"].append(dist.all_sum(loss.detach()).item())
            hist["pref_loss"].append(dist.all_sum(pref.detach()).item())
            hist["kl"].append(dist.all_sum(kl.detach()).item())
            hist["margin"].append(h.mean().item())
            hist["pref_acc"].append((logp.gather(1, y_w[:, None]) > logp.gather(1, y_l[:, None])).float().mean().item())
            hist["lr"].append(lr)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and dist.is_main():
            save_checkpoint(checkpoint, proj, opt, step + 1, avg, avg_w, cfg)
        bar.set_postfix(loss=f"{loss.item():.3f}", kl=f"{kl.item():.4f}")
        bar.update()
    bar.close()
    if cfg.bma and avg_w > 0:
        with torch.no_grad():
            proj.weight.copy_(avg / avg_w)
    proj.metadata.update({k: str(v) for k, v in asdict(cfg).items()})
    return proj, hist
