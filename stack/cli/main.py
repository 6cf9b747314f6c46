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
from stack.cli.common import CliError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog
        self.exit(2, f"{prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tcpstack", description="A userspace TCP stack over a Linux TUN device.")
    # Typed as the base class: the subcommand modules only need ArgumentParser's interface.
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser))
    from stack.cli import cleanup, demo, serve, show

    demo.register(sub)
    serve.register(sub)
    show.register(sub)
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
    name = own.prog
    interrupt.install(name)
    try:
        result = args.func(args)
    except UsageError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        if interrupt.interrupted():
            return interrupt.report(interrupt.Interrupted(interrupt.interrupted()))
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.code
    except interrupt.Interrupted as exc:
        return interrupt.report(exc)
    except KeyboardInterrupt:
        return interrupt.report(interrupt.Interrupted(interrupt.interrupted() or 2))
    finally:
        interrupt.uninstall()
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
