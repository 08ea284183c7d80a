"""The done-when numbers of issue 27 for a toy CLIP: `python benchmarks/gender_done_when.py [WEIGHTS]`.

WEIGHTS: a toy safetensors file (default: the shipped weights). Prints, per method and training
seed on the gender track's test gallery: where the Fig. 3 analogue crosses 50%, the prompts whose
majority flips at t = 1 (man-majority and woman-majority at t = 0), how many skewed prompts hold 3-7
of each gender at t* (chosen on the validation gallery), the summed NDKL at t = 0 and t*, how many
take 4 or more distinct counts over t in [0, 1], and W's spectrum; then the toy's cos(G, d)."""

import json
import sys

import clipaln
from clipaln import bench
from clipaln.tracks import gender, phenomena

weights = sys.argv[1] if len(sys.argv) > 1 else None
bundle = clipaln.load_clip("toy", pretrained=weights)


def summary(row: dict) -> dict:
    t0, t1, ts = row["t0"]["prompts"], row["t1"]["prompts"], row["t_star_metrics"]["prompts"]
    lead = lambda c: "man" if c["man"] > c["woman"] else "woman" if c["woman"] > c["man"] else None
    flips = {"man": 0, "woman": 0}
    for p, r in t0.items():
        before, after = lead(r["retrieval/top_k"]), lead(t1[p]["retrieval/top_k"])
        if before and after and before != after:
            flips[before] += 1
    return {
        "seed": row["seed"],
        "crossing": row["understanding_crossing"],
        "t0_men": [t0[p]["retrieval/top_k"]["man"] for p in t0],
        "t1_men": [t1[p]["retrieval/top_k"]["man"] for p in t1],
        "flips_from_man/woman": [flips["man"], flips["woman"]],
        "t_star": round(row["t_star"], 3),
        "t_star_men": [ts[p]["retrieval/top_k"]["man"] for p in ts],
        "t_star_within_3_7": sum(3 <= ts[p]["retrieval/top_k"]["man"] <= 7 for p in ts),
        "ndkl_t0/t_star": [
            round(row["t0"]["retrieval/ndkl_sum"], 3),
            round(row["t_star_metrics"]["retrieval/ndkl_sum"], 3),
        ],
        "distinct_ge4": sum(v >= 4 for v in row["distinct_counts"].values()),
        "S": [round(row["w/s_min"], 3), round(row["w/s_max"], 3)],
        "within": row["w_within_target"],
    }


table = bench.gender_table(bundle, gender.toy_spec())
for method in ("dpo", "ipo", "kto"):
    for row in table[method]:
        print(method, json.dumps(summary(row)))
print(
    "reflection",
    json.dumps(summary({**table["reflection"][0], "seed": None, "w/s_min": 1, "w/s_max": 1, "w_within_target": None})),
)
r = phenomena.measure(bundle)
print(json.dumps({k: v for k, v in r.items() if k.startswith(("gender/", "retrieval/satur", "retrieval/police"))}))
