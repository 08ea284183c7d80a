"""data/ holds what the README promises, and the README's data/ commands run as written."""

import csv
import json
import re
from pathlib import Path

import pytest

from clipaln.cli import main
from clipaln.data.gender import GenderCSV

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


def readme_commands_using_data() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line.split("#")[0].strip() for line in re.findall(r"^clipaln .*\sdata/.*$", text, flags=re.M)]


def test_every_pairs_row_names_an_image_that_is_there():
    with open(DATA / "pairs" / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and set(rows[0]) == {"image", "chosen", "rejected"}
    assert all((DATA / "pairs" / r["image"]).is_file() for r in rows)
    assert all(r["chosen"] != r["rejected"] for r in rows)


def test_the_people_template_has_the_columns_the_gender_track_reads():
    with open(DATA / "people" / "template.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == GenderCSV.COLUMNS


def test_the_readme_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
    commands = readme_commands_using_data()
    assert commands, "the README names no command that uses data/"
    monkeypatch.chdir(ROOT)
    for i, command in enumerate(commands):
        args = command.split()[1:]
        out = args.index("--out")
        args[out + 1] = str(tmp_path / f"run{i}")  # never write into the checkout
        assert main([*args, "--no-cache"]) == 0, command
        assert (tmp_path / f"run{i}" / "projection.safetensors").is_file()
    assert "held-out pairs preferred" in capsys.readouterr().out


@pytest.mark.parametrize("sub", ["pairs", "people"])
def test_data_readme_describes_each_folder(sub):
    assert f"## `{sub}/`" in (DATA / "README.md").read_text()


def test_the_data_readmes_numbers_are_its_commands(tmp_path, monkeypatch):
    """data/README.md quotes what its pairs command gives (held-out share before -> after, the KL): run as
    written, the run's metrics.json says the same."""
    text = (DATA / "README.md").read_text()
    command = re.search(r"^clipaln train pairs .*$", text, re.M).group(0)
    before, after, kl = re.search(r"([\d.]+)% -> ([\d.]+)% held out, KL ([\d.]+)", text).groups()
    args = command.split()[1:]
    args[args.index("--out") + 1] = str(tmp_path / "run")
    monkeypatch.chdir(ROOT)
    assert main([*args, "--no-cache", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"{100 * metrics['base']['preference/accuracy']:.1f}" == before
    assert f"{100 * metrics['trained']['preference/accuracy']:.1f}" == after
    assert f"{metrics['trained']['kl/reg']:.3f}" == kl
