"""Every benchmark `clipaln bench NAME` runs, in one registry: what it runs, what it needs, the flags it
reads (any other flag given is refused, not ignored), its default training seeds and how it prints
without --json. A new benchmark is a function of a `Context` and one `register` line (CONTRIBUTING.md;
tests/test_bench.py adds one that way)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..features import FeatureCache
from ..models import ClipBundle, load_clip
from ..tracks import gender, typographic
from ..tracks.protocol import DataFlags
from .ablation import ablation_table
from .adversarial import adversarial_table
from .paper import markdown as paper_markdown
from .paper import paper_table, row_writer
from .paper_claims import claims_markdown, claims_run
from .results import format_table, typographic_table
from .retrieval import gender_table, regime_table
from .timing import encode_bench, speed
from .tuning import dial_table, tune_table

#: What the toy-world tables read: the data's sizes and seed, the training seeds, the cache.
TOY_READS = frozenset({"n_train", "n_test", "seed", "seeds", "no_cache"})


@dataclass
class Context:
    """What a benchmark runs on: the flags given (`flags`, argparse's names) and, built on first use,
    the toy CLIP, the typographic and gender specs at the flags' sizes, and the feature cache."""

    flags: dict[str, Any]
    name: str = "this benchmark"
    both_tracks: bool = False  # its --n-train and --n-test size the typographic and the gender data alike

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.flags["seeds"])

    @functools.cached_property
    def cache(self) -> FeatureCache:
        return FeatureCache(enabled=not self.flags.get("no_cache"))

    @functools.cached_property
    def bundle(self) -> ClipBundle:
        return load_clip("toy", device=self.flags.get("device"))

    def _toy_world(self) -> DataFlags:
        f = self.flags
        return DataFlags(n_train=f.get("n_train"), n_test=f.get("n_test"), seed=f.get("seed", 0))

    @functools.cached_property
    def spec(self) -> typographic.Spec:
        return typographic.make_spec(self._toy_world())

    @functools.cached_property
    def people(self) -> gender.Spec:
        try:
            return gender.make_spec(self._toy_world())
        except ValueError as e:
            if not self.both_tracks:  # a gender benchmark alone: the track's own words are clear
                raise
            raise ValueError(f"{self.name} trains both tracks on the same --n-train and --n-test, and {e}") from None


@dataclass(frozen=True)
class Bench:
    run: Callable[[Context], dict]
    needs: str = "toy"  # "toy": the toy world (no --model); "own": it loads what it measures
    reads: frozenset[str] = TOY_READS
    seeds: tuple[int, ...] | None = (0, 1, 2)  # default --seeds (None: --seed alone)
    markdown: Callable[[dict], str] | None = None  # printed without --json (else JSON always)
    both_tracks: bool = False  # it trains the typographic and the gender track on the same sizes


def _tune(c: Context) -> dict:
    if len(c.seeds) != 1:
        raise ValueError("bench tune trains one seed: pass --seeds N (one seed)")
    return tune_table(c.bundle, c.spec, c.cache, seed=c.seeds[0])


def _paper(c: Context) -> dict:
    f = c.flags
    if f.get("data_root") is None:
        raise ValueError(
            "bench paper reads the datasets under --data-root ROOT (ROOT/imagenet100, ROOT/oxford_pets, ...)"
        )
    sizes = {k: f[k] for k in ("n_train", "n_test") if f.get(k) is not None}
    on_row = None if f.get("rows") is None else row_writer(f["rows"])  # checked before any work
    return paper_table(f["model"], f.get("pretrained"), f["data_root"], f.get("train_on", "imagenet100"),
                       seed=f.get("seed", 0), device=f.get("device"), cache=c.cache, progress=not f.get("json"),
                       seeds=c.seeds, on_row=on_row, workers=f.get("workers"), **sizes)  # fmt: skip


BENCHES: dict[str, Bench] = {
    "typographic": Bench(
        lambda c: typographic_table(c.bundle, c.spec, c.cache, seeds=c.seeds, progress=False), markdown=format_table
    ),
    "tune": Bench(_tune, seeds=(0,)),
    "dial": Bench(lambda c: dial_table(c.bundle, c.spec, c.people, c.cache, seeds=c.seeds), both_tracks=True),
    "claims": Bench(
        lambda c: claims_run(c.bundle, c.spec, c.people, c.cache, seeds=c.seeds),
        markdown=lambda r: claims_markdown(r["claims"]),
        both_tracks=True,
    ),
    "gender": Bench(lambda c: gender_table(c.bundle, c.people, c.cache, seeds=c.seeds)),
    "regime": Bench(lambda c: regime_table(c.bundle, c.people, c.cache, seeds=c.seeds)),
    "speed": Bench(
        lambda c: speed(c.flags.get("device"), c.flags["n_toy"], c.flags.get("n_vit")),
        needs="own",
        reads=frozenset({"n_toy", "n_vit"}),
    ),
    "encode": Bench(
        lambda c: encode_bench(c.flags["model"], c.flags["n"], c.flags.get("workers"), c.flags.get("device")),
        needs="own",
        reads=frozenset({"model", "n", "workers"}),
    ),
    "ablation": Bench(lambda c: ablation_table(c.bundle, c.spec, c.cache, seeds=c.seeds)),
    "adversarial": Bench(lambda c: adversarial_table(c.bundle, c.spec, c.cache, seeds=c.seeds)),
    "paper": Bench(
        _paper,
        needs="own",
        reads=frozenset({"model", "pretrained", "data_root", "train_on", "n_train", "n_test", "seed", "seeds"})
        | {"no_cache", "rows", "workers"},
        seeds=None,
        markdown=paper_markdown,
    ),
}


def register(name: str, bench: Bench) -> None:
    """Add a benchmark, so that `clipaln bench NAME` runs it; a taken name is refused."""
    if name in BENCHES:
        raise ValueError(f"a benchmark named {name!r} is registered already")
    if not isinstance(bench, Bench):
        raise ValueError(f"register a clipaln.bench.registry.Bench, not {type(bench).__name__}")
    BENCHES[name] = bench


#: Installed packages name their benchmarks here (`clean = "my_package.benches:clean"`, a Bench or a
#: function of a Context); the CLI loads them at start.
ENTRY_POINTS = "clipaln.benchmarks"
#: Benchmark plugins that failed to load: name -> why.
FAILED_PLUGINS: dict[str, str] = {}


def load_plugins() -> list[str]:
    """Register every installed package's benchmarks (entry-point group "clipaln.benchmarks"); their
    names. One that fails to load costs only itself: why is kept in FAILED_PLUGINS."""
    from importlib.metadata import entry_points

    added = []
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name in BENCHES:
            continue
        try:
            obj = ep.load()
            register(ep.name, obj if isinstance(obj, Bench) else Bench(obj))
            added.append(ep.name)
        except BaseException as e:  # SystemExit and KeyboardInterrupt at import too: a plugin's, not ours
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            FAILED_PLUGINS[ep.name] = f"the benchmark plugin {ep.name!r} ({ep.value}) failed to load: {reason}"
    return added


def run(name: str, flags: dict[str, Any]) -> dict:
    """Run the benchmark `name` with the flags given (argparse's names and values; `seeds` None takes
    the benchmark's default). Returns its result, a plain dict."""
    bench = BENCHES[name]
    if bench.needs == "toy" and flags.get("model", "toy") != "toy":
        raise ValueError("--model is for bench encode and paper; the other benchmarks run in the toy world")
    if flags.get("seeds") is None:
        flags = {**flags, "seeds": bench.seeds if bench.seeds is not None else (flags.get("seed", 0),)}
    return bench.run(Context(flags, f"bench {name}", bench.both_tracks))
