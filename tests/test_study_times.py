"""The times a student is told: each tutorial's header gives the study time of the rule in
benchmarks/study_times.py, and the book's home page gives the same study times; the headers, the
README, the teaching guide and the home page give the recorded run times
(benchmarks/results/cold_times.json)."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("study_times", ROOT / "benchmarks" / "study_times.py")
study_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_times)


def _recorded() -> dict:
    """benchmarks/results/cold_times.json: written by `benchmarks/cold_times.py --out ... --docs`, which
    also writes the times into every place these tests read."""
    return json.loads((ROOT / "benchmarks" / "results" / "cold_times.json").read_text())


def test_each_header_states_the_rule_s_study_time():
    for nb, r in study_times.table().items():
        path = next((ROOT / "notebooks").glob(f"{nb}_*.ipynb"))
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        want = f"about {r['reading_min']} min to read and run"
        if r["exercises"]:  # an optional going-deeper notebook has none
            want += f", {r['exercises_min']} min for the {r['exercises']} exercises"
        assert want in header, (nb, want)


def test_the_book_s_home_page_gives_the_recorded_and_estimated_times():
    cold = _recorded()["notebooks"]
    home = (ROOT / "book" / "index.md").read_text()
    rows = {m[0]: m for m in re.findall(r"^\| (0\d\w?) \|.*\| (\d+) \| (\d+) / (\d+) \|$", home, re.M)}
    table = study_times.table()
    assert sorted(rows) == sorted(table)
    for nb, (_, seconds, reading, exercises) in rows.items():
        assert int(seconds) == round(next(v["cold_s"] for k, v in cold.items() if k.startswith(nb + "_"))), nb
        assert (int(reading), int(exercises)) == (table[nb]["reading_min"], table[nb]["exercises_min"]), nb


def test_each_header_states_the_recorded_cold_and_warm_run_times():
    cold = _recorded()["notebooks"]
    for name, row in cold.items():
        header = "".join(json.loads((ROOT / "notebooks" / name).read_text())["cells"][0]["source"])
        cold_s, warm_s = round(row["cold_s"]), round(row["warm_s"])
        want = f"*Time on a 2-core CPU:* {cold_s} s from an empty feature cache, {warm_s} s with it filled"
        assert want in header, (name, want)


def test_the_readme_and_the_teaching_guide_give_the_recorded_run_times():
    recorded = _recorded()
    cold = {name.split("_")[0]: row for name, row in recorded["notebooks"].items()}
    readme = (ROOT / "README.md").read_text()
    rows = dict((m[0], m[1:]) for m in re.findall(r"^\| (0\d\w?)(?: \(optional\))? \| (\d+) \| (\d+) \|", readme, re.M))
    assert {nb: (round(r["cold_s"]), round(r["warm_s"])) for nb, r in cold.items()} == {
        nb: (int(c), int(w)) for nb, (c, w) in rows.items()
    }
    series = re.search(
        r"^\| the series \| (\d+) \([\d.]+ min; (\d+) s from one shared cache\) \| (\d+) \|", readme, re.M
    )
    assert series, "README: the series row"
    assert [int(x) for x in series.groups()] == [
        round(sum(r["cold_s"] for r in cold.values())),
        round(recorded["series_cold_s"]),
        round(sum(r["warm_s"] for r in cold.values())),
    ]
    guide = (ROOT / "docs" / "teaching.md").read_text()
    minutes = dict(re.findall(r"^\| (0\d\w?) [^|]+\|[^|]+\| ([\d.]+ / [\d.]+)", guide, re.M))
    assert minutes == {nb: f"{r['cold_s'] / 60:.1f} / {r['warm_s'] / 60:.1f}" for nb, r in cold.items()}


def test_the_readme_s_sentence_on_the_recorded_day_reads_the_recorded_times():
    recorded = _recorded()
    cold = {name.split("_")[0]: row["cold_s"] for name, row in recorded["notebooks"].items()}
    readme = (ROOT / "README.md").read_text()
    minutes = re.search(r"^\| the series \| \d+ \(([\d.]+) min;", readme, re.M)
    assert minutes and minutes[1] == f"{sum(cold.values()) / 60:.1f}"
    sentence = re.search(r"On the recorded day, every notebook ran in at most (\d+) s cold \(([^)]*)\)", readme)
    assert sentence and int(sentence[1]) == round(max(cold.values()))
    named = re.findall(r"(0\d\w?) at (\d+) s", sentence[2])
    assert named and all(int(s) == round(cold[nb]) for nb, s in named), named
    series = re.search(
        r"the series in ([\d.]+) minutes with each notebook from its own empty cache, ([\d.]+) minutes", readme
    )
    assert series and series.groups() == (
        f"{sum(cold.values()) / 60:.1f}",
        f"{recorded['series_cold_s'] / 60:.1f}",
    )
