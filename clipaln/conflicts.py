"""Requests that contradict themselves, in one table: flags that go with another task, mode or
command than the one asked for, or that cancel each other. Each row names its command, the test on
the request (the keywords of `runs.train_run`, `runs.eval_run` or `runs.export_run`, and the data's
flags), the one line that refuses it, and a command line that meets it. `refuse` runs a request
through the table before any work; tests/test_conflicts.py runs every row's command line.

What a single value may be (a range, a type) is the config's to check (`TrainConfig`); what a
benchmark reads is `bench.registry.Bench.reads`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Conflict:
    command: str  # train, eval, export; data (train's and eval's data flags: runs.make_spec); train-cli (flags
    # only the command line has, checked as typed, before a resume merges in the run's recorded request)
    applies: Callable[[dict[str, Any]], bool]
    message: str
    example: tuple[str, ...]  # a command line that meets it ({pairs}: a pairs file; {out}: a new folder)


def _given(request: dict, *keys: str) -> bool:
    """Any of `keys` given: a value other than None and False (0 and an empty list are given)."""
    return any(request.get(k) is not None and request.get(k) is not False for k in keys)


def _several_t(request: dict) -> bool:
    """t given as a sequence of values (the command line's --t A B ...), not one number."""
    t = request.get("t")
    return t is not None and not isinstance(t, (int, float))


def _no_t_at_all(request: dict) -> bool:
    try:
        return len(request["t"]) == 0
    except TypeError:
        return False


CONFLICTS: tuple[Conflict, ...] = (
    # train
    Conflict(
        "train",
        lambda r: r.get("mode") == "full" and r.get("task") != "typographic",
        "full fine-tuning (--mode full) is available for the typographic task only",
        ("train", "gender", "--mode", "full", "--out", "{out}"),
    ),
    Conflict(
        "train",
        lambda r: _given(r, "train_text", "lock_image") and r.get("mode") != "full",
        "--train-text and --lock-image go with --mode full (W training never changes the encoders)",
        ("train", "typographic", "--train-text", "--out", "{out}"),
    ),
    Conflict(
        "train",
        lambda r: _given(r, "lock_image") and not _given(r, "train_text"),
        "--lock-image with the text tower locked too (the default) leaves nothing to train: --train-text",
        ("train", "typographic", "--mode", "full", "--lock-image", "--out", "{out}"),
    ),
    Conflict(
        "train-cli",
        lambda r: _given(r, "lock_text") and r.get("mode") != "full",
        "--lock-text goes with --mode full (W training never changes the encoders)",
        ("train", "typographic", "--lock-text", "--out", "{out}"),
    ),
    Conflict(
        "train-cli",
        lambda r: _given(r, "lock_text") and _given(r, "train_text"),
        "--lock-text keeps the text tower frozen and --train-text trains it: give one",
        ("train", "typographic", "--mode", "full", "--train-text", "--lock-text", "--out", "{out}"),
    ),
    Conflict(
        "train",
        lambda r: r.get("mode") == "full" and bool((r.get("overrides") or {}).get("orth")),
        "--orth is for W training; full fine-tuning has no W to keep orthogonal",
        ("train", "typographic", "--mode", "full", "--orth", "0.1", "--out", "{out}"),
    ),
    Conflict(
        "train",
        lambda r: bool(r.get("eval_every")) and r.get("task") == "pairs" and not r.get("val_share"),  # 0: off
        "--eval-every scores W on validation data: W training, and for pairs --val-share",
        ("train", "pairs", "--pairs", "{pairs}", "--eval-every", "5", "--out", "{out}"),
    ),
    Conflict(
        "data",
        lambda r: _given(r, "reg_images") and r.get("task") != "pairs",
        "--reg-images is for the pairs task",
        ("train", "typographic", "--reg-images", "{pairs}", "--out", "{out}"),
    ),
    Conflict(
        "data",
        lambda r: bool(r.get("val_share")) and r.get("task") != "pairs",
        "--val-share is for the pairs task: typographic and gender hold out their own validation data "
        "(typographic on a real dataset: the images --n-train and --n-test leave over)",
        ("train", "gender", "--val-share", "0.2", "--out", "{out}"),
    ),
    Conflict(
        "data",
        lambda r: (
            r.get("task") == "pairs" and (_given(r, "n_train", "n_test") or r.get("dataset") not in (None, "toy"))
        ),
        "the pairs task holds out a fifth of the file's images: no --n-train, --n-test or --dataset",
        ("train", "pairs", "--pairs", "{pairs}", "--n-train", "10", "--out", "{out}"),
    ),
    Conflict(
        "data",
        lambda r: r.get("task") == "gender" and r.get("dataset") == "people" and _given(r, "n_train", "n_test"),
        "--dataset people splits every (activity, gender) cell 60/20/20: no --n-train/--n-test",
        ("train", "gender", "--dataset", "people", "--root", "{pairs}", "--n-test", "8", "--out", "{out}"),
    ),
    Conflict(
        "data",
        lambda r: r.get("task") == "gender" and _given(r, "root") and r.get("dataset") != "people",
        "--root goes with --dataset people: the toy world's people are drawn, not read",
        ("train", "gender", "--root", "{pairs}", "--out", "{out}"),
    ),
    Conflict(
        "data",
        lambda r: (
            _given(r, "download") and (r.get("task") != "typographic" or r.get("dataset") in (None, "toy", "folder"))
        ),
        "--download fetches a torchvision dataset (train typographic --dataset NAME): there is nothing to fetch here",
        ("train", "pairs", "--pairs", "{pairs}", "--download", "--out", "{out}"),
    ),
    # eval
    Conflict(
        "eval",
        lambda r: r.get("task") != "toy" and _given(r, "n"),
        "--n is for eval toy; eval typographic / gender score the run's own splits",
        ("eval", "typographic", "--n", "300"),
    ),
    Conflict(
        "eval",
        lambda r: r.get("projection") is None and r.get("t") is not None,
        "--t needs --projection FILE",
        ("eval", "typographic", "--t", "0.5"),
    ),
    Conflict(
        "eval",
        lambda r: _given(r, "choose_t") and _given(r, "photos", "image_encoder", "t"),
        "--choose-t chooses t for a W on the run's validation split: not with --photos, --image-encoder or --t",
        ("eval", "typographic", "--choose-t", "--photos", "{out}"),
    ),
    Conflict(
        "eval",
        lambda r: r.get("split") == "val" and _given(r, "photos", "image_encoder", "choose_t"),
        "--split val scores W_t on the run's validation data: no --photos, --image-encoder or --choose-t",
        ("eval", "typographic", "--split", "val", "--photos", "{out}"),
    ),
    Conflict(
        "eval",
        lambda r: _several_t(r) and (_no_t_at_all(r) or _given(r, "photos", "image_encoder")),
        "several --t values go with --projection (not --photos or --image-encoder), at least one",
        ("eval", "typographic", "--projection", "{pairs}", "--t", "0", "1", "--photos", "{out}"),
    ),
    Conflict(
        "eval",
        lambda r: _given(r, "projection") and _given(r, "image_encoder"),
        "--projection and --image-encoder evaluate different runs: give one",
        ("eval", "typographic", "--projection", "{pairs}", "--image-encoder", "{pairs}"),
    ),
    Conflict(
        "eval",
        lambda r: _given(r, "photos", "image_encoder") and r.get("task") != "typographic",
        "--photos and --image-encoder go with eval typographic",
        ("eval", "gender", "--photos", "{out}"),
    ),
    Conflict(
        "eval",
        lambda r: _given(r, "photos") and _given(r, "dataset", "root", "n_train", "n_test"),
        "--photos is the data: it takes no --dataset, --root, --n-train or --n-test",
        ("eval", "typographic", "--photos", "{out}", "--n-test", "10"),
    ),
    Conflict(
        "eval",
        lambda r: _given(r, "choose_t") and (r.get("task") != "typographic" or not _given(r, "projection")),
        "--choose-t goes with eval typographic --projection FILE, and no --t",
        ("eval", "gender", "--choose-t"),
    ),
    # export
    Conflict(
        "export",
        lambda r: _given(r, "projection") == _given(r, "image_encoder"),
        "export takes --projection FILE (a W) or --image-encoder FILE (a fine-tuned model): one",
        ("export", "--out", "{out}"),
    ),
    Conflict(
        "export",
        lambda r: _given(r, "image_encoder") and r.get("t", 1.0) != 1.0,
        "--t scales a W: a fine-tuned model has none (export it with --image-encoder alone)",
        ("export", "--image-encoder", "{pairs}", "--t", "0.5", "--out", "{out}"),
    ),
)


def refuse(command: str, request: dict[str, Any]) -> None:
    """One ValueError, the first row of the table that the request meets; nothing if none."""
    for conflict in CONFLICTS:
        if conflict.command == command and conflict.applies(request):
            raise ValueError(conflict.message)
