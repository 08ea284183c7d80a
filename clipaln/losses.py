"""Preference losses for a CLIP policy (PAPER.md section 2), each a few lines beside its equation.

Shapes: logp, ref_logp are (N, K) log-probabilities over the action set (policy.logprobs);
y_w, y_l are (N,) indices of the preferred and dispreferred action; h is (N,).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _take(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if logp.ndim != 2 or y.ndim != 1 or len(y) != len(logp):
        raise ValueError(f"expected (N, K) log-probabilities and (N,) indices, got {tuple(logp.shape)} and {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= logp.shape[1]):
        raise ValueError(f"action indices must lie in [0, {logp.shape[1]})")
    return logp.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)  # (N,)


def preference_margin(logp, ref_logp, y_w, y_l) -> torch.Tensor:
    """h = [log pi(y_w|x) - log pi(y_l|x)] - [log pi_ref(y_w|x) - log pi_ref(y_l|x)], (N,).

    With the text encoder frozen the softmax normalisers cancel inside each bracket, so
    h = tau [(s(y_w,x) - s(y_l,x)) - (s_ref(y_w,x) - s_ref(y_l,x))] (Lemma 3.1 of Afzali et al. 2025).
    """
    return (_take(logp, y_w) - _take(logp, y_l)) - (_take(ref_logp, y_w) - _take(ref_logp, y_l))


def dpo(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO, L = -log sigmoid(beta * h) (Eq. 7 of Rafailov et al. 2023, arXiv 2305.18290), (N,)."""
    return -F.logsigmoid(beta * h)


def ipo(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO, L = (h - 1/(2 beta))^2 (Eq. 17 of Azar et al. 2023, arXiv 2310.12036), (N,)."""
    return (h - 1 / (2 * beta)) ** 2


def kto(logp, ref_logp, y_w, y_l, z0, beta: float) -> torch.Tensor:
    """KTO, unpaired form (Ethayarajh et al. 2024, arXiv 2402.01306), per-sample (N, 2).

    r(y) = log pi(y|x) - log pi_ref(y|x);  column 0: 1 - sigmoid(beta (r(y_w) - z0)) (desirable),
    column 1: 1 - sigmoid(beta (z0 - r(y_l))) (undesirable). z0 estimates KL(pi || pi_ref): it is
    detached and clamped at 0 (as in the KTO paper), so it only sets the reference point.
    """
    z0 = torch.as_tensor(z0, dtype=logp.dtype, device=logp.device).detach().clamp(min=0)
    r_w = _take(logp, y_w) - _take(ref_logp, y_w)
    r_l = _take(logp, y_l) - _take(ref_logp, y_l)
    return torch.stack([1 - torch.sigmoid(beta * (r_w - z0)), 1 - torch.sigmoid(beta * (z0 - r_l))], dim=-1)


def kl_batch_estimate(logp, ref_logp) -> torch.Tensor:
    """z0 for KTO: batch mean of KL(pi || pi_ref) on reference (clean) images, detached, >= 0."""
    return (logp.exp() * (logp - ref_logp)).sum(-1).mean().detach().clamp(min=0)


def kl_regularizer(logp, ref_logp) -> torch.Tensor:
    """L_reg = mean_x KL(pi_ref(.|x) || pi(.|x)) on clean images (PAPER.md section 2), scalar."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"policy and reference log-probabilities differ in shape: {tuple(logp.shape)} vs {tuple(ref_logp.shape)}")
    return F.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")


def ce(logp, y) -> torch.Tensor:
    """Cross-entropy of pi(.|x') to the true label, the paper's "CE" baseline, (N,)."""
    return -_take(logp, y)


def gradient_weight(method: str, h: torch.Tensor, beta: float) -> torch.Tensor:
    """-dL/dh per sample: how hard each loss pushes I(x) along T(y_w) - T(y_l).

    DPO: beta * sigmoid(-beta h), fades once h is large; IPO: 2 (1/(2 beta) - h), a spring
    to the target margin 1/(2 beta) that pulls back when h overshoots; KTO (desirable half, z0 = 0):
    beta * sigmoid(beta h) * sigmoid(-beta h), a bump that ignores both easy and hopeless samples.
    """
    if method == "dpo":
        return beta * torch.sigmoid(-beta * h)
    if method == "ipo":
        return 2 * (1 / (2 * beta) - h)
    if method == "kto":
        return beta * torch.sigmoid(beta * h) * torch.sigmoid(-beta * h)
    raise ValueError(f"unknown method {method!r}; use one of dpo, ipo, kto")


PAIRED_LOSSES = {"dpo": dpo, "ipo": ipo}
METHODS = ("dpo", "ipo", "kto", "ce")
