"""Full fine-tuning (`--mode full`): the image encoder trains, and with `--train-text` the text
encoder too, as in the authors' code (which also trains logit_scale; we keep tau fixed).

With the text encoder frozen its class embeddings are computed once; the reference policy
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


def finetune_encoders(
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
    prompts: list[str] | None = None,
) -> tuple[ClipBundle, dict]:
    """Fine-tune a copy of the image encoder (and, given `prompts`, the text encoder too, as the
    authors' code does) on preprocessed images; returns a new frozen bundle.

    attacked (N, 3, H, W) with y_w, y_l: D_pref; clean (M, 3, H, W): D_reg (tensors, or anything
    that `[idx]` turns into a batch, such as features.PreprocessedView, which streams); texts (K, d): the
    frozen model's class embeddings (the reference's, and the policy's when the text encoder stays
    frozen); prompts: the K class prompts, to re-encode with the training text encoder at every step.
    ref_attacked / ref_clean: the frozen model's embeddings of the same images when they are already
    cached (otherwise they are encoded here). tau stays fixed.
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
    model.train()
    trained = {n: p for n, p in model.named_parameters() if n != "logit_scale" and (prompts or n.startswith("visual."))}
    for p in trained.values():
        p.requires_grad_(True)
    if grad_checkpointing if grad_checkpointing is not None else cuda:
        model.set_grad_checkpointing(True)
    tokens = bundle.tokenizer(list(prompts)).to(device) if prompts else None

    def objective(idx, ridx, batch):
        x = torch.cat([attacked[idx], clean[ridx]]).to(device)  # (2b, 3, H, W)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            emb = F.normalize(visual(x).float(), dim=-1)  # (2b, d)
            now = texts if tokens is None else F.normalize(model.encode_text(tokens).float(), dim=-1)  # (K, d)
        logp, logp_reg = logprobs(emb[: len(idx)], now, tau), logprobs(emb[len(idx) :], now, tau)
        idx, ridx = idx.to(device), ridx.to(device)
        return preference_objective(
            cfg, logp, ref_pref[idx], y_w.to(device)[idx], y_l.to(device)[idx], logp_reg, ref_reg[ridx], batch
        )

    # BMA averages the whole state (BatchNorm statistics included); state_dict() shares storage
    state = {k: v for k, v in model.state_dict().items() if k != "logit_scale" and (prompts or k.startswith("visual."))}
    what = "both encoders" if prompts else "image encoder"
    hist = loop(
        list(trained.values()),
        objective,
        len(attacked),
        len(clean),
        cfg,
        desc=f"fine-tune {what} ({cfg.method})",
        progress=progress,
        bma_state=state,
    )
    model.set_grad_checkpointing(False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return replace(bundle, model=model), hist
