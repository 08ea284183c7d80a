"""A study time for each tutorial notebook, by a stated rule (an estimate, not a measurement):
reading at 80 words a minute (a careful pace for prose with derivations; maths counts by its
words), a minute per code cell to run it and read its output, and 20 minutes per exercise.

    python benchmarks/study_times.py    # a markdown table, as the book's home page and docs/teaching.md quote it

Record your class's real times and replace the rule where they differ."""

from __future__ import annotations

import json
import re
from pathlib import Path

from clipaln.course.editions import notebook_id
from clipaln.course.slides import MINUTES_PER_CODE_CELL, WORDS_PER_MINUTE  # the rule, stated once

ROOT = Path(__file__).resolve().parent.parent
MINUTES_PER_EXERCISE = 20


def study_time(path: Path) -> dict:
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    prose = text.split("## References")[0]
    words = len(re.findall(r"\S+", prose.split("## Exercises")[0]))
    exercises = len(re.findall(r"^\d+\. ", prose.split("## Exercises")[1], re.M)) if "## Exercises" in prose else 0
    code = sum(c["cell_type"] == "code" for c in cells)
    reading = 5 * round((words / WORDS_PER_MINUTE + MINUTES_PER_CODE_CELL * code) / 5)
    return {"words": words, "code_cells": code, "exercises": exercises, "reading_min": reading,
            "exercises_min": MINUTES_PER_EXERCISE * exercises}  # fmt: skip


def table() -> dict[str, dict]:
    return {notebook_id(p): study_time(p) for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))}


if __name__ == "__main__":
    rows = table()
    print("| notebook | reading (min) | exercises (min) |\n|---|---|---|")
    for nb, r in rows.items():
        print(f"| {nb} | {r['reading_min']} | {r['exercises_min']} |")
    total = sum(r["reading_min"] + r["exercises_min"] for r in rows.values())
    print(f"\nall eight: {total} min ({total / 60:.1f} h)")
