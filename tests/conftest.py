import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker (and per kernel it starts): n workers, n cores
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def toy():
    from clipaln import load_clip

    return load_clip("toy", device="cpu")


@pytest.fixture
def ctrl_c_after_checkpoints(monkeypatch):
    """`with ctrl_c_after_checkpoints(n): train(...)`: Ctrl-C arrives right after the n-th checkpoint
    is written, raising KeyboardInterrupt as in a terminal (even where the runner ignores SIGINT),
    and the block must stop with it."""
    import contextlib
    import signal

    import clipaln.train as train_module

    @contextlib.contextmanager
    def interrupt(n: int):
        real_save, saved = train_module.save_checkpoint, []

        def save_then_interrupt(*args, **kwargs):
            real_save(*args, **kwargs)
            saved.append(1)
            if len(saved) == n:
                signal.raise_signal(signal.SIGINT)

        monkeypatch.setattr(train_module, "save_checkpoint", save_then_interrupt)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            signal.signal(signal.SIGINT, previous)
            monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    return interrupt


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory):
    """A 12-row pairs file of toy scenes (JSON Lines), shared by the run-folder, config and export tests."""
    import json

    from test_tracks_pairs import scenes

    d = tmp_path_factory.mktemp("pairs")
    rows = scenes(d / "s", n=12)
    (d / "s" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "s" / "p.jsonl"
