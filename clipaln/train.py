"""The one training loop, and W fitted with it on cached features (encoders frozen, encoded once).

    L = L_pref(D_pref) + lambda * KL(pi_ref || pi)(D_reg)          (docs/method.md section 2)

`loop` is the only training loop of the package: W (`fit_projection`), full fine-tuning, the
baselines, the speed bench's in-loop recipe and the toy pretraining all call it, so they share
the seeded batch selection (`rank_batch`), the schedule (`lr_at`: linear warm-up, then cosine),
BMA averaging (Beta(0.7, 0.7) weights over training progress, the initial model included, as the
authors do), checkpoints and torchrun support.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed as dist
from . import losses
from .checkpoints import check_checkpoint, checkpoint_step, load_checkpoint, save_checkpoint
from .config import SCHEDULES, TrainConfig, read_config
from .policy import PreferenceData, logprobs, similarities
from .projection import SharedProjection, orthogonality_gap

__all__ = [
    "check_checkpoint",
    "checkpoint_step",
    "load_checkpoint",
    "read_config",
    "save_checkpoint",
    "PreferenceData",
    "SCHEDULES",
    "TrainConfig",
    "fit_projection",
    "loop",
    "lr_at",
    "rank_batch",
    "bma_weight",
]


def lr_at(step: int, total: int, base: float, warmup_ratio: float, kind: str = "cosine") -> float:
    """Linear warm-up for warmup_ratio of the steps, then (kind, transformers' lr_scheduler_type)
    cosine or linear decay to zero, or the base rate; "constant" has no warm-up."""
    warm = 0 if kind == "constant" else max(1, int(total * warmup_ratio))
    if step < warm:
        return base * (step + 1) / warm
    if kind in ("constant", "constant_with_warmup"):
        return base
    progress = (step - warm) / max(1, total - warm)
    if kind == "linear":
        return base * (1 - progress)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def global_batch(cfg: TrainConfig) -> int:
    """The samples of one optimiser step over every rank: batch_size, or TRL's
    per_device_train_batch_size x ranks x gradient_accumulation_steps."""
    if cfg.per_device_train_batch_size is not None:
        return cfg.per_device_train_batch_size * dist.world() * cfg.gradient_accumulation_steps
    return cfg.batch_size


def bma_weight(progress: float, a: float = 0.7) -> float:
    """Beta(a, a) density at progress in (0, 1): U-shaped, favours early and late iterates."""
    p = min(max(progress, 1e-6), 1 - 1e-6)
    return p ** (a - 1) * (1 - p) ** (a - 1) / math.exp(2 * math.lgamma(a) - math.lgamma(2 * a))


def generator(*seed_parts: int) -> torch.Generator:
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
    idx = torch.randperm(n, generator=generator(seed, epoch))[i * batch_size : (i + 1) * batch_size]
    ridx = torch.randint(0, m, (len(idx),), generator=generator(seed, epoch, i, 1))
    return idx[dist.rank() :: dist.world()], ridx[dist.rank() :: dist.world()], len(idx)


# --- the loop ---------------------------------------------------------------------------------

#: objective(idx, ridx, batch) -> (loss, logs): this process's part of the loss of a global batch
#: of `batch` samples (summed over processes it is the global batch mean), and named scalars
#: weighted the same way, so their sum over processes is the global value.
Objective = Callable[[torch.Tensor, torch.Tensor, int], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def loop(
    params: list[torch.nn.Parameter],
    objective: Objective,
    n: int,
    m: int,
    cfg: TrainConfig,
    *,
    desc: str = "train",
    progress: bool = True,
    steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    bma_state: dict[str, torch.Tensor] | None = None,
    clip_grad: float | None = None,
    after_step: Callable[[], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    identity: dict | None = None,
    report: Callable[[int, dict], None] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int = 0,
    gradients_synced: bool = False,
) -> dict[str, list[float]]:
    """Minimise `objective` over `params` for cfg.epochs epochs of n samples (or `steps` steps).

    n, m: sizes of D_pref and D_reg (the batch indices the objective receives); optimizer:
    Adamax at cfg.lr unless given (a param group's "lr_mult" scales its rate); bma_state: the
    tensors BMA averages and checkpoints hold (default: params); checkpoint: a file that receives
    them every `checkpoint_every` steps, and that resume=True continues from, to the same result
    as an uninterrupted run; identity: what else a resumed checkpoint must match (model weights,
    data; a run's manifest entries); report: called with (step, that step's logs) after every step
    (clipaln.reporting writes them to TensorBoard or W&B); evaluate: called every `eval_every` steps
    on the current iterate and, for the last step, on the W that is returned (the BMA average when
    cfg.bma), its metrics logged under "eval/" (None in the history at the other steps). Returns the
    history of every step ("step", "loss", "loss/total", "learning_rate", "grad_norm", "elapsed_s" and
    the objective's logs; "loss" is the objective's own where its logs name one, else the total); a
    resumed run's holds the steps before its checkpoint too, each once, and its elapsed_s goes on
    from theirs. gradients_synced: the backward pass already sums the ranks' gradients (DDP).
    """
    opt = optimizer or torch.optim.Adamax(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = bma_state if bma_state is not None else {str(i): p for i, p in enumerate(params)}
    bs = min(global_batch(cfg), n)
    clip_grad = clip_grad if clip_grad is not None else cfg.max_grad_norm
    total = steps if steps is not None else cfg.epochs * math.ceil(n / bs)
    # BMA, as the authors do it: the initial model (point 0) and every iterate (points 1..total),
    # weighted by the Beta(0.7, 0.7) density at the middle of their share of training progress
    bma_at = lambda point: bma_weight((point + 0.5) / (total + 1))
    avg = {k: bma_at(0) * v.detach().float() for k, v in state.items()} if cfg.bma else {}
    avg_w, start = (bma_at(0) if cfg.bma else 0.0), 0
    run = {**(identity or {}), "n": n, "m": m, "total_steps": total}
    if resume and checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {checkpoint}")
        start, avg, avg_w, before = load_checkpoint(checkpoint, state, opt, cfg, run)
    hist: dict[str, list[float]] = {"step": [], "loss": [], "loss/total": [], "learning_rate": [], "grad_norm": []}
    hist["elapsed_s"] = []
    if start:  # the steps before the checkpoint, each once; a column they lack holds None there
        hist.update({k: v[:start] for k, v in before.items()})
        for column in hist.values():
            column[:0] = [None] * (start - len(column))
    t0 = time.perf_counter() - (hist["elapsed_s"][-1] if hist["elapsed_s"] else 0.0)
    bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not progress or not dist.is_main())
    for step in range(start, total):
        # learning rate
        lr = lr_at(step, total, cfg.lr, cfg.warmup_ratio, cfg.lr_scheduler_type)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        # forward and backward: this process's part of a global D_pref batch and a D_reg batch of the
        # same size, in gradient_accumulation_steps micro-batches whose gradients add up
        idx, ridx, batch = rank_batch(step, n, m, bs, cfg.seed)
        opt.zero_grad(set_to_none=True)
        loss, logs = _forward_backward(objective, idx, ridx, batch, cfg.gradient_accumulation_steps)
        finite = dist.all_sum(torch.isfinite(loss).float()).item() == dist.world()  # every rank stops together
        if not finite:
            saved = checkpoint is not None and Path(checkpoint).is_file()  # none before the first save
            last = f" (the last good checkpoint is {checkpoint}: --resume continues from it)" if saved else ""
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the lr or beta{last}")
        # step (each process holds its weighted share: summed gradients are the global ones)
        if not gradients_synced:
            dist.sum_gradients(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad is not None else math.inf)
        if float(grad_norm) >= cfg.min_grad_norm:  # below: rounding at the minimum, not a direction (no step)
            opt.step()
        if after_step is not None:
            after_step()
        # BMA average, log, checkpoint
        if cfg.bma:
            w = bma_at(step + 1)
            for k, v in state.items():
                avg[k] += w * v.detach().float()
            avg_w += w
        # "loss" is the objective's own (TRL's: the preference loss) where it names one; what was
        # minimised, with the KL and the penalty, is "loss/total"
        row = {k: dist.all_sum(v).item() for k, v in {"loss": loss, "loss/total": loss, **logs}.items()}
        row |= {"learning_rate": lr, "grad_norm": float(grad_norm), "elapsed_s": round(time.perf_counter() - t0, 3)}
        if evaluate is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < total:
            with torch.no_grad():
                row |= {f"eval/{k}": float(v) for k, v in evaluate().items()}
        done = len(hist["step"])
        for k, v in {"step": step, **row}.items():
            hist.setdefault(k, [None] * done).append(v)
        for column in hist.values():  # a step without an eval: None there
            column.extend([None] * (done + 1 - len(column)))
        if report is not None and dist.is_main():
            report(step, row)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and dist.is_main():
            save_checkpoint(checkpoint, state, opt, step + 1, avg, avg_w, cfg, run, history=hist)
        bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}")
        bar.update()
    bar.close()
    if cfg.bma and avg_w > 0:
        with torch.no_grad():
            for k, v in state.items():
                v.copy_((avg[k] / avg_w).to(v.dtype))
    if evaluate is not None and eval_every and hist["step"]:  # the last row: the W that is saved (BMA's)
        with torch.no_grad():
            final = {f"eval/{k}": float(v) for k, v in evaluate().items()}
        for k, v in final.items():
            hist.setdefault(k, [None] * len(hist["step"]))[-1] = v
        if report is not None and dist.is_main():
            report(total - 1, final)
    return hist


def _forward_backward(
    objective: Objective, idx: torch.Tensor, ridx: torch.Tensor, batch: int, micro_batches: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective's loss and logs over this process's indices (detached, summed over micro-batches),
    each micro-batch's backward done: the gradients add up to the whole share's."""
    if micro_batches == 1:
        loss, logs = objective(idx, ridx, batch)
        loss.backward()
        return loss.detach(), {k: v.detach() for k, v in logs.items()}
    total, summed = None, {}
    for part, rpart in zip(idx.tensor_split(micro_batches), ridx.tensor_split(micro_batches)):
        loss, logs = objective(part, rpart, batch)
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
        summed = {k: summed.get(k, 0) + v.detach() for k, v in logs.items()}
    return total, summed


# --- the preference objective and W -----------------------------------------------------------


def preference_objective(
    cfg: TrainConfig,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    y_w: torch.Tensor,
    y_l: torch.Tensor,
    logp_reg: torch.Tensor,
    ref_logp_reg: torch.Tensor,
    batch: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This process's part of L = L_pref + lambda KL(pi_ref || pi) for a global batch of `batch`
    samples, of which it holds len(y_w), and its logs (TRL's names), weighted the same way."""
    entry = losses.method(cfg.method)
    z0 = None
    if entry.uses_z0:  # KTO's detached KL estimate z0, over the global batch (a collective call)
        # over the samples every rank holds in this call: the global batch, or one micro-batch of it
        local = losses.kl_batch_estimate(logp_reg, ref_logp_reg) if len(y_w) else torch.zeros((), device=logp.device)
        count = torch.tensor(float(len(y_w)), device=logp.device)  # on the device NCCL reduces on
        held = batch if dist.world() == 1 and len(y_w) == batch else int(dist.all_sum(count).item())
        z0 = dist.all_sum(local * len(y_w)) / held
    if not len(y_w):
        zero = logp.sum() * 0
        names = ("loss", "loss/kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
        names += ("logps/chosen", "logps/rejected", "margin/h", "policy/prefers_chosen")
        names += ("kl",) if entry.uses_z0 else ()
        return zero, dict.fromkeys(names, zero)
    share = len(y_w) / batch
    options = {name: getattr(cfg, name) for name in entry.options}  # cDPO's label_smoothing
    per_pair = losses.per_pair_loss(cfg.method, entry, logp, ref_logp, y_w, y_l, cfg.beta, z0, **options)
    pref = share * cfg.pref_weight * per_pair.mean()
    kl = share * losses.kl_regularizer(logp_reg, ref_logp_reg)
    with torch.no_grad():  # TRL's names: rewards are beta times the log-ratios, so their margin is beta h
        h = losses.preference_margin(logp, ref_logp, y_w, y_l)
        logp_w, logp_l = logp.gather(1, y_w[:, None])[:, 0], logp.gather(1, y_l[:, None])[:, 0]
        ref_w, ref_l = ref_logp.gather(1, y_w[:, None])[:, 0], ref_logp.gather(1, y_l[:, None])[:, 0]
        prefers = (logp_w > logp_l).float()
        logs = {
            "loss": pref,  # TRL's "loss": the preference loss (its trainers have no KL term beside it)
            "loss/kl": kl,
            "rewards/chosen": share * cfg.beta * (logp_w - ref_w).mean(),
            "rewards/rejected": share * cfg.beta * (logp_l - ref_l).mean(),
            "rewards/margins": share * cfg.beta * h.mean(),  # beta h = rewards/chosen - rewards/rejected
            "rewards/accuracies": share * (h > 0).float().mean(),  # the pair moved the right way
            "logps/chosen": share * logp_w.mean(),
            "logps/rejected": share * logp_l.mean(),
            "margin/h": share * h.mean(),
            "policy/prefers_chosen": share * prefers.mean(),  # pi(y_w|x) > pi(y_l|x), whatever pi_ref did
        }
        if z0 is not None:  # KTO's reference point, logged as TRL's KTOTrainer logs it
            logs["kl"] = share * z0
    return pref + cfg.lam * kl, logs


@torch.no_grad()
def preference_accuracy(
    images: torch.Tensor,
    texts: torch.Tensor,
    y_w: torch.Tensor,
    y_l: torch.Tensor,
    projection: SharedProjection | None = None,
) -> float:
    """The share of D_pref where the policy scores y_w above y_l.

    Args:
        images: (N, d) images x' of D_pref.
        texts: (K, d) the action set.
        y_w: (N,) preferred action indices.
        y_l: (N,) dispreferred action indices.
        projection: W or W_t (None: the original model).

    Returns:
        float: a fraction in [0, 1].
    """
    s = similarities(images, texts, projection)
    return (s.gather(1, y_w[:, None]) > s.gather(1, y_l[:, None])).float().mean().item()


def fit_projection(
    data: PreferenceData,
    cfg: TrainConfig,
    projection: SharedProjection | None = None,
    progress: bool = True,
    validate: Callable[[SharedProjection], dict[str, float]] | None = None,
    device: str | torch.device | None = None,
    **checkpointing,
) -> tuple[SharedProjection, dict]:
    """Train W on cached features with the one loop (`loop`): L = L_pref(D_pref) + lambda KL(D_reg),
    plus the orthogonality penalty, BMA-averaged as cfg says.

    Args:
        data: D_pref and D_reg as cached features.
        cfg: the method and its settings (TrainConfig; None fields take the method's defaults).
        projection: the W to start from (None: the identity, the original model).
        progress: show a progress bar.
        validate: W -> metrics on validation data, logged every checkpointing["eval_every"] steps
            under "eval/".
        device: where W trains ("cuda", "mps", "cpu"; None: a GPU where there is one, as load_clip
            picks); the features move there once.
        **checkpointing: checkpoint, checkpoint_every, resume, identity, report, eval_every (see `loop`).

    Returns:
        tuple[SharedProjection, dict]: the trained W (on the CPU, with the data's record) and the
        per-step history (loss, lr, namespaced metrics such as "rewards/margins", elapsed_s).
    """
    device = torch.device(device) if device is not None else default_device()
    data = data.to(device)
    proj = (projection or SharedProjection(data.pref_images.shape[-1])).to(device)
    tau = data.logit_scale
    reg_texts = data.texts if data.reg_texts is None else data.reg_texts
    ref_pref = logprobs(data.pref_images, data.texts, tau)  # (N, K), the frozen pi_ref
    ref_reg = logprobs(data.reg_images, reg_texts, tau)  # (M, K')

    def objective(idx, ridx, batch):
        logp = logprobs(data.pref_images[idx], data.texts, tau, proj)  # (b, K)
        logp_reg = logprobs(data.reg_images[ridx], reg_texts, tau, proj)  # (b, K')
        y_w, y_l = data.y_w[idx], data.y_l[idx]
        loss, logs = preference_objective(cfg, logp, ref_pref[idx], y_w, y_l, logp_reg, ref_reg[ridx], batch)
        if cfg.orth:  # each process adds its share, so the sum over processes is the penalty once
            share = len(idx) / batch
            penalty = share * orthogonality_gap(proj.weight).square()
            loss, logs = loss + cfg.orth * penalty, {**logs, "loss/orth": penalty.detach()}
        return loss, logs

    params = list(proj.parameters())
    n, m = len(data.pref_images), len(data.reg_images)
    on_cpu = lambda: proj if device.type == "cpu" else SharedProjection(proj.dim, proj.weight.detach().cpu())
    evaluate = (lambda: validate(on_cpu())) if validate is not None else None  # validation features stay put
    hist = loop(
        params,
        objective,
        n,
        m,
        cfg,
        desc=f"fit W ({cfg.method})",
        progress=progress,
        evaluate=evaluate,
        **checkpointing,
    )
    proj = proj.to("cpu")
    proj.metadata.update({k: str(v) for k, v in asdict(cfg).items()})
    proj.metadata.update(data.record)  # what it trained on: eval's leakage guard reads it
    return proj, hist


def default_device() -> torch.device:
    """A GPU where there is one (CUDA, then Apple's MPS), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
