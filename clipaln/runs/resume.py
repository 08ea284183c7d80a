"""--resume from the command line: the unfinished run's own request, so that no flag need be typed
again, and one line for a flag typed that differs from it (a resumed run continues as it started)."""

from __future__ import annotations

from pathlib import Path

from .common import train_config
from .request import as_recorded, started_request

#: train_run's keywords a resumed run may change: how it runs and logs, not what it trains.
FREE_ON_RESUME = ("checkpoint_every", "report_to", "eval_every", "device", "cache", "progress", "workers")
#: train's flags that say where and how to run, not what: never compared on resume.
NOT_COMPARED = ("resume", "out", "overwrite", "quiet", "no_cache", "config", "device", "workers", "lock_text")


def resumed_request(
    request: dict, out: str | Path, typed: set[str], config_fields: set[str] | None, data_seed: int | None
) -> dict:
    """The request to resume OUT.partial with.

    Args:
        request: train_run's keywords from the flags (and config file) of this invocation.
        out: the run's folder; its request is read from OUT.partial (runs.started_request).
        typed: the flags typed on the command line, by argparse dest (a flag typed at its default counts).
        config_fields: the fields of the --config file given, or None without one.
        data_seed: --data-seed as typed (the data seed is compared only when it is typed).

    Returns:
        `request` itself when OUT.partial recorded none (the run starts over); else the recorded
        request, with the flags of FREE_ON_RESUME that were typed. A typed flag (or config field)
        that differs from what the run trains with raises ValueError, one line; a TrainConfig field
        the run did not set is compared with the track's default, what it trains with.
    """
    started = started_request(out)
    if started is None:
        return request
    run_overrides = started.pop("overrides")
    compared = _typed_against_run(request, typed, config_fields or set(), data_seed, started, run_overrides)
    for name, (typed_value, run_value) in compared.items():
        if typed_value != run_value:
            flag = name if name == "task" else "--" + name.replace("_", "-")
            flag = "--pairs" if flag == "--root" and started.get("task") == "pairs" else flag  # --pairs sets root
            differs = f"{flag} {typed_value} differs from the run's {run_value}"
            raise ValueError(f"{differs} ({out}.partial): refusing to resume")
    typed = {"bma" if d == "no_bma" else d for d in typed}
    kept = {k: request[k] for k in request if k not in started or (k in FREE_ON_RESUME and k in typed)}
    given = config_fields is not None  # a config file's fields count as typed
    overrides = {**run_overrides, **{k: v for k, v in request["overrides"].items() if k in typed or given}}
    return {**started, **kept, "overrides": overrides}


def _typed_against_run(
    request: dict, typed: set[str], config_fields: set[str], data_seed, started: dict, run_overrides: dict
) -> dict:
    """{name: (as typed, as the run has it)} for each flag typed (or config field given) that says what
    the run trains. On resume --seed is the training seed; the data seed is compared only when
    --data-seed is typed."""
    typed = typed - set(NOT_COMPARED) - set(FREE_ON_RESUME)
    pairs = {"task": (request["task"], started.get("task"))}
    typed_overrides, recorded = request["overrides"], as_recorded(request)
    trains_with = train_config(started["task"], started["method"], run_overrides).__dict__
    config_keys = set(trains_with) - {"method"}
    for dest in typed | config_fields:
        if dest in config_keys or dest in config_fields - {"method"}:
            pairs[dest] = (typed_overrides.get(dest), trains_with.get(dest))
        elif dest == "no_bma":
            pairs["bma"] = (False, trains_with["bma"])
        elif dest == "data_seed":
            pairs["data_seed"] = (data_seed, started.get("seed"))
        elif dest in recorded:
            pairs[dest] = (recorded[dest], started.get(dest))
    return pairs
