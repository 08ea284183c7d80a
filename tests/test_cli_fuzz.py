"""Fuzz the command line: 320 seeded random invocations of `clipaln train` (typographic, gender with
the toy or a people CSV, pairs), `clipaln eval` and `clipaln export` (flag combinations, odd values,
tiny folders, good and broken CSV and pairs files, existing and missing outputs). Each one exits 0 or
2, never with a traceback; an error is one line; every JSON printed or written parses without NaN or
inf; and no invocation changes a byte of the runs it did not create."""

import hashlib
import json
import random
import re

import pytest
from PIL import Image

from clipaln import losses
from clipaln.cli import main

N_INVOCATIONS = 320


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny folders (2, 5 and 6 classes, a phantom folder), a file, and two finished runs."""
    base = tmp_path_factory.mktemp("fuzz")
    folders = []
    for k in (2, 5, 6):
        root = base / f"classes{k}"
        for c in range(k):
            (root / f"c{c}").mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (24 + c, 24 + i), (40 * c % 255, 60 * i, 90)).save(root / f"c{c}" / f"{i}.png")
        folders.append(root)
    (folders[-1] / ".ipynb_checkpoints").mkdir()
    (base / "a_file.txt").write_text("not a folder")
    people = base / "people"  # 2 activities x 2 genders x 5 people, and a CSV with a missing column
    rows = ["path,gender,activity"]
    for a, act in enumerate(["cooking", "painting"]):
        for g, gen in enumerate(["man", "woman"]):
            for i in range(5):
                (people / f"{a}{g}").mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20 + i, 20), (90 * a, 90 * g, 30 * i)).save(people / f"{a}{g}" / f"{i}.png")
                rows.append(f"{a}{g}/{i}.png,{gen},{act}")
    (people / "people.csv").write_text("\n".join(rows) + "\n")
    (people / "bad.csv").write_text("path,activity\n00/0.png,cooking\n")
    pairs = base / "pairs"
    pairs.mkdir()
    lines = ["image,chosen,rejected"]
    for i in range(10):
        Image.new("RGB", (24, 24), (20 * i, 100, 100)).save(pairs / f"{i}.png")
        lines.append(f"{i}.png,a photo of a star.,a photo of a ball.")
    (pairs / "pairs.csv").write_text("\n".join(lines) + "\n")
    (pairs / "alike.csv").write_text("image,chosen,rejected\n0.png,a photo of a star.,A photo of a STAR\n1.png,a,b\n")
    runs = {}
    for task, n in (("typographic", "12"), ("gender", "16")):
        out = base / f"run-{task}"
        args = ["train", task, "--epochs", "1", "--n-train", n, "--n-test", n, "--out", str(out)]
        assert main(args) == 0
        runs[task] = out / "projection.safetensors"
    return base, folders, runs


def fingerprints(base):
    """sha256 of every file of the fixture's finished runs."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for run in base.glob("run-*")
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def choose(rng, pool):
    return rng.choice(pool)


def random_invocation(rng: random.Random, base, folders, runs, k: int) -> list[str]:
    out_pool = [str(base / f"out{k}"), str(base / "a_file.txt"), str(runs["typographic"].parent), str(base / "x" / "y")]
    common = {
        "--model": ["toy", "toy", "toy", "RN-nope"],
        "--pretrained": ["random", "nosuch.safetensors", str(base / "a_file.txt")],
        "--dataset": ["toy", "folder", "folder", "food101", "nosuch"],
        "--root": [str(f) for f in folders] + [str(base / "missing"), str(base / "a_file.txt")],
        "--n-train": ["12", "16", "32", "0", "13", "x"],
        "--n-test": ["12", "16", "6", "-1"],
        "--seed": ["0", "1", "x"],
        "--no-cache": [None],
    }
    draw = rng.random()
    if draw < 0.12:  # export: into new paths, onto the runs' own files, over folders
        args = ["export", "--device", "cpu"]
        flags = {
            "--projection": [str(runs["typographic"]), str(runs["gender"]), str(base / "a_file.txt"), "missing.st"],
            "--t": ["1", "0", "-1", "1e308", "nan", "x"],
            "--out": [
                str(base / f"export{k}"),
                str(base / f"export{k}.safetensors"),
                str(runs["typographic"]),
                str(runs["typographic"].parent / "run.json"),
                str(runs["typographic"].parent),
                str(base / "a_file.txt"),
            ],
        }  # no --overwrite: the runs' files must come through unchanged
        for f in rng.sample(sorted(flags), rng.randint(1, 3)):
            value = choose(rng, flags[f])
            args += [f] if value is None else [f, value]
        return args
    if draw < 0.30:  # train pairs / gender on a people CSV, good files and broken ones
        task = choose(rng, ["pairs", "gender"])
        args = ["train", task, "--epochs", "1", "--no-cache", "--out", str(base / f"out{k}")]
        if task == "pairs":
            args += ["--pairs", choose(rng, [str(base / "pairs" / n) for n in ("pairs.csv", "pairs.csv", "alike.csv")])]
            args += choose(rng, [[], ["--method", "kto"], ["--n-train", "4"], ["--label-smoothing", "0.2"]])
        else:
            csv = choose(
                rng, [str(base / "people" / n) for n in ("people.csv", "people.csv", "bad.csv", "missing.csv")]
            )
            args += ["--dataset", "people", "--root", csv] + choose(rng, [[], ["--method", "ipo"], ["--n-train", "3"]])
        return args
    if draw < 0.62:
        cmd = ["train", choose(rng, ["typographic", "typographic", "gender", "nosuch"])]
        flags = {
            **common,
            "--method": [*losses.LOSSES, "ppo"],
            "--epochs": ["1", "1", "0", "x"],
            "--lr": ["0.1", "nan", "-1", "1e9", "0.01"],
            "--beta": ["0.1", "0", "inf"],
            "--lam": ["1", "-1"],
            "--batch-size": ["4", "0", "1000"],
            "--mode": ["w", "w", "full", "z"],
            "--checkpoint-every": ["0", "1", "-2"],
            "--resume": [None],
            "--overwrite": [None],
            "--no-bma": [None],
            "--train-text": [None],
            "--t": ["1"],
        }
        chosen = rng.sample(sorted(flags), rng.randint(0, 6))
        if rng.random() < 0.9:
            chosen.append("--out")
            flags["--out"] = out_pool
        defaults = ["--epochs", "1", "--n-train", "12", "--n-test", "12"]
    else:
        cmd = ["eval", choose(rng, ["typographic", "typographic", "gender", "toy"])]
        flags = {
            **common,
            "--projection": [str(runs["typographic"]), str(runs["gender"]), str(base / "a_file.txt"), "missing.st"],
            "--t": ["1", "0", "-1", "100", "-30", "1e308", "nan"],
            "--n": ["4", "0"],
            "--split": ["test", "val", "train"],
            "--allow-other-data": [None],
            "--allow-other-weights": [None],
            "--json": [None, None],
        }
        chosen = rng.sample(sorted(flags), rng.randint(0, 5))
        defaults = ["--n", "4"] if cmd[1] == "toy" else ["--n-test", "16" if cmd[1] == "gender" else "12"]  # the runs'
    args = list(cmd)
    for f in chosen:
        value = choose(rng, flags[f])
        args += [f] if value is None else [f, value]
    for flag, value in zip(defaults[::2], defaults[1::2]):  # a size not drawn is a small one, not the toy world's
        if flag not in chosen:
            args += [flag, value]
    return args


def test_random_invocations_exit_cleanly(world, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPALN_CACHE", str(tmp_path / "cache"))
    base, folders, runs = world
    rng = random.Random(12)
    before = fingerprints(base)
    codes = []
    for k in range(N_INVOCATIONS):
        args = random_invocation(rng, base, folders, runs, k)
        try:
            code = main(args)
        except SystemExit as e:  # argparse's errors
            code = e.code
        out = capsys.readouterr()
        codes.append(code)
        assert code in (0, 2), (args, out.err)
        if code == 2:
            lines = [ln for ln in out.err.strip().splitlines() if "\r" not in ln and not re.search(r"\d+%\|", ln)]
            assert len(lines) == 1 and lines[0].startswith("clipaln"), (args, out.err)
        elif "--json" in args:
            strict_json(out.out)
    for path in base.rglob("*.json"):
        strict_json(path.read_text())
    assert codes.count(0) >= 30 and codes.count(2) >= 30, codes  # both kinds were exercised
    assert fingerprints(base) == before  # no invocation changed a run it did not create
