"""A run folder is a transaction: OUT is written whole or not at all, one process at a time, and
what lies beside it is the user's."""

import json
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from support import TINY, cli, hold_lock, one_line_error, train_pairs

from clipaln import models, runs
from clipaln.cli import main
from clipaln.manifest import PARTIAL_MARK, OutLock, RunFolder
from clipaln.projection import SharedProjection


def test_out_inside_the_dataset_folder_is_refused(tmp_path):

    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    with pytest.raises(ValueError, match="lies inside the dataset folder"):
        runs.train_run("typographic", out=root / "run", dataset="folder", root=str(root), progress=False)


def test_a_run_killed_before_its_first_checkpoint_can_be_run_again_or_resumed(tmp_path):
    """SIGTERM during encoding left OUT.partial with no checkpoint, which neither a new run nor
    --resume accepted; now the run cleans up on SIGTERM, and such a folder is started over."""
    import json

    from test_tracks_pairs import scenes

    from clipaln.cli import main

    rows = scenes(tmp_path / "s", n=12)
    (tmp_path / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from clipaln.manifest import PARTIAL_MARK

    out = tmp_path / "run"
    (tmp_path / "run.partial").mkdir()  # what a SIGTERM during encoding left behind: clipaln's mark, no checkpoint
    (tmp_path / "run.partial" / PARTIAL_MARK).write_text("")
    (tmp_path / "run.partial" / "tensorboard").mkdir()
    args = ["train", "pairs", "--pairs", str(tmp_path / "s" / "p.jsonl"), "--epochs", "2", "--no-cache", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    (tmp_path / "again.partial").mkdir()
    (tmp_path / "again.partial" / PARTIAL_MARK).write_text("")
    assert main([*args, "--out", str(tmp_path / "again"), "--resume"]) == 0
    assert (tmp_path / "again" / "run.json").is_file() and not (tmp_path / "again.partial").exists()


def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from test_tracks_pairs import scenes

    rows = scenes(tmp_path / "s", n=12)
    import json

    (tmp_path / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import time, clipaln.tracks.pairs as p, sys\n"
        "real = p.build_features\n"
        "def slow(*a, **k):\n    print('encoding', flush=True); time.sleep(60)\n"
        "p.build_features = slow\n"
        "from clipaln.cli import main\n"
        f"sys.exit(main(['train', 'pairs', '--pairs', {str(tmp_path / 's' / 'p.jsonl')!r}, '--no-cache', '--out', "
        f"{str(tmp_path / 'run')!r}]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "encoding"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    time.sleep(0.1)
    assert not (tmp_path / "run.partial").exists()


def test_a_second_train_on_the_same_out_is_refused_and_touches_nothing(tmp_path, pairs_file, capsys):
    out = tmp_path / "X"
    (tmp_path / "X.partial").mkdir()
    (tmp_path / "X.partial" / PARTIAL_MARK).write_text("")  # the first run's, as clipaln marks it
    (tmp_path / "X.partial" / "checkpoint.safetensors").write_bytes(b"the first run's checkpoint")
    holder = hold_lock(out)
    try:
        assert train_pairs(pairs_file, out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert "being written by another clipaln process" in err and err.count("\n") == 1
        assert (tmp_path / "X.partial" / "checkpoint.safetensors").read_bytes() == b"the first run's checkpoint"
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert train_pairs(pairs_file, out, "--overwrite") == 0  # the lock dies with its process


def test_a_run_never_replaces_a_finished_run_it_did_not_check(tmp_path):
    out = tmp_path / "X"
    with pytest.raises(ValueError, match="appeared or changed"):
        with RunFolder(out) as folder:
            (folder.work / "projection.safetensors").write_bytes(b"mine")
            out.mkdir()  # what another writer, without the lock, committed meanwhile
            (out / "run.json").write_text('{"theirs": 1}')
            folder.commit({"mine": 1})
    assert json.loads((out / "run.json").read_text()) == {"theirs": 1}
    assert (folder.work / "projection.safetensors").read_bytes() == b"mine"  # kept, and said where
    assert not OutLock(out).path.exists()  # the lock is released


def test_the_lock_is_one_holder_at_a_time_in_one_process_too(tmp_path):
    with OutLock(tmp_path / "X"):
        with pytest.raises(ValueError, match="being written"):
            OutLock(tmp_path / "X").acquire()
    with OutLock(tmp_path / "X"):
        pass


def test_a_dangling_symlink_out_is_named(tmp_path, pairs_file, capsys):
    (tmp_path / "X").symlink_to(tmp_path / "nowhere")
    assert train_pairs(pairs_file, tmp_path / "X") == 2
    assert "symbolic link to nothing" in capsys.readouterr().err


def test_every_file_a_run_writes_is_checked_before_eval_and_export(tmp_path, pairs_file, capsys):
    import shutil

    assert train_pairs(pairs_file, tmp_path / "r") == 0
    files = json.loads((tmp_path / "r" / "run.json").read_text())["files"]
    assert set(files) == {"projection.safetensors", "metrics.json", "history.jsonl"}
    assert main(["eval", "pairs", "--projection", str(tmp_path / "r" / "projection.safetensors"), "--json"]) == 0
    capsys.readouterr()
    shutil.copytree(tmp_path / "r", tmp_path / "s")
    w = tmp_path / "s" / "projection.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)  # the same size, other bytes
    for argv in (
        ["eval", "pairs", "--projection", str(w), "--json"],
        ["export", "--projection", str(w), "--out", str(tmp_path / "e")],
    ):
        assert main(argv) == 2
        assert "is not the file its run wrote" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_out_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(models, "load_clip", lambda *a, **k: pytest.fail("loaded a model before checking --out"))
    (tmp_path / "file").write_text("x")
    for out, word in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "cannot write")):
        code, _, err = cli(["train", "typographic", "--out", out], capsys)
        one_line_error(code, err, word)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # a folder that is not a run is never replaced
        code, _, err = cli(["train", "typographic", "--out", full, *extra], capsys)
        one_line_error(code, err, "not empty")
    assert (full / "notes.txt").read_text() == "mine"


def test_a_finished_run_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "typographic", *TINY, "--no-cache", "--out", out]
    assert cli(args, capsys)[0] == 0
    first = (out / "run.json").read_text()
    one_line_error(*cli(args, capsys)[::2], "finished run", "--overwrite")
    assert (out / "run.json").read_text() == first
    code, _, err = cli([*args, "--resume"], capsys)  # never advised to overwrite what it asked to resume
    one_line_error(code, err, "nothing to resume", "finished run")
    assert "--overwrite" not in err and (out / "run.json").read_text() == first
    assert cli([*args, "--overwrite", "--seed", "1"], capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 1 and not list(tmp_path.glob("run.*"))


def test_sigkill_at_the_final_rename_leaves_no_half_run(tmp_path):
    """A process killed (SIGKILL) at the rename that publishes the run leaves OUT absent and the
    complete run in OUT.partial; --resume then finishes it."""
    out = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, signal
        from clipaln import manifest
        real = os.replace
        def replace(src, dst):
            if str(src).endswith(".partial"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        manifest.os.replace = replace
        from clipaln.cli import main
        main(["train", "typographic", "--epochs", "1", "--n-train", "8", "--n-test", "6", "--no-cache",
              "--checkpoint-every", "1", "--out", {str(out)!r}])
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == -9, p.stderr
    partial = tmp_path / "run.partial"
    assert not out.exists()
    assert {"projection.safetensors", "metrics.json", "history.jsonl", "run.json"} <= {
        f.name for f in partial.iterdir()
    }
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipaln",
            "train",
            "typographic",
            "--epochs",
            "1",
            "--n-train",
            "8",
            "--n-test",
            "6",
            "--no-cache",
            "--checkpoint-every",
            "1",
            "--resume",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert (out / "run.json").is_file() and not partial.exists()


def test_every_output_carries_its_manifest(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "typographic", *TINY, "--no-cache", "--out", out], capsys)[0] == 0
    run = json.loads((out / "run.json").read_text())
    assert {"model", "weights", "task", "data", "data_key", "config", "t", "versions", "command", "seed"} <= set(run)
    assert run["versions"]["torch"] == torch.__version__
    assert run["command"] == shlex.join(["clipaln", "train", "typographic", *TINY, "--no-cache", "--out", str(out)])
    header = json.loads(SharedProjection.load(out / "projection.safetensors").metadata["manifest"])
    assert header["weights"] == run["weights"] and header["data"] == run["data"]
    shutil.rmtree(out)
    # made from Python, a run has no command (none would make it again) and names the program that called it,
    # never the last command line's words
    runs.train_run("typographic", out=out, n_train=8, n_test=6, overrides={"epochs": 1}, cache=False, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["command"] is None and run["called_from"] == shlex.join([sys.executable, *sys.argv])
