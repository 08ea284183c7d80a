"""The `clipaln` command's entry point. `clipaln` and `clipaln --help` answer from this module alone,
in a fraction of a second; a subcommand first loads clipaln.commands (torch, open_clip), which
parses, validates, calls the library and prints."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

DESCRIPTION = "Preference optimisation for CLIP-like models."
#: The subcommands' one-line help, read by the top-level help here and by clipaln.commands.
COMMANDS = {
    "train": "train a shared projection W (or fine-tune the encoders)",
    "eval": "measure a model: `eval toy` (the toy phenomena), `eval typographic`, `eval gender`",
    "bench": "benchmarks: typographic, tune, dial, claims, gender, regime, speed, encode, ablation, adversarial, "
    "paper, sliders",
    "export": "fold W_t into the model: a checkpoint plain open_clip loads",
    "tour": "the toy-world tour: what the shipped toy CLIP does",
    "course": "a class: `course build OUT` (student and instructor editions), `course grade SUBMISSIONS`",
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _top_level() -> Parser:
    p = Parser(prog="clipaln", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:  # the top-level help, or its one-line error, without torch
        _top_level().parse_args(argv[:1])
    return importlib.import_module("clipaln.commands").main(argv)


if __name__ == "__main__":
    sys.exit(main())
