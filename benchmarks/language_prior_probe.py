"""Probe: does the language prior put the toy in the gender regime? (docs/toy-world.md, target 11)

`python benchmarks/language_prior_probe.py WEIGHT SCALE STEPS OUT` pretrains a toy CLIP for STEPS
steps with the language prior (`PretrainConfig.prior_weight`, `prior_scale`) and prints the
phenomena on the *validation* split (what the world is tuned on), `gender/alignment` among them.
It writes only into OUT.
"""

import json
import sys
from pathlib import Path

from clipaln.toyworld import pretrain as P

weight, scale, steps, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
P.pretrain(P.PretrainConfig(steps=steps, prior_weight=weight, prior_scale=scale), out, log=print)

import clipaln  # noqa: E402
from clipaln.tracks import phenomena  # noqa: E402

r = phenomena.measure(clipaln.load_clip("toy", pretrained=str(out / "toy_clip.safetensors")), split="val")
print(json.dumps(r, indent=1, default=str))
