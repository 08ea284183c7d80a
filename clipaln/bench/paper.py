"""The paper's Table 1 protocol on real datasets (`clipaln bench paper`), beside the authors' numbers.

Train on one attacked dataset (ImageNet-100, as the authors do), with DPO, IPO and KTO at the
paper's beta and lambda and with CE; then measure O (accuracy on the original images) and T (on
the typographic attack of the same images) on every dataset of the paper's Table 1 found under the
data root, each under its own attack of the Defense-Prefix protocol. Beside each cell: the authors'
logged number for the same dataset and method (their repository's `output/` logs, read into
authors_table1.json with its source and commit) and ours minus theirs, in points.

What differs, and stays said in the output: the authors fine-tune both encoders (BMA of the
weights, lr 2e-5, 3 epochs); clipaln trains the shared W of the paper's section 3.4 on cached
features, with W's schedule (train.SCHEDULES). On a random-init model (the tests) every number is
noise; with the real weights (`--pretrained openai`) on a GPU, the base rows are what the
authors' "Ref Acc" measured.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..features import FeatureCache
from ..io import append_json_line
from ..models import load_clip
from ..tracks import typographic

#: The paper's Table 1 datasets: clipaln's registry name -> the name in the authors' logs (None: no
#: log of the same task).
DATASETS = {
    "imagenet100": None,
    "caltech101": "caltech",
    "oxford_pets": "pets",
    "stanford_cars": "cars",
    "flowers102": "flowers",
    "fgvc_aircraft": "aircraft",
    "dtd": "dtd",
    "sun397": "sun",
    "eurosat": "eurosat",
    "food101": "food",
}
METHODS = ("dpo", "ipo", "kto", "ce")
#: The paper's beta and lambda (docs/method.md section 2); lr, epochs, orth and batch: W's own schedule.
PAPER_SETTINGS = {"dpo": dict(beta=1.0, lam=1.0), "ipo": dict(beta=0.01, lam=0.01), "kto": dict(beta=1.5, lam=0.01)}
AUTHORS = Path(__file__).with_name("authors_table1.json")
#: Cells with no authors' number, and why.
NOT_COMPARED = {
    "imagenet100": "the authors' only ImageNet log (CE's) scores 1000-way ImageNet; ImageNet-100 is another task",
}


def authors() -> dict:
    """The authors' logged accuracies: {"source": ..., "methods": {method: {their dataset name: {"O": {"bma", "ref",
    ...}, "T": {...}}}}}."""
    return json.loads(AUTHORS.read_text())


def _theirs(logged: dict, method: str | None, dataset: str, column: str) -> float | None:
    """The authors' number for a cell, in percent: BMA for DPO, IPO and KTO (what they report), CE's
    policy for CE, and for the base row the reference model's ("Ref Acc") from their DPO log, or from
    their CE log where no DPO log has the dataset (ImageNet; CE's test split is their other one)."""
    name = DATASETS[dataset]
    if name is None:
        return None
    if method is None:
        method = next((m for m in ("dpo", "ce") if name in logged["methods"].get(m, {})), "dpo")
        key = "ref"
    else:
        key = "ce" if method == "ce" else "bma"
    value = (logged["methods"].get(method, {}).get(name, {}).get(column) or {}).get(key)
    return None if value is None else round(100 * value, 2)


#: How many classes each Table 1 dataset has as the authors test it (the whole dataset).
CLASSES = {
    "imagenet100": 100,
    "caltech101": 101,
    "oxford_pets": 37,
    "stanford_cars": 196,
    "flowers102": 102,
    "fgvc_aircraft": 100,
    "dtd": 47,
    "sun397": 397,
    "eurosat": 10,
    "food101": 101,
}


def _not_comparable(dataset: str, classes: int, method: str | None, train_on: str) -> str | None:
    """Why a cell's number is not to be set against the authors' (then its diff is None), or None."""
    if CLASSES.get(dataset) is not None and classes != CLASSES[dataset]:
        return f"{classes} classes here, {CLASSES[dataset]} in the authors' test"
    if method is not None and train_on != "imagenet100":
        return f"trained on {train_on}; the authors trained on imagenet100"
    return None


def _their_test_size(logged: dict, method: str | None, dataset: str) -> int | None:
    """How many test images the authors' log of this cell scored (their CE and DPO logs differ on some)."""
    name = DATASETS[dataset]
    if name is None:
        return None
    if method is None:
        method = next((m for m in ("dpo", "ce") if name in logged["methods"].get(m, {})), "dpo")
    return logged["methods"].get(method, {}).get(name, {}).get("test_size")


def _preprocessing(bundle) -> str:
    """The image transform the model was loaded with, in words."""
    steps = getattr(bundle.preprocess, "transforms", [bundle.preprocess])
    return " -> ".join(type(step).__name__ + _args(step) for step in steps)


def _args(step) -> str:
    for name in ("size", "mean"):
        if hasattr(step, name):
            value = getattr(step, name)
            extra = f", std={tuple(round(x, 4) for x in step.std)}" if name == "mean" else ""
            value = tuple(round(x, 4) for x in value) if name == "mean" else value
            return f"({name}={value}{extra})"
    return ""


def _protocol(bundle, n_train, n_test, trained_on, sizes, seed, seeds, configs, logged) -> dict:
    """What this table measured and how, beside what the authors' logs measured."""
    different = {
        d: {m: logged["methods"][m][d]["test_size"] for m in logged["methods"] if d in logged["methods"][m]}
        for d in sorted({d for m in logged["methods"].values() for d in m})
    }
    different = {d: v for d, v in different.items() if len(set(v.values())) > 1}
    return {
        "ours": {
            "n_train": trained_on,
            "n_train_asked": n_train,
            "n_test_cap": n_test,
            "n_test": sizes,
            "data_seed": seed,
            "training_seeds": seeds,
            "cells": "mean over the training seeds, with their sd" if len(seeds) > 1 else "one training seed (no sd)",
            "schedule": configs,
            "what_trains": "the shared W on cached features (frozen encoders), t = 1",
            "activation": bundle.activation or "n/a",
            "preprocessing": _preprocessing(bundle),
        },
        "authors": {
            "n_train": "all of their training set (ImageNet-100's training images)",
            "n_test_cap": 5120,
            "schedule": "full fine-tuning of both encoders and logit_scale: 3 epochs, batch 512, lr 2e-5, Adamax, "
            "cosine, BMA of the weights (PAPER.md; lambda 1 in their ImageNet script)",
            "preprocessing": "Hugging Face transformers' CLIPProcessor with CLIPModel (openai/clip-vit-base-patch32)",
            "seeds": "one (seed 0)",
            "test_sets": "each cell's own test_size from their log (authors_test_size); where their CE and DPO "
            "logs of one dataset scored different test sets: "
            + (", ".join(f"{d} {v}" for d, v in different.items()) or "none"),
        },
    }


def layouts(data_root: str | Path) -> dict[str, Path]:
    """The Table 1 datasets present under data_root, each in the folder of its registry name."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data-root {root} is not a folder (it holds one folder per dataset: {', '.join(DATASETS)})"
        )
    return {name: root / name for name in DATASETS if (root / name).is_dir()}


def row_writer(path: str | Path) -> Callable[[dict], None]:
    """paper_table's on_row for a new JSON Lines file: each finished cell one line, on disk at once.
    The file must not exist (what is there is the user's) and its folder must."""
    path = Path(path).expanduser()
    if path.exists():
        raise FileExistsError(f"--rows {path} exists: choose a new file (bench paper replaces nothing)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--rows {path}: its folder {path.parent} does not exist")
    return lambda row: append_json_line(path, row)


def paper_table(
    model: str,
    pretrained: str | None,
    data_root: str | Path,
    train_on: str = "imagenet100",
    methods: Sequence[str] = METHODS,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    cache: FeatureCache | None = None,
    progress: bool = True,
    seeds: Sequence[int] | None = None,
    on_row: Callable[[dict], None] | None = None,
    workers: int | None = None,
) -> dict:
    """Table 1: W trained on `train_on` with each method, O and T on every dataset found, ours and
    the authors' in percent, and the difference. Missing datasets are listed, not guessed. seed: the
    data's draws; seeds: the training seeds (default: seed alone), each cell their mean with its sd;
    n_test: at most so many test images per dataset (the result gives each dataset's own count).
    The result's "protocol" states sizes, seeds, schedules and preprocessing, ours and the authors'.
    on_row: called with each finished cell ({"dataset", "method", ...the cell}) as soon as it is scored,
    so that what a long bench finished is kept if it stops (the CLI's --rows FILE). workers: the
    DataLoader workers that encode (None: the default; 0 where a container's /dev/shm is small)."""
    found = layouts(data_root)
    if train_on not in found:
        raise FileNotFoundError(f"--data-root {data_root} has no {train_on}/ folder to train on")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"bench paper compares {', '.join(METHODS)} with the authors' logs, not {', '.join(unknown)}")
    seeds = [seed] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be distinct whole numbers, got {seeds!r}")
    specs = {}  # every dataset read, before any model loads or trains: a broken one is one line naming it
    for name, folder in found.items():
        try:
            if name == train_on:
                specs[name] = typographic.real_spec(name, str(folder), n_train=n_train, n_test=n_test, seed=seed)
            else:  # the test split only: nothing of these sets is trained on
                specs[name] = typographic.real_spec(name, str(folder), n_train=0, n_test=n_test, seed=seed, n_val=0)
        except (ValueError, OSError, RuntimeError) as e:
            raise ValueError(f"bench paper cannot read {name} at {folder}: {e}") from None
    bundle = load_clip(model, pretrained=pretrained, device=device)
    spec = dataclasses.replace(specs[train_on], ensemble=())  # Table 1 is O and T: no 80-template ensemble
    feats = typographic.build_features(bundle, spec, cache, progress=progress, workers=workers)
    trained, configs = {}, {}
    for m in methods:
        for s in seeds:
            cfg = typographic.train_config(m, seed=s, **PAPER_SETTINGS.get(m, {}))
            trained.setdefault(m, []).append(typographic.train(feats, cfg, progress=progress)[0])
        configs[m] = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seed"}
    logged, rows, sizes = authors(), {}, {}
    for name in found:
        if name == train_on:
            scored = feats
        else:
            scored = typographic.build_features(
                bundle, specs[name], cache, progress=progress, with_train=False, workers=workers
            )
        sizes[name] = len(scored.test.labels)
        classes = len(specs[name].class_names)
        for m in (None, *methods):
            results = [typographic.evaluate(scored, w) for w in trained.get(m, [None])]
            unlike = _not_comparable(name, classes, m, train_on)
            cell = {}
            for column, key in (("O", "accuracy/clean"), ("T", "accuracy/attacked")):
                runs = [100 * r[key] for r in results]
                value, theirs = statistics.fmean(runs), _theirs(logged, m, name, column)
                cell[column] = {
                    "ours": round(value, 2),
                    "sd": round(statistics.stdev(runs), 2) if len(runs) > 1 else None,
                    "authors": theirs,
                    "diff": None if theirs is None or unlike else round(value - theirs, 2),
                }
            cell |= {"classes": classes, "authors_classes": CLASSES.get(name), "not_comparable": unlike}
            cell["authors_test_size"] = _their_test_size(logged, m, name)
            rows.setdefault(m or "base", {})[name] = cell
            if on_row is not None:
                on_row({"dataset": name, "method": m or "base", **cell})
    return {
        "model": model,
        "pretrained": pretrained or "random init",
        "trained_on": train_on,
        "n_train": len(feats.train.labels),
        "n_test": sizes,
        "seed": seed,
        "seeds": seeds,
        "settings": {m: {**PAPER_SETTINGS.get(m, {}), "schedule": "train.SCHEDULES"} for m in methods},
        "protocol": _protocol(bundle, n_train, n_test, len(feats.train.labels), sizes, seed, seeds, configs, logged),
        "ours": "the shared W (section 3.4) on cached features, t = 1",
        "authors": "full fine-tuning of both encoders, BMA of the weights (their logs: "
        + logged["source"]["repo"]
        + ")",
        "datasets": list(found),
        "missing": [d for d in DATASETS if d not in found],
        "not_compared": {d: why for d, why in NOT_COMPARED.items() if d in found},
        "rows": rows,
    }


def markdown(result: dict) -> str:
    """One row per (method, dataset): O and T, ours / the authors' / the difference, in percent."""
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"
    ours = lambda c: fmt(c["ours"]) + ("" if c.get("sd") is None else f" ± {c['sd']:.1f}")
    protocol = result["protocol"]
    lines = [
        f"Table 1 protocol: {result['model']} ({result['pretrained']}), W trained on {result['trained_on']}. "
        f"Ours: {result['ours']}. Authors: {result['authors']}.",
        "",
        "| method | dataset | O ours | O authors | O diff | T ours | T authors | T diff "
        "| test n (ours/authors') | classes (ours/authors') |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, per_dataset in result["rows"].items():
        for dataset, cell in per_dataset.items():
            o, t = cell["O"], cell["T"]
            values = [ours(o), fmt(o["authors"]), fmt(o["diff"]), ours(t), fmt(t["authors"]), fmt(t["diff"])]
            sizes = f"{result['n_test'][dataset]} / {cell['authors_test_size'] or 'n/a'}"
            classes = f"{cell['classes']} / {cell['authors_classes'] or 'n/a'}"
            mark = f" not comparable: {cell['not_comparable']}" if cell["not_comparable"] else ""
            lines.append(f"| {method} | {dataset} | " + " | ".join(values) + f" | {sizes} | {classes}{mark} |")
    lines += ["", "**Protocol**", "", "| | ours | the authors' |", "|---|---|---|"]
    for key in ("n_train", "n_test_cap", "schedule", "preprocessing"):
        mine = protocol["ours"][key]
        if key == "schedule":
            mine = "; ".join(
                f"{m}: " + ", ".join(f"{k}={v}" for k, v in c.items() if v is not None) for m, c in mine.items()
            )
        lines.append(f"| {key} | {mine} | {protocol['authors'][key]} |")
    ours_seeds = f"{protocol['ours']['cells']}: {protocol['ours']['training_seeds']}"
    lines.append(f"| seeds | {ours_seeds} | {protocol['authors']['seeds']} |")
    lines.append(f"| test sets | data seed {protocol['ours']['data_seed']} | {protocol['authors']['test_sets']} |")
    if result["missing"]:
        lines += ["", "Not under the data root (not measured): " + ", ".join(result["missing"]) + "."]
    for dataset, why in result["not_compared"].items():
        lines += ["", f"No authors' number for {dataset}: {why}."]
    return "\n".join(lines)
