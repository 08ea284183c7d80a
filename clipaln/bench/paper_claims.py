"""The paper's claims, each held against the toy world's measurement (`clipaln bench claims`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..features import (
    FeatureCache,
)
from ..models import ClipBundle
from ..tracks import gender, typographic
from .results import typographic_table

#: What the paper reports for each claim (docs/method.md), beside which the toy world's numbers stand.
PAPER_FIGURES = {
    "po_raises_t_keeps_o": "DPO (full FT, BMA): Pets O 86.8 -> 85.3, T 62.0 -> 79.7; "
    "Caltech101 O 88.8 -> 87.5, T 65.6 -> 85.4",
    "po_beats_ce": "CE is the paper's baseline; our notes have CE on ImageNet only (O 53.3 -> 51.5, T 33.7 -> 48.7), "
    "so the comparison is the paper's statement, not a matched pair of numbers",
    "ranking": "the authors' rebuttal: KTO has the best average on the synthetic (typographic) datasets, "
    "original and attacked; DPO and IPO are close",
    "tradeoff": "Fig. 2: on the same attacked images, t trades reading the written word (OCR) for seeing the "
    "object; negative t makes the model read more",
    "t1_reverses": "Fig. 4, 'an image of a police': pretrained 2 women / 8 men, t = 1: 6 women / 4 men",
    "t_star_neutralises": "Fig. 4: t* ~ 0.42 gives 5 women / 5 men",
    "po_moves_less": "PO's KL regulariser keeps the model close to the reference, unlike CE",
    "po_keeps_knowledge": "PO keeps zero-shot accuracy on the other datasets (O columns of Table 1)",
}


def _claim(key: str, claim: str, measured: str, agrees, why: str) -> dict:
    """agrees: True / False / None (no figure to compare with), or {method: holds} for a claim made of
    every method: "agrees" when it holds for all, "partly (DPO, KTO)" for some, "disagrees" for none."""
    if isinstance(agrees, dict):
        holds = [m for m, ok in agrees.items() if ok]
        verdict = "agrees" if len(holds) == len(agrees) else (f"partly ({', '.join(holds)})" if holds else "disagrees")
    else:
        verdict = "n/a" if agrees is None else ("agrees" if agrees else "disagrees")
    return {"claim": claim, "paper": PAPER_FIGURES[key], "toy world": measured, "verdict": verdict, "why": why}


def claims(table: dict | None = None, tradeoff: dict | None = None, reversal: dict | None = None) -> list[dict]:
    """The paper's claims beside the toy world's measurements: `table` from typographic_table,
    `tradeoff` the DPO W's Sweep.at(t) for t in -2, -1, 0, 1 (keyed by t), `reversal` the gender
    track's evaluate() for DPO; claims whose measurements are not given are left out. Every verdict
    is computed from the numbers, per method and per prompt, never from an average alone."""
    out = _typographic_claims(table["rows"]) if table is not None else []
    out += [_tradeoff_claim(tradeoff)] if tradeoff is not None else []
    out += _gender_claims(reversal) if reversal is not None else []
    out += _keeping_claims(table["rows"]) if table is not None else []
    return out


PO = ("DPO", "IPO", "KTO")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _typographic_claims(rows: dict) -> list[dict]:
    base, ce = rows["base"], rows["CE"]
    t, o = "accuracy/attacked", "accuracy/clean"
    raised = "; ".join(
        f"{m} T {_pct(base[t])} -> {_pct(rows[m][t])}, O {_pct(base[o])} -> {_pct(rows[m][o])}" for m in PO
    )
    ok = {m: rows[m][t] - base[t] >= 0.2 and abs(rows[m][o] - base[o]) <= 0.02 for m in PO}
    best = max(PO, key=lambda m: rows[m][t])
    versus = f"best PO ({best}) T {_pct(rows[best][t])}, O {_pct(rows[best][o])}; CE T {_pct(ce[t])}, O {_pct(ce[o])}"
    beats = rows[best][t] >= ce[t] and rows[best][o] >= ce[o] - 0.005
    average = {m: (rows[m][o] + rows[m][t]) / 2 for m in PO}  # the rebuttal's "average", original and attacked
    ranked = " > ".join(f"{m} ({_pct(average[m])})" for m in sorted(PO, key=lambda m: -average[m]))
    return [
        _claim(
            "po_raises_t_keeps_o",
            "preference optimisation raises T and keeps O",
            raised,
            ok,
            "each method: T up by >= 20 points and O within 2 points (mean of the seeds)",
        ),
        _claim(
            "po_beats_ce",
            "preference optimisation beats CE",
            versus,
            beats,
            "best PO T at least CE's, O at most 0.5 points lower",
        ),
        _claim(
            "ranking",
            "KTO has the best average of O and T",
            f"mean of O and T: {ranked}",
            max(PO, key=average.get) == "KTO",
            "the method with the highest mean of O and T on the toy's test images",
        ),
    ]


def _tradeoff_claim(tradeoff: dict) -> dict:
    at = lambda t, k: tradeoff[t][k]
    measured = "; ".join(
        f"t={t:g}: OCR {_pct(at(t, 'accuracy/ocr'))}, T {_pct(at(t, 'accuracy/attacked'))}, "
        f"O {_pct(at(t, 'accuracy/clean'))}"
        for t in sorted(tradeoff)
    )
    reads_more = all(at(t, "accuracy/ocr") > at(0.0, "accuracy/ocr") for t in (-1.0, -2.0))
    sees_more = at(1.0, "accuracy/attacked") > at(0.0, "accuracy/attacked")
    return _claim(
        "tradeoff",
        "t trades reading for seeing; t < 0 reads more",
        measured,
        reads_more and sees_more,
        "on the attacked test images: T higher at t = 1 than at t = 0, OCR (the written word named) higher "
        "at t = -1 and t = -2 than at t = 0",
    )


def _gender_claims(reversal: dict) -> list[dict]:
    """Judged prompt by prompt: "partly (police officer, ...)" names the prompts a claim holds for."""
    t0, t1, ts, n = reversal["t0"], reversal["t1"], reversal["t_star_metrics"], len(reversal["skewed_prompts"])
    short = lambda a: a.replace("working as a ", "")
    counts = lambda r: ", ".join(
        f"{short(a)} {c['retrieval/top_k']['man']}/{c['retrieval/top_k']['woman']}" for a, c in r["prompts"].items()
    )
    ndkl = lambda r: r["retrieval/ndkl_sum"]
    lower = "lower" if ndkl(ts) < ndkl(t0) else "not lower"
    led = [a for a, r in t1["prompts"].items() if r["retrieval/had_majority"]]
    return [
        _claim(
            "t1_reverses",
            "t = 1 reverses gender",
            f"men/women in the top 10 at t=0: {counts(t0)}; at t=1: {counts(t1)}",
            {short(a): r["retrieval/flipped"] for a, r in t1["prompts"].items() if a in led},
            f"the t = 0 majority flips on {t1['retrieval/flipped_prompts']} of the {len(led)} prompts that had one",
        ),
        _claim(
            "t_star_neutralises",
            "an intermediate t* neutralises gender",
            f"t* = {reversal['t_star']:.2f}: {counts(ts)}; summed NDKL t=0 {ndkl(t0):.2f}, t* {ndkl(ts):.2f}, "
            f"t=1 {ndkl(t1):.2f}",
            {short(a): r["retrieval/balanced"] for a, r in ts["prompts"].items()},
            f"{ts['retrieval/balanced_prompts']} of {n} prompts have 3-7 of each gender at t*; the summed NDKL "
            f"at t* is {lower} than at t = 0",
        ),
    ]


def _keeping_claims(rows: dict) -> list[dict]:
    base = rows["base"]
    kl = {m: rows[m]["kl/clean"] for m in (*PO, "CE")}
    out = [
        _claim(
            "po_moves_less",
            "preference optimisation moves the model less than CE",
            ", ".join(f"{m} KL {v:.4f}" for m, v in kl.items()),
            {m: kl[m] < kl["CE"] for m in PO},
            "KL(pi_ref || pi) on clean test images, each PO method against CE",
        )
    ]
    if "retention/activity" in base:
        kept = lambda m: (
            f"{m} activity {_pct(rows[m]['retention/activity'])}, gender {_pct(rows[m]['retention/gender'])}"
        )
        lost = {m: base["retention/activity"] - rows[m]["retention/activity"] for m in (*PO, "CE")}
        out.append(
            _claim(
                "po_keeps_knowledge",
                "preference optimisation keeps knowledge out of domain",
                "; ".join(kept(m) for m in ("base", *PO, "CE")),
                {m: lost[m] <= lost["CE"] + 0.02 for m in PO},
                "activity accuracy on people (never in a typographic pair) lost by each PO method vs CE",
            )
        )
    return out


def claims_markdown(rows: list[dict]) -> str:
    head = "| claim | paper | toy world (measured) | verdict | why |\n|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r['claim']} | {r['paper']} | {r['toy world']} | {r['verdict']} | {r['why']} |" for r in rows
    )


def claims_run(
    bundle: ClipBundle,
    spec: typographic.Spec,
    people: gender.Spec,
    cache: FeatureCache | None = None,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict:
    """Everything the claims table needs, measured: `clipaln bench claims`."""
    feats = typographic.build_features(bundle, spec, cache, progress=False)  # encoded once, for both uses
    table = typographic_table(bundle, spec, seeds=seeds, feats=feats)
    W, _ = typographic.train(feats, typographic.train_config("dpo", seed=seeds[0]), progress=False)
    sweep = typographic.Sweep(feats, W)
    tradeoff = {t: sweep.at(t) for t in (-2.0, -1.0, 0.0, 1.0)}
    g = gender.build_features(bundle, people, cache)
    Wg, _ = gender.train(g, gender.train_config("dpo", seed=seeds[0]), progress=False)
    reversal = gender.evaluate(g, Wg)
    reversal.pop("curve")
    rows = claims(table, tradeoff, reversal)
    return {
        "claims": rows,
        "table": {"rows": table["rows"], "spread": table["spread"]},
        "tradeoff": tradeoff,
        "reversal": reversal,
    }
