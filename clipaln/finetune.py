"""Full fine-tuning (`--mode full`): the image encoder trains, and with `--train-text` the text
encoder too, as in the authors' code (which also trains logit_scale; we keep tau fixed).

It runs in train.loop, as W does, so it has W's seeded batches, schedule, BMA, checkpoints with
bit-identical resume, reporting and evaluation during training. Each step's images are loaded ahead
by DataLoader worker processes (the loop's batches are known in advance: `StepImages`), pinned on
CUDA; the towers run in bf16 autocast on CUDA with gradient checkpointing; under torchrun they are
wrapped in DistributedDataParallel, whose all-reduce overlaps the backward pass, so N ranks take the
step one process takes with the same global batch; a tower with BatchNorm (the toy's ResNet) is the
exception: its batch statistics are each rank's own on a CPU, and synchronised (SyncBatchNorm) on CUDA. With the text
encoder frozen its class embeddings are computed once; the reference policy is the frozen model
before training, whose log-probabilities are computed once from cached features.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from . import distributed as dist
from .features import PreprocessedView, default_workers, encode_images
from .models import ClipBundle
from .policy import logprobs
from .train import TrainConfig, checkpoint_step, global_batch, loop, preference_objective, rank_batch


class _Rows(torch.utils.data.Dataset):
    """(which, i) -> ((which, i), preprocessed image i of D_pref (which 0) or D_reg (which 1))."""

    def __init__(self, attacked, clean):
        self.views = (attacked, clean)

    def __len__(self) -> int:
        return sum(len(v) for v in self.views)

    def __getitem__(self, key):
        which, i = key
        view = self.views[which]
        return key, (view.row(i) if isinstance(view, PreprocessedView) else view[i])


class _Steps(torch.utils.data.Sampler):
    """The keys of each step's images, from `start` on: this rank's share of the loop's batches."""

    def __init__(self, n: int, m: int, batch_size: int, seed: int, start: int, total: int):
        self.args, self.start, self.total = (n, m, batch_size, seed), start, total

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        n, m, batch_size, seed = self.args
        for step in range(self.start, self.total):
            idx, ridx, _ = rank_batch(step, n, m, batch_size, seed)
            yield [(0, int(i)) for i in idx] + [(1, int(j)) for j in ridx]


def _collate(items):
    keys = [key for key, _ in items]
    return keys, (torch.stack([x for _, x in items]) if items else torch.empty(0))


class StepImages:
    """Each step's preprocessed images, in the order train.loop asks for them, loaded ahead by
    `workers` DataLoader worker processes (prefetched, pinned in memory on CUDA).

    take(idx, ridx) -> (x_pref, x_reg): the next rows of the current step, which the loop asks for
    whole or in gradient-accumulation micro-batches; the keys are checked against what was loaded."""

    def __init__(self, attacked, clean, cfg: TrainConfig, start: int, total: int, workers: int, pin: bool):
        bs = min(global_batch(cfg), len(attacked))
        self.loader = torch.utils.data.DataLoader(
            _Rows(attacked, clean),
            batch_sampler=_Steps(len(attacked), len(clean), bs, cfg.seed, start, total),
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=pin,
            prefetch_factor=2 if workers else None,
            persistent_workers=False,
        )
        self._batches = iter(self.loader)
        self._rows: dict = {}

    def take(self, idx: torch.Tensor, ridx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [(0, int(i)) for i in idx] + [(1, int(j)) for j in ridx]
        if not all(k in self._rows for k in keys):
            loaded, x = next(self._batches)
            self._rows = dict(zip(loaded, x))
            if not all(k in self._rows for k in keys):
                raise RuntimeError("the image loader is out of step with the training loop")
        rows = [self._rows[k] for k in keys]
        x = torch.stack(rows) if rows else torch.empty(0)
        return x[: len(idx)], x[len(idx) :]


class Towers(torch.nn.Module):
    """The part of a CLIP that trains, as one module (what DistributedDataParallel wraps): normalised
    image embeddings of x, and, given tokens, normalised text embeddings of them."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = F.normalize(self.model.encode_image(x).float(), dim=-1)  # (b, d)
        if tokens is None:
            return images, None
        return images, F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (K, d)


def trained_parameters(model: torch.nn.Module, train_image: bool, train_text: bool) -> dict[str, torch.nn.Parameter]:
    """open_clip's --lock-image / --lock-text: the towers that train (logit_scale never does here)."""
    image = lambda n: n.startswith("visual.")
    return {
        n: p
        for n, p in model.named_parameters()
        if n != "logit_scale" and ((train_image and image(n)) or (train_text and not image(n)))
    }


def finetune_encoders(
    bundle: ClipBundle,
    attacked: torch.Tensor | PreprocessedView,
    clean: torch.Tensor | PreprocessedView,
    y_w: torch.Tensor,
    y_l: torch.Tensor,
    texts: torch.Tensor,
    cfg: TrainConfig,
    progress: bool = True,
    grad_checkpointing: bool | None = None,
    ref_attacked: torch.Tensor | None = None,
    ref_clean: torch.Tensor | None = None,
    prompts: list[str] | None = None,
    lock_image: bool = False,
    workers: int | None = None,
    validate: Callable[[ClipBundle], dict[str, float]] | None = None,
    **checkpointing: Any,
) -> tuple[ClipBundle, dict]:
    """Fine-tune a copy of the image encoder (and, given `prompts`, the text encoder too, as the
    authors' code does) on preprocessed images; returns a new frozen bundle and the history.

    attacked (N, 3, H, W) with y_w, y_l: D_pref; clean (M, 3, H, W): D_reg (tensors, or
    features.PreprocessedView, whose images are loaded per step by `workers` DataLoader worker
    processes); texts (K, d): the frozen model's class embeddings (the reference's, and the policy's
    when the text encoder stays frozen); prompts: the K class prompts, to re-encode with the training
    text encoder at every step; lock_image: keep the image tower frozen (open_clip's --lock-image;
    with prompts, only the text encoder trains). ref_attacked / ref_clean: the frozen model's
    embeddings of the same images when they are already cached (otherwise they are encoded here).
    validate: metrics of the current model (a frozen bundle sharing its weights), logged every
    checkpointing["eval_every"] steps; checkpointing: checkpoint, checkpoint_every, resume, identity,
    report, eval_every, as in train.loop. tau stays fixed.
    """
    if lock_image and not prompts:
        raise ValueError("--lock-image with the text encoder locked too leaves nothing to train: add --train-text")
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
    model.train()
    trained = trained_parameters(model, not lock_image, bool(prompts))
    for p in trained.values():
        p.requires_grad_(True)
    if grad_checkpointing if grad_checkpointing is not None else cuda:
        model.set_grad_checkpointing(True)
    tokens = bundle.tokenizer(list(prompts)).to(device) if prompts else None
    ddp = dist.active()
    if ddp and cuda:  # batch statistics over the global batch, as one process would have them
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    towers = Towers(model)
    if ddp:  # gradients all-reduced in buckets while the backward pass runs
        towers = DistributedDataParallel(towers, device_ids=[device.index] if cuda else None)
        towers.register_comm_hook(None, _summed)
    y_w, y_l = y_w.to(device), y_l.to(device)
    n, m = len(attacked), len(clean)
    total = cfg.epochs * -(-n // min(global_batch(cfg), n))
    checkpoint = checkpointing.get("checkpoint")
    start = checkpoint_step(checkpoint) if checkpointing.get("resume") and checkpoint else 0
    workers = default_workers() if workers is None else workers
    images = StepImages(attacked, clean, cfg, start, total, workers, pin=cuda)

    def objective(idx, ridx, batch):
        xa, xc = images.take(idx, ridx)
        x = torch.cat([xa, xc]).to(device, non_blocking=True)  # (2b, 3, H, W)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            emb, now = towers(x, tokens)  # (2b, d), (K, d) or None
        now = texts if now is None else now
        logp, logp_reg = logprobs(emb[: len(idx)], now, tau), logprobs(emb[len(idx) :], now, tau)
        idx, ridx = idx.to(device), ridx.to(device)
        return preference_objective(cfg, logp, ref_pref[idx], y_w[idx], y_l[idx], logp_reg, ref_reg[ridx], batch)

    def evaluate():
        model.eval()
        try:
            return validate(replace(bundle, model=model, _embed_dim=None))
        finally:
            model.train()

    # BMA averages the whole state (BatchNorm statistics included); state_dict() shares storage
    state = {k: v for k, v in model.state_dict().items() if k != "logit_scale" and _trains(k, trained)}
    what = " and ".join(t for t, on in (("image", not lock_image), ("text", bool(prompts))) if on)
    hist = loop(
        list(trained.values()),
        objective,
        n,
        m,
        cfg,
        desc=f"fine-tune {what} encoder ({cfg.method})",
        progress=progress,
        bma_state=state,
        gradients_synced=ddp,
        evaluate=evaluate if validate is not None else None,
        **checkpointing,
    )
    model.set_grad_checkpointing(False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return replace(bundle, model=model, _embed_dim=None), hist


def _summed(state, bucket):
    """DDP's all-reduce, summing instead of averaging: each rank's loss is already its share of the
    global batch's mean (train.preference_objective), so the sum is the global gradient."""
    work = torch.distributed.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def _trains(key: str, trained: dict) -> bool:
    """Whether a state entry belongs to a tower that trains."""
    image = key.startswith("visual.")
    return any(n.startswith("visual.") == image for n in trained)


def saved_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a full fine-tuning run writes: the whole model's state, under open_clip's own names
    (visual.*, text tower, logit_scale), so that open_clip loads it as it is."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
