"""`tcpstack` entry point: one subcommand per module, bad arguments give one line and exit 2.

`tcpstack` alone prints the usage; an unknown argument is reported by the subcommand it was given
to (`tcpstack demo: error: unrecognized arguments: --bogus`). Every command stops on SIGINT as
stack/cli/interrupt.py describes: one line, exit status 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import cast

from stack.cli import interrupt
from stack.cli.common import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tcpstack", description="A userspace TCP stack over a Linux TUN device.")
    # Typed as the base class: the subcommand modules only need ArgumentParser's interface.
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser))
    from stack.cli import cleanup, demo, drill, plot, serve, show

    demo.register(sub)
    drill.register(sub)
    serve.register(sub)
    show.register(sub)
    plot.register(sub)
    cleanup.register(sub)
    try:
        from stack.cli import bench
    except ImportError:
        pass
    else:
        bench.register(sub)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Every (sub)parser records itself as `_parser`: the innermost one given wins, so errors found
    after parsing name the subcommand they belong to."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _remember_parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    own: argparse.ArgumentParser = args._parser
    if extra:
        own.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        # `tcpstack` (or `tcpstack bench`) alone: what there is to run, and a usage error.
        own.print_help(sys.stderr)
        return 2
    return interrupt.guarded(own.prog, lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
