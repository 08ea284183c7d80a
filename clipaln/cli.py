"""The `clipaln` command's entry point. `clipaln` and `clipaln --help` answer from this module and
clipaln.parsing alone, in a fraction of a second; a subcommand first loads clipaln.commands (torch,
about 3 s; open_clip and torchvision, 6 s more, load only where a model is built, so a wrong flag is
answered without them), which parses, validates, calls the library and prints."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .parsing import COMMANDS, DESCRIPTION, Parser


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
