"""Baselines that stand beside preference optimisation (docs/method.md section 6), on cached features.

- CE: cross-entropy of pi(.|x') to the true label on attacked images (the paper's own baseline).
- Materzynska et al. 2022: a learned shared projection, orthogonal init, CE on attacked and
  clean images plus the penalty ||I - W W^T||_F^2 that keeps W near orthogonal.
- PAINT (Ilharco et al. 2022): interpolate between the zero-shot and the CE-fine-tuned weights,
  W_alpha = (1 - alpha) I + alpha W_ce, alpha chosen on held-out (validation) images.
- Defense-Prefix (Azuma & Matsui 2023): one learned token placed before the class name in every
  prompt; CE on attacked images plus KL to the original predictions on clean images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from . import losses
from .models import ClipBundle
from .policy import PreferenceData, logprobs, predict
from .projection import SharedProjection
from .train import TrainConfig, fit_projection, loop


def ce_projection(data: PreferenceData, cfg: TrainConfig, progress: bool = True) -> SharedProjection:
    """W trained with cross-entropy to the true label on attacked images (cfg.method "ce")."""
    if cfg.method != "ce":
        raise ValueError(f"ce_projection needs a config with method='ce', not {cfg.method!r}")
    proj, _ = fit_projection(data, cfg, progress=progress)
    return proj


def materzynska_projection(
    data: PreferenceData, cfg: TrainConfig, mu: float = 0.1, progress: bool = True
) -> SharedProjection:
    """L = CE(attacked, true) + CE(clean, argmax pi_ref) + mu ||I - W W^T||_F^2, W from the identity;
    cfg gives the schedule and batches (its method, beta and lambda are not used)."""
    proj = SharedProjection(data.pref_images.shape[-1])
    tau = data.logit_scale
    clean_y = logprobs(data.reg_images, data.texts, tau).argmax(-1)  # zero-shot labels of clean images
    eye = torch.eye(proj.dim)

    def objective(idx, ridx, batch):
        share = len(idx) / batch
        if not len(idx):  # this rank's share of a batch smaller than the number of ranks
            return proj.weight.sum() * 0, {"loss/ortho": torch.zeros(())}
        attacked = losses.ce(logprobs(data.pref_images[idx], data.texts, tau, proj), data.y_w[idx]).mean()
        clean = losses.ce(logprobs(data.reg_images[ridx], data.texts, tau, proj), clean_y[ridx]).mean()
        ortho = (eye - proj.weight @ proj.weight.T).square().sum()
        return share * (attacked + clean + mu * ortho), {"loss/ortho": share * ortho.detach()}

    params = list(proj.parameters())
    n, m = len(data.pref_images), len(data.reg_images)
    loop(params, objective, n, m, cfg, desc="fit W (materzynska)", progress=progress)
    return proj


def paint_interpolate(
    w_finetuned: SharedProjection, alpha: float, w_zeroshot: SharedProjection | None = None
) -> SharedProjection:
    """PAINT: W_alpha = (1 - alpha) W_zeroshot + alpha W_finetuned (W_zeroshot = I by default)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    w0 = torch.eye(w_finetuned.dim) if w_zeroshot is None else w_zeroshot.weight.detach()
    return SharedProjection(w_finetuned.dim, (1 - alpha) * w0 + alpha * w_finetuned.weight.detach())


def paint_select_alpha(
    w_finetuned: SharedProjection,
    images: torch.Tensor,
    texts: torch.Tensor,
    alphas: Iterable[float] | None = None,
    max_drop: float = 1.0,
) -> float:
    """The largest alpha whose predictions on held-out clean `images` (e.g. the validation split)
    change from the zero-shot ones on at most max_drop percent, as PAINT picks its mixing coefficient."""
    alphas = [i / 10 for i in range(11)] if alphas is None else alphas
    zs = predict(images, texts)
    best = 0.0
    for a in alphas:
        agree = (predict(images, texts, paint_interpolate(w_finetuned, a)) == zs).float().mean().item()
        if 100 * (1 - agree) <= max_drop:
            best = max(best, a)
    return best


# --- Defense-Prefix: a learned token before the class name ------------------------------------

PREFIX_MARKER = "X"


def encode_text_with_prefix(
    model: torch.nn.Module, tokens: torch.Tensor, marker_id: int, prefix: torch.Tensor
) -> torch.Tensor:
    """open_clip CLIP.encode_text with the marker token's embedding replaced by `prefix` (width,)."""
    from open_clip.transformer import text_global_pool

    x = model.token_embedding(tokens)  # (K, L, width)
    x = torch.where((tokens == marker_id)[..., None], prefix.to(x.dtype), x)
    x = x + model.positional_embedding[: tokens.shape[1]].to(x.dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(
        x, tokens, getattr(model, "text_pool_type", "argmax"), eos_token_id=getattr(model, "text_eos_id", None)
    )
    if isinstance(model.text_projection, torch.nn.Linear):
        x = model.text_projection(x)
    else:
        x = x @ model.text_projection
    return F.normalize(x, dim=-1)


def defense_prefix(
    bundle: ClipBundle,
    class_names: Sequence[str],
    template: str,
    data: PreferenceData,
    cfg: TrainConfig,
    progress: bool = True,
) -> torch.Tensor:
    """Learn one prefix token for "template with 'X {class}'"; returns the (K, d) prompt embeddings.

    L = CE(attacked, true) + cfg.lam KL(pi_ref || pi)(clean). `template` contains "{}" for the
    class name, e.g. "a photo of a {}."; the learned token goes right before the class name. Only
    the token trains: both encoders stay frozen.
    """
    model, tok = bundle.model, bundle.tokenizer
    if not hasattr(model, "token_embedding") or not hasattr(model, "text_projection"):
        raise ValueError(
            f"Defense-Prefix edits CLIP's text tower token by token; {type(model).__name__} models "
            "(EVA02, SigLIP, MobileCLIP, ...) keep theirs elsewhere, so this baseline is not available for them"
        )
    prompts = [template.format(f"{PREFIX_MARKER} {c}") for c in class_names]
    tokens = tok(prompts).to(bundle.device)
    marker_id = int(tok([PREFIX_MARKER])[0, 1])
    if not (tokens == marker_id).any(dim=1).all():
        raise ValueError("the prefix marker did not survive tokenisation")
    with torch.no_grad():  # start from the embedding of the word "a": a near-neutral token
        init = model.token_embedding(tok(["a"])[:, 1].to(bundle.device))[0].float()
    prefix = torch.nn.Parameter(init.clone())
    tau = data.logit_scale
    ref_reg = logprobs(data.reg_images, data.texts, tau)

    def objective(idx, ridx, batch):
        share = len(idx) / batch
        if not len(idx):
            return prefix.sum() * 0, {"loss/kl": torch.zeros(())}
        texts = encode_text_with_prefix(model, tokens, marker_id, prefix).float().cpu()  # (K, d)
        ce = losses.ce(logprobs(data.pref_images[idx], texts, tau), data.y_w[idx]).mean()
        kl = losses.kl_regularizer(logprobs(data.reg_images[ridx], texts, tau), ref_reg[ridx])
        return share * (ce + cfg.lam * kl), {"loss/kl": share * kl.detach()}

    n, m = len(data.pref_images), len(data.reg_images)
    loop([prefix], objective, n, m, cfg, desc="fit Defense-Prefix", progress=progress)
    with torch.no_grad():
        return encode_text_with_prefix(model, tokens, marker_id, prefix).float().cpu()
