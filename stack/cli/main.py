"""`tcpstack` entry point: one subcommand per module, bad arguments give one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stack.cli.common import CliError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog
        self.exit(2, f"{prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tcpstack", description="A userspace TCP stack over a Linux TUN device.")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    from stack.cli import demo, plot, serve, show

    demo.register(sub)
    serve.register(sub)
    show.register(sub)
    plot.register(sub)
    try:
        from stack.cli import bench
    except ImportError:
        pass
    else:
        bench.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UsageError as exc:
        print(f"tcpstack {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"tcpstack {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
