"""The gender track over seeds (`clipaln bench gender`) and the phase diagram of the gender regime
(`clipaln bench regime`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..features import (
    FeatureCache,
)
from ..models import ClipBundle
from ..projection import spectrum, within_target
from ..tracks import gender, regime
from .records import made_with


def gender_table(
    bundle: ClipBundle, spec: gender.Spec, cache: FeatureCache | None = None, seeds: Sequence[int] = (0, 1, 2)
) -> dict:
    """Each preference method on the gender track, for each training seed: t = 0 / t = 1 / t*
    retrieval (per prompt counts, summed NDKL, balanced and flipped prompts, precision), the distinct
    counts each prompt takes over t in [0, 1], the Fig. 3 crossing and W's spectrum; then ours, the
    prompt reflection along the image gender direction (no training, so one row), under "reflection"."""
    feats = gender.build_features(bundle, spec, cache)

    def row(proj) -> dict:
        r = gender.evaluate(feats, proj)
        r.pop("curve")
        r.pop("understanding")
        return r

    out = {}
    for method in gender.DEFAULTS:
        out[method] = []
        for seed in seeds:
            proj, _ = gender.train(feats, gender.train_config(method, seed=seed), progress=False)
            stats = spectrum(proj)
            out[method].append({"seed": seed, **row(proj), **stats, "w_within_target": within_target(stats)})
    out["reflection"] = [{"seed": None, **row(gender.PromptReflection(gender.image_gender_direction(feats)))}]
    return out


#: The alignments (cos between the captions' and the images' gender directions) of the phase diagram.
REGIME_ALIGNMENTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.84, 0.95)
PAPER_CROSSING = 0.42  # the paper's Fig. 3: t* where the understanding of gender crosses 50%


def _interpolate(xs: list[float], ys: list[float], y: float) -> float | None:
    """The x where the piecewise-linear curve (xs, ys) first reaches y; None when it never does."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if (y0 - y) * (y1 - y) <= 0 and y0 != y1:
            return x0 + (x1 - x0) * (y - y0) / (y1 - y0)
    return None


def regime_table(
    bundle: ClipBundle | None = None,
    people: gender.Spec | None = None,
    cache: FeatureCache | None = None,
    alignments: Sequence[float] = REGIME_ALIGNMENTS,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict:
    """`clipaln bench regime`: the phase diagram of notebook 04 (regime.phase_diagram: DPO, IPO and
    KTO with the gender track's defaults, world and training seed each of `seeds`, at each alignment);
    per method, the mean Fig. 3 crossing per alignment and the alignment band where DPO's mean
    crossing lies in [0.3, 0.6] (and where it equals the paper's 0.42); with a bundle and the gender
    track's spec, where the toy sits (its alignment on the test gallery, under its own captions and
    three other wordings)."""
    rows = []
    for s in seeds:
        rows += regime.phase_diagram(alignments, seeds=(s,), seed=s)
    summary = {}
    for m in gender.DEFAULTS:
        mean = {}
        for c in alignments:
            got = [r["understanding/crossing"] for r in rows if r["method"] == m and abs(r["alignment"] - c) < 1e-3]
            mean[c] = sum(got) / len(got) if got and None not in got else None
        crossing_at = [(c, v) for c, v in mean.items() if v is not None]
        xs, ys = [c for c, _ in crossing_at], [v for _, v in crossing_at]
        summary[m] = {
            "mean_crossing": {str(c): v for c, v in mean.items()},
            "alignment_at_crossing_0.3": _interpolate(xs, ys, 0.3),
            "alignment_at_crossing_0.6": _interpolate(xs, ys, 0.6),
            "alignment_at_paper_crossing": _interpolate(xs, ys, PAPER_CROSSING),
        }
    out = {"rows": rows, "summary": summary, "paper_crossing": PAPER_CROSSING, "seeds": list(seeds)}
    if bundle is not None and people is not None:
        feats = gender.build_features(bundle, people, cache, progress=False)
        out["toy"] = {"alignment": regime.alignment_by_wording(bundle, feats), "made_with": made_with(bundle, people)}
    return out
