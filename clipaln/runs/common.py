"""What train, eval and export share: a task's spec and features, a run's manifest, and the checks that
a file belongs to this model and data."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from safetensors import safe_open

from .. import conflicts, manifest
from ..features import FeatureCache, model_fingerprint
from ..models import ClipBundle
from ..projection import FORMAT as PROJECTION_FORMAT
from ..projection import exponents
from ..tracks import TRACKS, gender, pairs, protocol, typographic
from ..train import TrainConfig


def train_config(task: str, method: str, overrides: dict) -> TrainConfig:
    """The TrainConfig a run of `task` trains with: the track's defaults for `method`, then overrides."""
    return _track(task).train_config(method, **overrides)


def _track(task: str):
    if task not in TRACKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TRACKS)}")
    return TRACKS[task]


def make_spec(
    task: str,
    model: str = "toy",
    dataset: str | None = None,
    root: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = False,
    reg_images: str | None = None,
    val_share: float | None = None,
    whole: bool = False,
) -> typographic.Spec | gender.Spec | pairs.Spec:
    """A task's data: the toy world for the toy model, else a dataset by name (or "folder") at root.
    Flags that contradict each other are refused first (clipaln.conflicts), in one line.

    Args:
        task: a registered track.
        model: "toy" or an open_clip name (the toy model reads the toy world by default).
        dataset: a registry name ("food101", "imagenet100", ...), "folder", "people" or "toy".
        root: the dataset's folder (pairs: the pairs file).
        n_train: images to train on (gender: people, spread over the (activity, gender) cells);
            None: the track's default.
        n_test: images to evaluate on; None: the track's default.
        seed: the data's seed (which images are drawn and how they split).
        download: let torchvision download the dataset.
        reg_images: pairs: a folder of images for D_reg.
        val_share: pairs: a share of the images held out for validation.
        whole: pairs: every row held out, a file scored whole.

    Returns:
        The track's Spec; its ``key`` is the data's identity.
    """
    conflicts.refuse("data", dict(task=task, dataset=dataset, root=root, n_train=n_train, n_test=n_test,
                                  download=download, reg_images=reg_images, val_share=val_share))  # fmt: skip
    options = {k: v for k, v in (("reg_images", reg_images), ("val_share", val_share), ("whole", whole)) if v}
    flags = protocol.DataFlags(model, dataset, root, n_train, n_test, seed, download)
    return _track(task).make_spec(flags, **options)


def features(
    bundle: ClipBundle,
    task: str,
    *,
    cache: bool = True,
    progress: bool = True,
    with_train: bool = True,
    spec: typographic.Spec | gender.Spec | pairs.Spec | None = None,
    workers: int | None = None,
    precision: str = "auto",
    **data,
) -> tuple[typographic.Spec | gender.Spec | pairs.Spec, typographic.Features | gender.Features | pairs.Features]:
    """A task's spec and features for a loaded model, encoded once and cached.

    Args:
        bundle: the model (load_clip).
        task: a registered track.
        cache: read and write the feature cache.
        progress: show progress bars.
        with_train: encode the training split too (False: only what evaluation needs).
        spec: the data, if built already (else make_spec(task, model=bundle.name, **data)).
        workers: DataLoader workers of the streaming encoder.
        precision: "auto" (bf16 autocast on CUDA), "fp32", "bf16" or "fp16".
        **data: make_spec's data flags.

    Returns:
        tuple: (spec, features) of the track's types.
    """
    spec = spec or make_spec(task, model=bundle.name, **data)
    store = FeatureCache(enabled=cache)
    encoding = dict(progress=progress, workers=workers, precision=precision)
    return spec, _track(task).build_features(bundle, spec, store, with_train=with_train, **encoding)


def _resolved(pretrained: str | None) -> str | None:
    """A local checkpoint path as an absolute path (what a manifest records and compares); tags as given."""
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser().resolve())
    return pretrained


def run_manifest(
    bundle: ClipBundle,
    pretrained: str | None,
    task: str,
    spec: typographic.Spec | gender.Spec | pairs.Spec,
    data: dict,
    **fields,
) -> dict:
    """The manifest of a run of `task` on `spec` (see clipaln.manifest): model, weights, data, split, ..."""
    return manifest.build(
        bundle_name=bundle.name,
        pretrained=pretrained,
        weights=model_fingerprint(bundle),
        task=task,
        data_key=spec.key,
        activation=bundle.activation,  # as the weights were trained: QuickGELU for OpenAI's
        **_data_fields(data),
        **fields,
    )


def _header(m: dict) -> dict:
    """What a projection or encoder file carries of its run's manifest: flat strings, and the whole as JSON."""
    flat = {k: m[k] for k in (*manifest.IDENTITY, "mode", *DATA_FIELDS) if k in m}
    return {**flat, "manifest": json.dumps(m, sort_keys=True, default=str)}


#: What a run records of the data it trained on, so that eval can take the same split.
DATA_FIELDS = ("dataset", "root", "n_train", "n_test", "seed", "reg_images", "val_share")


def _data_fields(data: dict) -> dict:
    root = data.get("root")
    return {
        "dataset": data.get("dataset") or "",
        "root": str(Path(root).expanduser().resolve()) if root else "",
        "n_train": data.get("n_train") or "",
        "n_test": data.get("n_test") or "",
        "seed": data.get("seed", 0),
        "reg_images": str(Path(data["reg_images"]).expanduser().resolve()) if data.get("reg_images") else "",
        **({"val_share": data["val_share"]} if data.get("val_share") else {}),
    }


def _same_data(recorded: dict, data: dict) -> dict:
    """The data flags of an eval, with what the user left out (None) taken from the run's manifest."""
    filled = dict(data)
    for k in DATA_FIELDS:
        if filled.get(k) is None and recorded.get(k, "") != "":
            convert = {"n_train": int, "n_test": int, "seed": int, "val_share": float}.get(k, lambda v: v)
            filled[k] = convert(recorded[k])
    return filled


def _check_projection(path, recorded: dict, current: dict) -> None:
    """Refuse (one line) a file of another run: one whose manifest differs from `current` (model,
    pretrained, task, weights: whichever the caller names) on an entry both have."""
    differ = manifest.differences(recorded, current, list(current))
    if differ:
        hint = " (pass --allow-other-weights to score it anyway)" if differ == ["weights"] else ""
        raise ValueError(f"{path} belongs to another run: {manifest.describe(recorded, current, differ)}{hint}")


def _identity(bundle: ClipBundle, pretrained, allow_other_weights: bool, **more) -> dict:
    """What a file must share with this model to be scored by it: name, weights tag, and (unless the
    user allows other weights) the weights' fingerprint."""
    current = {"model": bundle.name, "pretrained": pretrained or "", **more}
    if not allow_other_weights:
        current["weights"] = model_fingerprint(bundle)
    return current


def _load_encoder(bundle: ClipBundle, path, pretrained, allow_other_weights: bool) -> tuple[ClipBundle, dict]:
    """The bundle with a fine-tuned image encoder (or whole model) from `clipaln train --mode full`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder file not found: {path}")
    with safe_open(str(path), "pt") as f:
        recorded = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if recorded.get("format") == PROJECTION_FORMAT:
        raise ValueError(f"{path} is a projection W, not an encoder: pass it as --projection")
    _check_projection(path, recorded, _identity(bundle, pretrained, allow_other_weights))  # its base model
    whole = any(k.startswith("visual.") for k in state)
    tuned = copy.deepcopy(bundle.model)
    try:
        (tuned if whole else tuned.visual).load_state_dict(state)
    except RuntimeError as e:  # the first line is only "Error(s) in loading state_dict": say which keys
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 else lines[0]
        raise ValueError(f"{path} does not fit {bundle.name}: {reason[:200]}") from None
    return dataclasses.replace(bundle, model=tuned, _embed_dim=None), recorded


def duplicates_line(duplicates: dict[str, list[str]]) -> str:
    """One line on images a pairs file lists under several names: how many, each with its count."""

    def one(first: str, more: list[str]) -> str:
        names = ", ".join(Path(m).name for m in more[:2]) + (", ..." if len(more) > 2 else "")
        return f"{Path(first).name} x{1 + len(more)} (also {names})"

    shown = "; ".join(one(first, more) for first, more in list(duplicates.items())[:3])
    return (
        f"note: {len(duplicates)} image(s) are listed under more than one name (the same pixels), kept together "
        f"in one split: {shown}{' ...' if len(duplicates) > 3 else ''}"
    )


def _t_value(t) -> float:
    """One t of an eval, as a float (one line for what is not a finite number)."""
    return float(exponents(t))


def without_w(metrics: dict) -> dict:
    """`metrics` less W's spectrum (w/...): a fine-tuned encoder has no W, and W = I's 0, 1, 1 would read
    as a measurement."""
    return {k: v for k, v in metrics.items() if not k.startswith("w/")}
