"""What the `clipaln` command is called and how it answers a wrong flag: the subcommands' one-line
help and the parser class, shared by clipaln.cli (the entry point, which answers `--help` without
torch) and clipaln.commands (the handlers), so that neither imports the other's module."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

DESCRIPTION = "Preference optimisation for CLIP-like models."
#: The subcommands' one-line help, read by clipaln.cli's top-level help and by clipaln.commands.
COMMANDS = {
    "train": "train a shared projection W (or fine-tune the encoders)",
    "eval": "measure a model: `eval toy` (the toy phenomena), `eval typographic`, `eval gender`",
    "bench": "benchmarks: the paper's tables in the toy world, Table 1 on real data, speed (bench --help: each)",
    "export": "fold W_t into the model: a checkpoint plain open_clip loads",
    "tour": "the toy-world tour: what the shipped toy CLIP does",
    "course": "a class: `course build OUT` (student and instructor editions), `course grade SUBMISSIONS`",
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (one line for another)."""

    def whole_number(x: str) -> int:
        try:
            v = int(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {x!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {x}")
        return v

    return whole_number
