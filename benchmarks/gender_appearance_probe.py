"""Probe: can the gender track's *people* alone move the toy into the regime of notebook 04, 4.6?

Draws the gender track's people (no weak cues) with an appearance that goes with gender and that no
caption names, and prints cos(G, d) (clipaln.tracks.regime.alignment): figure colours (men from
five cool colours, women from five warm ones) for a share of people, or an object beside a share of
them (men: boat, key, house; women: umbrella, bird, star). Run from the project root:
`python benchmarks/gender_appearance_probe.py [WEIGHTS]` (about 1 min on 2 cores; WEIGHTS: a toy
safetensors file, default the shipped toy CLIP v3). Last run, on the toy CLIP v2 (before the language
prior; docs/toy-world.md, target 11): colour 0.840 at shares 0, 0.8 and 1; objects 0.822 / 0.785 at
shares 0.5 / 1.
"""

import random
import sys

import clipaln
from clipaln.toyworld.config import SKEW
from clipaln.toyworld.datasets import ToyPeople
from clipaln.toyworld.render import _PALETTE, render
from clipaln.tracks import gender, regime

COOL, WARM = [_PALETTE[i] for i in (1, 2, 5, 6, 8)], [_PALETTE[i] for i in (0, 3, 4, 7, 9)]
OBJECTS = {"man": ("boat", "key", "house"), "woman": ("umbrella", "bird", "star")}


class Dressed(ToyPeople):
    def __init__(self, n, split, kind, share):
        super().__init__(n, 0, split, 0.0)
        self.kind, self.share = kind, share

    def __getitem__(self, i):
        g, a = self.cells[i // self.n]
        rng = random.Random(f"people-{self.split}-{self.seed}-{i}")
        r = random.Random(f"dress-{self.split}-{self.seed}-{i}")
        marked = r.random() < self.share
        if self.kind == "colour":
            color = r.choice((COOL if g == "man" else WARM) if marked else _PALETTE)
            return render(person=g, activity=a, rng=rng, color=color), g, a
        obj = r.choice(OBJECTS[g]) if marked else None
        return render(person=g, activity=a, obj=obj, rng=rng), g, a


bundle = clipaln.load_clip("toy", pretrained=sys.argv[1] if len(sys.argv) > 1 else None)
for kind, shares in (("colour", (0.0, 0.8, 1.0)), ("objects", (0.5, 1.0))):
    for share in shares:
        tr, ga = Dressed(30, "train", kind, share), Dressed(20, "gallery", kind, share)
        spec = gender.Spec(tr, ga, tr.genders, tr.activities, list(SKEW))
        feats = gender.build_features(bundle, spec, progress=False)
        print(f"{kind} share {share}: cos(G, d) = {regime.alignment(feats):.3f}")
