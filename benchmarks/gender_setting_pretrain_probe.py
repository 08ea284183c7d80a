"""Probe: does a gendered *setting* in the toy's pretraining lower cos(G, d)? (docs/toy-world.md, target 11)

`python benchmarks/gender_setting_pretrain_probe.py SHARE STEPS OUT [WEAK]` pretrains a toy CLIP for
STEPS steps in which a SHARE of the people scenes get a background tinted by the person's gender
(blue for men, orange for women; the galleries of `clipaln eval toy` keep their plain backgrounds),
and of those a WEAK share (default 0) draw the person with a weak figure cue (render's cue 0.5-0.6),
so that the setting, not the figure, tells their gender there; then prints the phenomena,
`gender/alignment` among them. About 11 minutes for 500 steps on 2 cores.
It writes nothing into the package. Last runs (500 steps each), cos(G, d) over the four wordings:
SHARE 0: 0.873-0.877; SHARE 0.8: 0.877-0.884; SHARE 0.8, WEAK 0.6: 0.833-0.839. The setting alone
does not move the alignment; with weak figures it moves it by 0.04, far from the band [0.21, 0.44].
"""

import json
import sys
from pathlib import Path

from clipaln.toyworld import pretrain as P

share, steps, out = float(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
weak = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
TINT = {"man": (150, 175, 235), "woman": (240, 185, 150)}
plain = P.sample_scene


def sample_scene(rng):
    kwargs, captions = plain(rng)
    if "person" in kwargs and rng.random() < share:
        tint = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in TINT[kwargs["person"]])
        kwargs = {**kwargs, "background": tint}
        if rng.random() < weak:
            kwargs["cue"] = rng.uniform(0.5, 0.6)
    return kwargs, captions


P.sample_scene = sample_scene
P.pretrain(P.PretrainConfig(steps=steps, prior_weight=0.0), out, log=print)  # as measured: v2, no language prior

import clipaln  # noqa: E402
from clipaln.tracks import phenomena  # noqa: E402

r = phenomena.measure(clipaln.load_clip("toy", pretrained=str(out / "toy_clip.safetensors")))
keep = ("gender/", "retrieval/satur", "retrieval/police", "people/", "objects/", "reading/", "attack/retained")
print(json.dumps({k: v for k, v in r.items() if k.startswith(keep)}, indent=1))
