"""What a run records about itself, and the folder it writes into, all or nothing.

A manifest names everything a number depends on: the model and a fingerprint of its weights, the
task, the data (dataset, absolute root, a fingerprint of its file list, the split's seed, sizes and
a hash of its indices), the method and its hyper-parameters, t, the clipaln and torch versions and
the command line. It is written beside every output (OUT/run.json and the projection's header);
eval and resume compare against it and refuse, naming what differs.

A RunFolder writes into OUT.partial (beside OUT) and renames it to OUT only when every file is
there, so OUT is either a complete run or absent; it is checked before any work starts.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .io import write_json

MANIFEST = "run.json"
#: The manifest entries a resumed or evaluated run must share with the one that wrote the file.
IDENTITY = ("model", "pretrained", "weights", "task", "data")


#: What was typed after `clipaln`, while the command line runs it (clipaln.commands.main; each thread its
#: own); None when the library is called from Python.
TYPED: ContextVar[list[str] | None] = ContextVar("clipaln_typed", default=None)


def launch_command() -> str | None:
    """A shell line that makes this run again: `clipaln ARGS`, under torchrun as torchrun launched it
    (several nodes: with a HOST:PORT to fill in), or each process's `clipaln ARGS` under another launcher.
    None for a run made from Python: run.json's `called_from` names the program instead."""
    typed = TYPED.get()
    if typed is None:
        return None
    world, local = int(os.environ.get("WORLD_SIZE", 1)), os.environ.get("LOCAL_WORLD_SIZE")
    if world == 1 or local is None:  # one process, or a launcher other than torchrun (srun, mpirun)
        return shlex.join(["clipaln", *typed])
    nodes = [] if world == int(local) else ["--nnodes", str(world // int(local)), "--rdzv_endpoint", "HOST:PORT"]
    return shlex.join(["torchrun", *nodes, "--nproc_per_node", local, "-m", "clipaln", *typed])


def digest(obj: Any) -> str:
    """A short, stable hash of anything JSON can write (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build(*, bundle_name: str, pretrained: str | None, weights: str, task: str, data_key: dict, **fields: Any) -> dict:
    """A run's manifest; `fields`: what else describes it (mode, method, config, t, ...)."""
    return {
        "model": bundle_name,
        "pretrained": pretrained or "",
        "weights": weights,
        "task": task,
        "data": digest(data_key),
        "data_key": data_key,
        **fields,
        "versions": {"clipaln": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "command": launch_command(),
        **({} if TYPED.get() is not None else {"called_from": shlex.join([sys.executable, *sys.argv])}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def data_record(model: str, weights: str, task: str, data_key: dict, pretrained: str | None = None) -> dict:
    """What features know of the model and data they were built from (the manifest's identity entries),
    as strings: a W trained on them carries it in its file, so eval can refuse a test split that is not
    the complement of its training split, and export folds it into the weights it was trained on."""
    return {
        "model": model,
        "pretrained": pretrained or "",
        "weights": weights,
        "task": task,
        "data": digest(data_key),
        "data_key": json.dumps(data_key, sort_keys=True, default=str),
    }


def differences(recorded: dict, current: dict, names: Iterable[str] = IDENTITY) -> list[str]:
    """The entries of `names` on which two manifests disagree (entries missing from `recorded` pass)."""
    return [n for n in names if n in recorded and str(recorded[n]) != str(current.get(n))]


def describe(recorded: dict, current: dict, names: list[str]) -> str:
    return "; ".join(f"{n} {_short(recorded[n])} there, {_short(current.get(n))} here" for n in names)


def _short(v) -> str:
    s = str(v)
    return repr(s if len(s) <= 60 else s[:57] + "...")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path) -> None:
    """Refuse a file of a run whose bytes are not those the run recorded in its run.json (a file
    edited, truncated or swapped for another run's): one ValueError naming it. Files outside a run
    folder, or of runs written before checksums were recorded, pass."""
    path = Path(path)
    run = path.parent / MANIFEST
    if not run.is_file():
        return
    try:
        recorded = json.loads(run.read_text()).get("files", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ValueError(f"{run} is not a run manifest (not JSON): the run folder is damaged") from None
    if path.name in recorded and file_sha256(path) != recorded[path.name]:
        raise ValueError(
            f"{path} is not the file its run wrote (its sha256 differs from the one in {run}): "
            "it was edited, truncated or replaced; train again, or restore it"
        )


#: What clipaln writes beside OUT carries its own mark, so that a file or folder of the same name
#: without it is known to be the user's and is never written, truncated or removed.
LOCK_SUFFIX = ".clipaln-lock"
LOCK_SIGNATURE = b"clipaln lock, pid "
PARTIAL_MARK = ".clipaln-partial"


def is_ours(partial: Path) -> bool:
    """Whether an OUT.partial folder was made by clipaln: its mark, or (from before the mark) the
    request file a run writes first."""
    return partial.is_dir() and ((partial / PARTIAL_MARK).is_file() or (partial / "checkpoint.request.json").is_file())


class OutLock:
    """An exclusive lock on an output path, held from before any check until the last write: a second
    clipaln process that would write the same OUT (a run, its .partial, an export) is refused at
    once with one line, instead of both writing and one losing. The lock is an flock on
    OUT.clipaln-lock beside OUT (a name no other tool uses; released by the kernel if the process
    dies), whose content starts with LOCK_SIGNATURE: a file of that name without it is the user's, and
    is refused and left as it is. The file is removed on release, and a taker checks that the file it
    locked is still the one on disk, so removal cannot race a taker."""

    def __init__(self, out):
        self.path = Path(out).with_name(Path(out).name + LOCK_SUFFIX)
        self.fd: int | None = None

    def acquire(self) -> OutLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot write beside {self.path.parent}: {e.strerror or e}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ValueError(f"cannot write beside {self.path.parent}: {e.strerror or e}") from None
            held = os.pread(fd, len(LOCK_SIGNATURE), 0)
            if held and held != LOCK_SIGNATURE:  # the user's file, by our name: never ours to write
                os.close(fd)
                raise ValueError(
                    f"{self.path} is not a clipaln lock: it is left as it is; move it or choose another --out"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 64, 0)[len(LOCK_SIGNATURE) :].decode(errors="replace").strip()
                holder = holder or "another process"
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    target = self.path.with_name(self.path.name.removesuffix(LOCK_SUFFIX))
                    raise ValueError(
                        f"{target} is being written by another clipaln process (pid {holder}): "
                        "wait for it to finish, or choose another --out"
                    ) from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not removed by its last holder between our open and our lock
                os.ftruncate(fd, 0)
                os.pwrite(fd, LOCK_SIGNATURE + str(os.getpid()).encode(), 0)
                self.fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """OUT, written all or nothing: files go to OUT.partial, which becomes OUT in one rename.

    prepare() takes OUT's lock (OutLock: one process at a time) and refuses before any work: OUT is a
    file, OUT is a finished run or a non-empty folder (unless overwrite), OUT.partial holds an
    unfinished run (unless resume or overwrite), or the parent is not writable. resume=True needs
    OUT.partial (where checkpoints live). commit() replaces only the run prepare() saw. Used as a
    context manager, a failure removes OUT.partial unless it holds a checkpoint to resume from, and
    the lock is released either way."""

    def __init__(self, out, overwrite: bool = False, resume: bool = False, writer: bool = True):
        self.out = Path(out).expanduser().absolute()
        self.work = self.out.with_name(self.out.name + ".partial")
        self.overwrite, self.resume, self.writer = overwrite, resume, writer
        self.lock = OutLock(self.out)
        self.replacing: str | None = None  # the manifest of the run prepare() agreed to replace

    def __enter__(self) -> RunFolder:
        """`with RunFolder(out) as folder:` prepares (on the writing process) and abandons on failure."""
        if self.writer:
            try:
                self.prepare()
            except BaseException:  # refused: __exit__ will not run, so let the lock go here
                self.lock.release()
                raise
        return self

    def __exit__(self, kind, value, tb) -> None:
        try:
            if kind is not None and self.writer:
                self.abandon()
        finally:
            self.lock.release()

    def prepare(self) -> Path:
        out, work = self.out, self.work
        if out.is_symlink() and not out.exists():
            raise ValueError(
                f"--out {out} is a symbolic link to nothing ({os.readlink(out)}): remove it or choose another --out"
            )
        if self.lock.fd is None:
            self.lock.acquire()
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        if out.is_dir() and any(out.iterdir()):
            if not (out / MANIFEST).is_file():  # never delete what is not a run, even with --overwrite
                raise ValueError(f"--out {out} is a folder that is not empty and holds no run: choose another --out")
            if not self.overwrite and self.resume:
                raise ValueError(f"nothing to resume: --out {out} is a finished run (it is kept as it is)")
            if not self.overwrite:
                raise ValueError(
                    f"--out {out} is a finished run: pass --overwrite to replace it, or choose another --out"
                )
            self.replacing = (out / MANIFEST).read_text()
        elif out.is_dir():
            self.replacing = ""  # an empty folder
        if (work.exists() or work.is_symlink()) and not is_ours(work):
            raise ValueError(
                f"{work} exists and was not made by clipaln: it is left as it is; move it or choose another --out"
            )
        if work.is_dir() and not self.has_checkpoint():  # killed before its first checkpoint: nothing to keep
            shutil.rmtree(work)
            self.resume = False  # --resume of such a run starts it over (its encoding is in the feature cache)
        if self.resume:
            if not work.is_dir():
                raise ValueError(f"nothing to resume: {work} does not exist (a run that finished has no checkpoint)")
        elif work.exists():
            if not self.overwrite:
                raise ValueError(
                    f"{work} holds an unfinished run: pass --resume to continue it or --overwrite to start over"
                )
            shutil.rmtree(work)
        try:
            work.mkdir(parents=True, exist_ok=True)
            (work / PARTIAL_MARK).write_text("a clipaln run in progress: clipaln train --resume continues it\n")
        except OSError as e:
            raise ValueError(f"cannot write to --out {out}: {e.strerror or e}") from None
        return work

    def has_checkpoint(self) -> bool:
        return self.work.is_dir() and any(self.work.glob("checkpoint*.safetensors"))

    def abandon(self) -> None:
        """After a failure: remove OUT.partial unless it holds a checkpoint to resume from (or a
        finished run that commit() would not move)."""
        if self.work.is_dir() and not self.has_checkpoint() and not getattr(self, "kept", False):
            shutil.rmtree(self.work, ignore_errors=True)

    def commit(self, manifest: dict) -> Path:
        """Write the manifest last, with the sha256 of every file beside it (`verify` checks them),
        move OUT.partial to OUT in one rename, then drop the checkpoints (a run killed before the
        rename is resumed from them and finishes at once)."""
        (self.work / PARTIAL_MARK).unlink(missing_ok=True)  # a finished run carries no mark
        files = sorted(p for p in self.work.iterdir() if p.is_file() and not p.name.startswith("checkpoint"))
        manifest = {**manifest, "files": {p.name: file_sha256(p) for p in files if p.name != MANIFEST}}
        write_json(self.work / MANIFEST, manifest)
        old = None
        if self.out.exists() or self.out.is_symlink():
            seen = (self.out / MANIFEST).read_text() if (self.out / MANIFEST).is_file() else None
            if seen is None and self.out.is_dir() and not any(self.out.iterdir()):
                seen = ""
            if self.replacing is None or seen != self.replacing:  # not the run prepare() agreed to replace
                self.kept = True  # abandon() must not remove the finished run
                raise ValueError(
                    f"{self.out} appeared or changed while this run was training, so it was left as it is; "
                    f"this run is complete in {self.work}: move it where you want it"
                )
            old = self.out.with_name(f"{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.work, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for p in self.out.glob("checkpoint*"):
            p.unlink()
        return self.out
