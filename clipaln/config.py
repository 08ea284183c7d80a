"""How W (or an encoder) trains: TrainConfig, each method's schedule, and a config file read into it
(TRL's and transformers' names accepted)."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from . import losses
from .io import read_text

#: Each built-in method's schedule (lr, epochs, orth, batch_size, bma), as its registry entry holds it
#: (losses.LOSSES[m].schedule: the one source); a track tuned apart (gender) passes its own to for_method.
SCHEDULES = {name: dict(entry.schedule) for name, entry in losses.LOSSES.items() if entry.schedule}


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
            setattr(self, name, _as_field_type(name, getattr(self, name), kind))
        if self.per_device_train_batch_size is not None and self.batch_size is not None:
            raise ValueError(
                "batch_size is the global batch and per_device_train_batch_size TRL's per-rank one: set one of them"
            )
        if self.lr_scheduler_type not in SCHEDULER_TYPES:
            raise ValueError(
                f"lr_scheduler_type must be one of {', '.join(SCHEDULER_TYPES)}, got {self.lr_scheduler_type!r}"
            )
        schedule = {**losses.method("dpo").schedule, **(entry.schedule or {})}  # DPO's fills gaps
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


def _as_field_type(name: str, value, kind):
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
