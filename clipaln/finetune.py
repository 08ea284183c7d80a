"""Full fine-tuning (`--mode full`): the image encoder trains, as in the authors' code.

The text encoder stays frozen (its class embeddings are computed once), and the reference policy
is the frozen model before training, whose log-probabilities are computed once from cached
features. On a GPU: bf16 autocast and gradient checkpointing. Under torchrun the encoder is
wrapped in DistributedDataParallel and each rank takes its share of every global batch.
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as dist
from .features import encode_images
from .models import ClipBundle
from .policy import logprobs
from .train import TrainConfig, batch_objective, bma_weight, lr_at, rank_batch


def finetune_image_encoder(bundle: ClipBundle, attacked: torch.Tensor, clean: torch.Tensor, y_w: torch.Tensor,
                           y_l: torch.Tensor, texts: torch.Tensor, cfg: TrainConfig, progress: bool = True,
                           grad_checkpointing: bool | None = None, ref_attacked: torch.Tensor | None = None,
                           ref_clean: torch.Tensor | None = None) -> tuple[ClipBundle, dict]:
    """Fine-tune a copy of the image encoder on preprocessed images; returns a new frozen bundle.

    attacked (N, 3, H, W) with y_w, y_l: D_pref; clean (M, 3, H, W): D_reg; texts (K, d): the
    frozen class embeddings. ref_attacked / ref_clean: the frozen model's embeddings of the same
    images when they are already cached (otherwise they are encoded here).
    """
    device = bundle.device
    cuda = device.type == "cuda"
    tau = bundle.logit_scale
    texts = texts.to(device)
    if ref_attacked is None or ref_clean is None:
        ref_attacked, ref_clean = encode_images(bundle, attacked, progress=False), encode_images(bundle, clean, progress=False)
    ref_pref = logprobs(ref_attacked.to(device), texts, tau)  # (N, K)
    ref_reg = logprobs(ref_clean.to(device), texts, tau)  # (M, K)
    model = copy.deepcopy(bundle.model)
    visual = model.visual
    visual.train()
    for p in visual.parameters():
        p.requires_grad_(True)
    if grad_checkpointing if grad_checkpointing is not None else cuda:
        visual.set_grad_checkpointing(True)
    net = visual
    if dist.active():
        net = torch.nn.parallel.DistributedDataParallel(visual, device_ids=[device.index] if cuda else None)
    opt = torch.optim.Adamax(visual.parameters(), lr=cfg.lr)
    n, m = len(attacked), len(clean)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = cfg.epochs * steps_per_epoch
    avg = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in visual.state_dict().items()} if cfg.bma else None
    avg_w = 0.0
    hist = {k: [] for k in ("loss", "kl", "lr")}
    bar = tqdm(range(total), desc=f"fine-tune image encoder ({cfg.method})", disable=not progress or not dist.is_main())
    for step in bar:
        # learning rate
        lr = lr_at(step, total, cfg.lr, cfg.warmup_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        # this process's part of the global D_pref and D_reg batches
        idx, ridx, batch = rank_batch(step, n, m, bs, cfg.seed)
        x = torch.cat([attacked[idx], clean[ridx]]).to(device)  # (2b, 3, H, W)
        # forward
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            emb = F.normalize(net(x).float(), dim=-1)  # (2b, d)
        logp, logp_reg = logprobs(emb[: len(idx)], texts, tau), logprobs(emb[len(idx):], texts, tau)
        loss, _, kl = batch_objective(cfg.method, cfg.beta, cfg.lam, logp, ref_pref[idx.to(device)], y_w[idx].to(device),
                                      y_l[idx].to(device), logp_reg, ref_reg[ridx.to(device)], batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the lr")
        # backward, step (DDP averages gradients; scale back to a sum of weighted shares)
        opt.zero_grad(set_to_none=True)
        (loss * dist.world() if dist.active() else loss).backward()
        opt.step()
        # BMA and log
        if avg is not None:
            w = bma_weight((step + 0.5) / total)
            for k, v in visual.state_dict().items():
                avg[k] += w * v.float()
            avg_w += w
        hist["loss"].append(dist.all_sum(loss.detach()).item())
        hist["kl"].append(dist.all_sum(kl.detach()).item())
        hist["lr"].append(lr)
        bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}")
    if avg is not None:
        visual.load_state_dict({k: (avg[k] / avg_w).to(v.dtype) for k, v in visual.state_dict().items()})
    visual.set_grad_checkpointing(False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return replace(bundle, model=model), hist
