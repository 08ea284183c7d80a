"""The request a started run records in OUT.partial, so that --resume needs no flag typed again."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .common import _resolved

#: The arguments a run was started with, beside its checkpoints in OUT.partial (dropped with them).
REQUEST = "checkpoint.request.json"


def as_recorded(request: dict) -> dict:
    """train_run's keywords with local paths made absolute, as a started run records them (a resume
    may be typed in another folder)."""
    out = dict(request)
    for k in ("root", "reg_images"):
        if out.get(k):
            out[k] = str(Path(out[k]).expanduser().resolve())
    out["pretrained"] = _resolved(out.get("pretrained"))
    return out


def started_request(out: str | Path) -> dict | None:
    """The arguments the unfinished run in OUT.partial was started with (train_run's keywords, but
    out, resume, overwrite, device, cache and progress), or None when it recorded none. A run killed
    before its first checkpoint has its request too: --resume starts that request over from step 0."""
    work = Path(out).expanduser().with_name(Path(out).expanduser().name + ".partial")
    path = work / REQUEST
    if not path.is_file():
        return None
    fix = f"it is not what clipaln wrote: remove {work} to start over"
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not JSON ({e}); {fix}") from None
    if not isinstance(request, dict):
        raise ValueError(f"{path} holds a {type(request).__name__}, not the run's request; {fix}")
    for field, kind in REQUEST_FIELDS.items():
        if not isinstance(request.get(field), kind):
            raise ValueError(f"{path}: {field} is {request.get(field)!r}, not a {kind.__name__}; {fix}")
    unknown = sorted(set(request) - {*REQUEST_FIELDS, *OPTIONAL_FIELDS})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; {fix}")
    for field, kinds in OPTIONAL_FIELDS.items():
        value = request.get(field)
        if field in request and not (
            any(isinstance(value, k) and not (isinstance(value, bool) and k is not bool) for k in kinds)
            and (not isinstance(value, list) or all(isinstance(v, str) for v in value))
            and (not isinstance(value, float) or math.isfinite(value))
        ):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise ValueError(f"{path}: {field} is {value!r}, not {names}; {fix}")
    return request


#: What a request file must hold, and of what type; and what it may hold (train_run's other keywords).
REQUEST_FIELDS = {"task": str, "method": str, "mode": str, "overrides": dict}
_N = (int, type(None))
_S = (str, type(None))
OPTIONAL_FIELDS = {
    "checkpoint_every": _N,
    "train_text": (bool,),
    "lock_image": (bool,),
    "report_to": (list,),
    "eval_every": _N,
    "model": _S,
    "pretrained": _S,
    "dataset": _S,
    "root": _S,
    "n_train": _N,
    "n_test": _N,
    "seed": _N,
    "reg_images": _S,
    "val_share": (float, int, type(None)),
    "download": (bool,),
    "precision": (str,),
}  # fmt: skip (how a run reads its data and where it runs, the flags of the resume give: never recorded)
