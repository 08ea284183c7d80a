"""Flags that contradict each other (clipaln/conflicts.py): every row of the table, run from the
command line as its example gives it, is one line and exit 2, before any work and with nothing written."""

from pathlib import Path

import pytest

from clipaln import conflicts
from clipaln.cli import main

PAIRS = Path(__file__).resolve().parent.parent / "data" / "pairs" / "pairs.csv"


@pytest.mark.parametrize("row", conflicts.CONFLICTS, ids=lambda c: f"{c.command}: {c.message[:48]}")
def test_every_contradiction_is_one_line_before_any_work(row, tmp_path, capsys, monkeypatch):
    import clipaln.commands
    import clipaln.models

    for module in (clipaln.models, clipaln.commands):  # where the command line loads models (runs: models.load_clip)
        monkeypatch.setattr(module, "load_clip", lambda *a, **k: pytest.fail("loaded a model first"))
    out = tmp_path / "out"
    argv = [a.format(out=out, pairs=PAIRS) for a in row.example]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"clipaln: error: {row.message}", (argv, err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_table_has_a_row_for_every_command_and_refuse_takes_the_first():
    assert {c.command for c in conflicts.CONFLICTS} == {"train", "train-cli", "eval", "export", "data"}
    assert len({c.message for c in conflicts.CONFLICTS}) == len(conflicts.CONFLICTS)
    conflicts.refuse("eval", {"task": "typographic", "projection": "w.safetensors", "t": 0.5})  # no conflict
    with pytest.raises(ValueError, match="--choose-t chooses t"):  # it meets two rows: the first is named
        conflicts.refuse("eval", {"task": "gender", "choose_t": True, "photos": "p"})


def test_zero_is_a_given_value_and_any_sequence_of_t_is_several():
    """`--t 0` beside --choose-t is refused as any t is; t as a numpy array or a range is several t."""
    import numpy as np

    with pytest.raises(ValueError, match="--choose-t chooses t"):
        conflicts.refuse("eval", {"task": "typographic", "projection": "w", "choose_t": True, "t": 0})
    for ts in (np.array([0.5, 1.0]), range(2), []):
        with pytest.raises(ValueError, match="several --t values"):
            conflicts.refuse("eval", {"task": "typographic", "projection": "w", "photos": "p", "t": ts})
