"""Runs: what `clipaln train` and `clipaln eval` do, as library calls that return plain dicts.

    result = runs.train_run("typographic", method="dpo", out="runs/dpo")          # the toy world
    result = runs.eval_run("typographic", projection="runs/dpo/projection.safetensors", t=1.5)

A run loads the model, builds the task's data and features (encoded once, cached), trains W (or
fine-tunes the image encoder, or both encoders with train_text) with the track's defaults,
evaluates, and writes OUT/projection.safetensors (OUT/model.safetensors for full fine-tuning: the
whole model under open_clip's names), OUT/metrics.json and OUT/history.jsonl (one line per step).
Under torchrun every rank trains and only rank 0 writes.
"""

from .common import DATA_FIELDS, duplicates_line, features, make_spec, run_manifest, train_config
from .eval import eval_run
from .export import export_finetuned, export_run
from .request import OPTIONAL_FIELDS, REQUEST, REQUEST_FIELDS, as_recorded, started_request
from .resume import FREE_ON_RESUME, NOT_COMPARED, resumed_request
from .train import train_run

__all__ = [
    "DATA_FIELDS",
    "OPTIONAL_FIELDS",
    "REQUEST",
    "REQUEST_FIELDS",
    "FREE_ON_RESUME",
    "NOT_COMPARED",
    "as_recorded",
    "duplicates_line",
    "eval_run",
    "export_finetuned",
    "export_run",
    "features",
    "make_spec",
    "resumed_request",
    "run_manifest",
    "started_request",
    "train_config",
    "train_run",
]
