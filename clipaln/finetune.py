"""Full fine-tuning (`--mode full`): the image encoder trains, as in the authors' code.

The text encoder stays frozen (its class embeddings are computed once), and the reference policy
is the frozen model before training, whose log-probabilities are computed once from cached
features. On a GPU: bf16 autocast and gradient checkpointing. Training runs in train.loop, so
under torchrun each rank takes its share of every global batch and the gradients are summed.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F

from .features import encode_images
from .models import ClipBundle
from .policy import logprobs
from .train import TrainConfig, loop, preference_objective


def finetune_image_encoder(
    bundle: ClipBundle,
    attacked: torch.Tensor,
    clean: torch.Tensor,
    y_w: torch.Tensor,
    y_l: torch.Tensor,
    texts: torch.Tensor,
    cfg: TrainConfig,
    progress: bool = True,
    grad_checkpointing: bool | None = None,
    ref_attacked: torch.Tensor | None = None,
    ref_clean: torch.Tensor | None = None,
) -> tuple[ClipBundle, dict]:
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
        ref_attacked = encode_images(bundle, attacked, progress=False)
        ref_clean = encode_images(bundle, clean, progress=False)
    ref_pref = logprobs(ref_attacked.to(device), texts, tau)  # (N, K)
    ref_reg = logprobs(ref_clean.to(device), texts, tau)  # (M, K)
    model = copy.deepcopy(bundle.model)
    visual = model.visual
    visual.train()
    for p in visual.parameters():
        p.requires_grad_(True)
    if grad_checkpointing if grad_checkpointing is not None else cuda:
        visual.set_grad_checkpointing(True)

    def objective(idx, ridx, batch):
        x = torch.cat([attacked[idx], clean[ridx]]).to(device)  # (2b, 3, H, W)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            emb = F.normalize(visual(x).float(), dim=-1)  # (2b, d)
        logp, logp_reg = logprobs(emb[: len(idx)], texts, tau), logprobs(emb[len(idx) :], texts, tau)
        idx, ridx = idx.to(device), ridx.to(device)
        return preference_objective(
            cfg, logp, ref_pref[idx], y_w.to(device)[idx], y_l.to(device)[idx], logp_reg, ref_reg[ridx], batch
        )

    params = [p for p in visual.parameters()]
    # BMA averages the whole state (BatchNorm statistics included); state_dict() shares storage
    hist = loop(
        params,
        objective,
        len(attacked),
        len(clean),
        cfg,
        desc=f"fine-tune image encoder ({cfg.method})",
        progress=progress,
        bma_state=visual.state_dict(),
    )
    visual.set_grad_checkpointing(False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return replace(bundle, model=model), hist
