"""Helpers the test files share: tiny class folders, the CLI in one call with its output, a second
process holding OUT's lock, a quick pairs run."""

import re
import subprocess
import sys

from PIL import Image

from clipaln.cli import main
from clipaln.toyworld import OBJECTS

# An open_clip ViT built as ViT-B-32 is (LayerNorm, 224 px images in 32 px patches) and 3.6x cheaper on a CPU,
# for the tests of layouts, runs and exports, where no assertion is about ViT-B-32 itself.
SMALL_VIT = "ViT-S-32-alt"

COLOURS = ["red", "green", "blue", "orange", "purple", "brown", "pink", "gray", "olive", "navy", "teal", "gold"]


def make_folder(root, n_classes=4, per_class=4, names=None):
    names = names or list(OBJECTS[:n_classes])  # class names the toy CLIP can read
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (40 + 7 * c + i, 40), COLOURS[c % len(COLOURS)]).save(root / name / f"{name}_{i}.png")
    return root


def cli(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *words):
    """Exit 2 and one error line (after any progress bars), naming `words`; no traceback."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if "\r" not in ln and not re.search(r"\d+%\|", ln)]
    assert len(lines) == 1 and lines[0].startswith("clipaln"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], err


TINY = ["--epochs", "1", "--n-train", "8", "--n-test", "6"]


def hold_lock(out):
    """Another process holding OUT's lock, as a second `clipaln train --out OUT` would."""
    code = (
        f"from clipaln.manifest import OutLock; import time; OutLock({str(out)!r}).acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def train_pairs(pairs_file, out, *more):
    return main(
        [
            "train",
            "pairs",
            "--pairs",
            str(pairs_file),
            "--epochs",
            "1",
            "--no-cache",
            "--quiet",
            "--out",
            str(out),
            *more,
        ]
    )


def grade_slowly_for_bo(submission, zip_path, strict=False, timeout=None):
    """A stand-in for clipaln.course.grading.grade_notebook in a grading worker process (importable
    there): a student named bo takes two minutes, anyone else one exercise's full marks at once."""
    import time
    from pathlib import Path

    if Path(submission).parent.name == "bo":
        time.sleep(120)
    return {f"{Path(zip_path).stem}.1": {"points": 3.0, "max": 3, "message": "passed"}}
