"""The one training loop, and W fitted with it on cached features (encoders frozen, encoded once).

    L = L_pref(D_pref) + lambda * KL(pi_ref || pi)(D_reg)          (docs/method.md section 2)

`loop` is the only training loop of the package: W (`fit_projection`), full fine-tuning, the
baselines, the speed bench's in-loop recipe and the toy pretraining all call it, so they share
the seeded batch selection (`rank_batch`), the schedule (`lr_at`: linear warm-up, then cosine),
BMA averaging (Beta(0.7, 0.7) weights over training progress, the initial model included, as the
authors do), checkpoints and torchrun support.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from . import distributed as dist
from . import losses
from .io import read_text, save_tensors
from .policy import PreferenceData, logprobs, similarities
from .projection import SharedProjection, orthogonality_gap

__all__ = ["PreferenceData", "SCHEDULES", "TrainConfig", "fit_projection", "loop", "lr_at", "rank_batch", "bma_weight"]


#: Each method's schedule, the one set of defaults that TrainConfig, the tracks and the CLI read
#: (beta and lambda come from the paper, losses.method(m).paper). Tuned on the typographic track's
#: validation split (docs/toy-world.md); a track tuned apart (gender) passes its own to for_method.
SCHEDULES = {
    "dpo": dict(lr=0.003, epochs=30, orth=1.0, batch_size=256, bma=True),
    # IPO misses W's target at every setting tried (its smallest singular value stays at or below 0.14
    # even with orth = 10,000): this is the nearest to it of the grid (docs/toy-world.md)
    "ipo": dict(lr=0.003, epochs=30, orth=100.0, batch_size=256, bma=True),
    "kto": dict(lr=0.003, epochs=30, orth=1.0, batch_size=256, bma=True),
    # CE has no KL term: the orthogonality penalty alone keeps its W within the target
    "ce": dict(lr=0.01, epochs=10, orth=10.0, batch_size=256, bma=False),
    # the further preference losses take DPO's setting (`bench.tuning.tune(feats, "cdpo")` can tune one)
    "cdpo": dict(lr=0.003, epochs=30, orth=1.0, batch_size=256, bma=True),
    "rfdpo": dict(lr=0.003, epochs=30, orth=1.0, batch_size=256, bma=True),
    "mdpo": dict(lr=0.003, epochs=30, orth=1.0, batch_size=256, bma=True),
}


@dataclass
class TrainConfig:
    """How W (or an encoder) trains. A field left None takes the method's default: beta and lambda
    from the paper, the rest from SCHEDULES; so TrainConfig(method="kto") here, `clipaln train
    --method kto` and the tracks' train_config("kto") are the same run."""

    method: str = "dpo"
    beta: float | None = None
    lam: float | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    warmup_ratio: float = 0.1
    seed: int = 0
    bma: bool | None = None
    pref_weight: float = 1.0  # the weight of L_pref: 0 trains on L_reg alone (the reviewers' ablation)
    orth: float | None = None  # the weight of ||W^T W - I||_F^2 / d, which keeps W near orthogonal (fit_projection)
    label_smoothing: float | None = None  # cDPO's eps (TRL's label_smoothing; default 0.1); None for other methods
    # TRL's (transformers' TrainingArguments') names, with their meaning there:
    per_device_train_batch_size: int | None = None  # set: the global batch is this x ranks x accumulation steps
    gradient_accumulation_steps: int = 1  # each rank's share of a batch runs in this many micro-batches
    max_grad_norm: float | None = None  # clip the global gradient's norm (None: no clipping, the paper's)
    # no step on noise: at the objective's minimum (W = I under L_reg alone) the gradient is float
    # rounding, about 3e-6, which Adamax would scale up to a full step of size lr; below this norm no
    # step is taken (docs/method.md, "No step on noise"). Every preference run's gradient is far above it.
    min_grad_norm: float = 1e-5
    weight_decay: float = 0.0  # Adamax's (torch.optim.Adamax: added to the gradient, not decoupled)
    lr_scheduler_type: str = "cosine"  # after the warm-up: cosine, linear, constant (constant_with_warmup)

    @classmethod
    def for_method(cls, method: str, track_defaults: dict | None = None, **overrides) -> TrainConfig:
        """A track's per-method defaults, then `overrides` (None keeps the default); what neither
        sets comes from the package's defaults (the paper's beta and lambda, SCHEDULES)."""
        base = dict((track_defaults or {}).get(method, {}))
        if overrides.get("per_device_train_batch_size") is not None:  # TRL's batch replaces the default one
            base.pop("batch_size", None)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(method=method, **base)

    def __post_init__(self):
        if not isinstance(self.method, str):
            raise ValueError(f"method must be one name such as 'dpo', got {self.method!r}")
        entry = losses.method(self.method)  # one line naming the methods when unknown
        if self.label_smoothing is not None and "label_smoothing" not in entry.options:
            raise ValueError(f"label_smoothing is cDPO's (method='cdpo'), not {self.method}'s: leave it out")
        for name, kind in FIELD_TYPES.items():  # the flags, a config file and Python all pass here
            setattr(self, name, _typed(name, getattr(self, name), kind))
        if self.per_device_train_batch_size is not None and self.batch_size is not None:
            raise ValueError(
                "batch_size is the global batch and per_device_train_batch_size TRL's per-rank one: set one of them"
            )
        if self.lr_scheduler_type not in SCHEDULER_TYPES:
            raise ValueError(
                f"lr_scheduler_type must be one of {', '.join(SCHEDULER_TYPES)}, got {self.lr_scheduler_type!r}"
            )
        schedule = {**SCHEDULES["dpo"], **(SCHEDULES.get(self.method) or entry.schedule or {})}  # DPO's fills gaps
        for k, v in {**entry.paper, **schedule}.items():
            if k == "batch_size" and self.per_device_train_batch_size is not None:
                continue  # TRL's per-rank batch sets the global one (global_batch)
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.label_smoothing is None and "label_smoothing" in entry.options:
            self.label_smoothing = losses.LABEL_SMOOTHING  # cDPO's; None for every other method
        for name, (lo, hi, what) in RANGES.items():
            v = getattr(self, name)
            if v is None:  # label_smoothing of a method that has none
                continue
            if not (lo < v if "positive" in what else lo <= v) or not v < hi:
                raise ValueError(f"{name} must be {what}, got {v}")


#: Every TrainConfig field but method, by type: what a flag, a config file (JSON or YAML, whose
#: "1e-3" is a string) and Python may give. Numbers written as strings are read as numbers.
FIELD_TYPES = {
    "beta": float,
    "lam": float,
    "epochs": int,
    "lr": float,
    "batch_size": int,
    "warmup_ratio": float,
    "seed": int,
    "bma": bool,
    "pref_weight": float,
    "orth": float,
    "label_smoothing": float,
    "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int,
    "max_grad_norm": float,
    "min_grad_norm": float,
    "weight_decay": float,
}
#: (lowest, bound above, words) per numeric field; words that say "positive" exclude the lowest.
RANGES = {
    "beta": (0, math.inf, "a positive number"),
    "lam": (0, math.inf, "a number >= 0 (lambda, the weight of the KL regulariser)"),
    "epochs": (0, math.inf, "a positive whole number"),
    "lr": (0, math.inf, "a positive, finite number"),
    "batch_size": (0, math.inf, "a positive whole number"),
    "warmup_ratio": (0, 1, "in [0, 1)"),
    "seed": (0, 2**63, "a whole number >= 0"),
    "pref_weight": (0, math.inf, "a number >= 0 (a negative weight trains the anti-preference)"),
    "orth": (0, math.inf, "a number >= 0"),
    "label_smoothing": (0, 0.5, "in [0, 0.5)"),
    "per_device_train_batch_size": (0, math.inf, "a positive whole number"),
    "gradient_accumulation_steps": (0, math.inf, "a positive whole number"),
    "max_grad_norm": (0, math.inf, "a positive number"),
    "min_grad_norm": (0, math.inf, "a number >= 0 (0 steps on any gradient)"),
    "weight_decay": (0, math.inf, "a number >= 0"),
}
#: lr_scheduler_type: transformers' names for what follows the linear warm-up
SCHEDULER_TYPES = ("cosine", "linear", "constant", "constant_with_warmup")


def _typed(name: str, value, kind):
    """value as `kind` (None stays None), or one ValueError naming the field, the value and the type."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, numbers.Real):  # numpy's numbers are Real too
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(number)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if kind is int:
        if number != int(number):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return float(number)


#: TRL's names for TrainConfig fields (its DPOConfig / KTOConfig, after transformers' TrainingArguments).
TRL_ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "loss_type": "method",
}
TRL_LOSS_TYPES = {"sigmoid": "dpo"}  # DPOConfig's loss_type for the DPO loss; "ipo" is ours as is


def read_config(path: str | Path) -> dict:
    """TrainConfig fields from a JSON or YAML file (`clipaln train --config FILE`); a one-line error
    names an unknown field, so a typo does not silently train with the default."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    text = read_text(path)  # UTF-8, not a folder, or one line
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise RuntimeError(
                f"{path}: reading YAML needs pyyaml (pip install pyyaml), or write the config as JSON"
            ) from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not YAML ({str(e).splitlines()[0]})") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a mapping of TrainConfig fields")
    for alias, name in TRL_ALIASES.items():  # a TRL config reads as one of ours
        if alias in config:
            if name in config:
                raise ValueError(f"{path} sets both {alias} (TRL's name) and {name}: keep one")
            config[name] = config.pop(alias)
    if isinstance(config.get("method"), str):
        config["method"] = TRL_LOSS_TYPES.get(config["method"], config["method"])
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; a config sets {', '.join(sorted(known))}")
    return config


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


# --- checkpoints ------------------------------------------------------------------------------


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
    """Share of D_pref where the policy scores y_w above y_l."""
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
    """Train W on cached features; returns the projection (on the CPU) and the per-step history.

    device: where W trains ("cuda", "mps", "cpu"; None: a GPU where there is one, as load_clip
    picks): the features move there once, and on the CPU nothing moves. validate: metrics of a W on
    validation data, logged every checkpointing["eval_every"] steps under "eval/"; checkpointing:
    checkpoint, checkpoint_every, resume, report, eval_every, as in `loop`.
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
