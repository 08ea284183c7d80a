"""Regenerate data/pairs: toy-world objects with another object's name written on them, and the
preference "name the object, not the written word". Run from the repository root:

    python data/pairs/make_pairs.py
"""

import csv
import random
from pathlib import Path

from clipaln.toyworld.render import OBJECTS, render

HERE = Path(__file__).parent
N = 40  # images; clipaln holds out a fifth of them (8) to report on

if __name__ == "__main__":
    (HERE / "images").mkdir(exist_ok=True)
    rows = []
    for i in range(N):
        rng = random.Random(f"data-pairs-{i}")
        obj = OBJECTS[i % len(OBJECTS)]
        word = rng.choice([o for o in OBJECTS if o != obj])
        name = f"images/{i:03d}_{obj}_{word}.png"
        render(obj=obj, text=word, rng=rng).save(HERE / name, optimize=True)
        an = lambda w: ("an " if w[0] in "aeiou" else "a ") + w
        rows.append({"image": name, "chosen": f"a photo of {an(obj)}.", "rejected": f"a photo of {an(word)}."})
    with open(HERE / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "chosen", "rejected"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} pairs to {HERE / 'pairs.csv'}")
