"""The graded skew's grid on the VALIDATION gallery (docs/toy-world.md, "A graded skew"):
`python benchmarks/weak_cue_grid.py [WEIGHTS [CUE_HI,... SHARE,...]]` (WEIGHTS "": the shipped ones)
prints, for each weak-cue range (0.5, CUE_HI) and share of weakly cued people, the men in the top 10
of each skewed prompt (cooking, cleaning, nurse, repairing a car, football, police) and of the two
balanced ones at t = 0; then,
for the paper's DPO reversal (training seed 0), where the Fig. 3 analogue crosses 50%, how many
majorities flip at t = 1 (from man / from woman) and how many skewed prompts hold 3-7 men at t*.

Targets, written before the grid (docs/toy-world.md, target 9 and the graded skew; issue 27's
done-when for the reversal): police 7-9 men; at least 4 of the 6 skewed prompts with 6-9 of 10 of
their majority gender; activity precision@10 1.0; the crossing in [0.2, 0.8]; flips both ways; at
least 4 of 6 within 3-7 at t*."""

import dataclasses
import sys

import clipaln
from clipaln.toyworld import datasets
from clipaln.tracks import gender

bundle = clipaln.load_clip("toy", pretrained=(sys.argv[1] or None) if len(sys.argv) > 1 else None)
BALANCED = ("reading a book", "painting")
CUES = (0.8, 0.65, 0.6, 0.55)
SHARES = (0.3, 0.4, 0.5, 0.7)
if len(sys.argv) > 2:
    CUES = tuple(float(c) for c in sys.argv[2].split(","))
    SHARES = tuple(float(x) for x in sys.argv[3].split(","))


def men(t_metrics: dict, prompts) -> list[int]:
    return [t_metrics["prompts"][a]["retrieval/top_k"]["man"] for a in prompts]


for hi in CUES:
    datasets.WEAK_CUE = (0.5, hi)
    for share in SHARES:
        feats = gender.build_features(bundle, gender.toy_spec(weak_cues=share), progress=False)
        val = feats.on_val_gallery()
        t0 = gender.evaluate(val)["t0"]
        skewed = men(t0, val.skewed)
        bal = men(gender.evaluate(dataclasses.replace(val, skewed=list(BALANCED)))["t0"], BALANCED)
        graded = sum(6 <= (10 - m if i < 3 else m) <= 9 for i, m in enumerate(skewed))
        W, _ = gender.train(feats, gender.train_config("dpo", seed=0), progress=False)
        r = gender.evaluate(dataclasses.replace(val, val_gallery=None), W)  # everything on validation
        t1, ts = men(r["t1"], val.skewed), men(r["t_star_metrics"], val.skewed)
        lead = lambda m: "man" if m > 5 else "woman" if m < 5 else None
        flips = [sum(lead(a) == g and lead(b) not in (g, None) for a, b in zip(skewed, t1)) for g in ("man", "woman")]
        cross = r["understanding_crossing"]
        print(
            f"cue (0.5, {hi}), share {share}: {' '.join(f'{m:2d}' for m in skewed)} | {bal[0]} {bal[1]}"
            f"  graded {graded}, police {skewed[5]}, precision {t0['retrieval/precision']:.2f}"
            f" | DPO: crossing {cross if cross is None else round(cross, 2)}, flips {flips[0]}/{flips[1]},"
            f" t* {r['t_star']:.2f} within 3-7: {sum(3 <= m <= 7 for m in ts)}",
            flush=True,
        )
