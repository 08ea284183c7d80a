"""A training run's checkpoints: the trained tensors, the optimiser state and the BMA sums at a step,
and the checks that refuse to resume one of another config, model or data."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open

from .config import TrainConfig
from .io import save_tensors


def save_checkpoint(
    path: str | Path,
    state: dict,
    opt: torch.optim.Optimizer,
    step: int,
    avg: dict,
    avg_w: float,
    cfg: TrainConfig,
    run: dict | None = None,
    history: dict | None = None,
) -> None:
    """The trained tensors, the optimiser state and the BMA sums at `step`, as safetensors (atomically);
    `run`: what else the run must match to be resumed (data sizes, number of steps); `history`: the
    steps so far, in the header, so that a resumed run's history holds every step once."""
    tensors = {f"state.{k}": v for k, v in state.items()} | {f"bma.{k}": v for k, v in avg.items()}
    for i, s in opt.state_dict()["state"].items():  # Adamax: step (a scalar), exp_avg, exp_inf
        tensors |= {f"opt.{i}.{k}": torch.atleast_1d(v) for k, v in s.items()}
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}  # from whichever device trains
    meta = {"step": step, "bma_weight": repr(avg_w), **asdict(cfg), **(run or {})}
    save_tensors(path, tensors, {**meta, "history": json.dumps(history or {})})


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint resumes at."""
    return int(_read_checkpoint(path, tensors=False)[0]["step"])


def _read_checkpoint(path, tensors: bool = True) -> tuple[dict, dict]:
    """(header, tensors) of a checkpoint; tensors=False reads the header only."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"nothing to resume: no checkpoint at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"checkpoint {path} cannot be read ({str(e)[:100]}): start over without --resume") from None
    if "step" not in meta:
        raise ValueError(f"{path} is not a clipaln checkpoint (no step in its header): refusing to resume")
    return meta, tensors


def _check_meta(path, meta: dict, expected: dict) -> None:
    for k, v in expected.items():
        if meta.get(k) != str(v):
            raise ValueError(f"checkpoint {path} was written with {k}={meta.get(k)}, not {v}: refusing to resume")


def check_checkpoint(path: str | Path, expected: dict) -> None:
    """Refuse (ValueError, one line) a checkpoint that is unreadable or was written with other `expected`
    entries (config, model weights, data), before any work is done."""
    _check_meta(path, _read_checkpoint(path, tensors=False)[0], expected)


def load_checkpoint(
    path: str | Path, state: dict, opt: torch.optim.Optimizer, cfg: TrainConfig, run: dict | None = None
) -> tuple[int, dict, float, dict]:
    """Restore what save_checkpoint wrote into `state` and `opt`; returns (step, bma_sums, bma_weight,
    history of the steps before it).
    Refuses a checkpoint written with another config or another `run` (data sizes, steps)."""
    meta, tensors = _read_checkpoint(path)
    if any(f"state.{k}" not in tensors for k in state):
        raise ValueError(f"{path} is not a checkpoint of this training (its tensors differ): refusing to resume")
    _check_meta(path, meta, {**asdict(cfg), **(run or {})})
    with torch.no_grad():
        for k, v in state.items():
            v.copy_(tensors[f"state.{k}"])
    opt_state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    if opt_state:
        sd = opt.state_dict()
        sd["state"] = opt_state
        opt.load_state_dict(sd)
    avg = {k[4:]: v.to(state[k[4:]].device) for k, v in tensors.items() if k.startswith("bma.")}
    history = json.loads(meta.get("history") or "{}")
    return int(meta["step"]), avg, float(meta["bma_weight"]), history
