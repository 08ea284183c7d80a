"""Many processes with PyTorch's own engine: `torchrun --nproc_per_node=N -m clipaln train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `init()` starts the process group (NCCL on GPUs,
gloo on CPUs). Each rank encodes a shard of the images and the shards are gathered, so every
rank holds all features; each training step splits the global batch across ranks and sums the
gradients, weighting each rank by its share of the batch, so N processes follow exactly the
path of one process with the same global batch. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def init() -> bool:
    """Start the process group when launched by torchrun; returns whether we are distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


_SUSPENDED = [False]


def active() -> bool:
    return not _SUSPENDED[0] and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class suspended:
    """Within this block, act as a single process (for work on a rank's own shard)."""

    def __enter__(self):
        self.prev, _SUSPENDED[0] = _SUSPENDED[0], True

    def __exit__(self, *exc):
        _SUSPENDED[0] = self.prev


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def shard_indices(n: int) -> list[int]:
    """This rank's share of range(n): every world()-th index, starting at rank()."""
    return list(range(rank(), n, world()))


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble rows sharded with shard_indices into the full (n, ...) tensor on every rank."""
    if not active():
        return local
    w = world()
    per = (n + w - 1) // w
    pad = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=local.device)
    pad[: len(local)] = local
    parts = [torch.empty_like(pad) for _ in range(w)]
    dist.all_gather(parts, pad)
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for r, part in enumerate(parts):
        rows = list(range(r, n, w))
        out[rows] = part[: len(rows)]
    return out


def sum_gradients(params: Iterable[torch.Tensor]) -> None:
    """All-reduce (sum) the gradients of `params` across ranks."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective call, not one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def all_sum(x: torch.Tensor) -> torch.Tensor:
    if not active():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def cleanup() -> None:
    if active():
        dist.destroy_process_group()
