"""`tcpstack plot`: draw connections per state over time from `serve --stats-log` files.

    tcpstack plot FILE.csv [FILE.csv ...] --out states.svg|.png|.pdf [--column NAME]... [--title TEXT]

Several files are drawn one after another on one time axis (phases of an experiment, e.g. the
ones examples/time_wait_storm.py writes). Needs matplotlib (`pip install 'tcpstack[plot]'`); without
it the command says so in one line and exits 1.
"""

from __future__ import annotations

import argparse

from stack.cli.common import CliError, Subcommands, UsageError
from stack.observe.plot import MissingMatplotlib, PlotError, draw, read_stats_csv


def register(sub: Subcommands) -> None:
    p = sub.add_parser("plot", help="draw connections per state over time from --stats-log files",
                       description="Draw connections per state over time from stats-log CSV files "
                                   "(serve --stats-log); several files are phases, one after another.")
    p.add_argument("files", nargs="+", metavar="FILE.csv", help="stats logs (tcpstack serve --stats-log)")
    p.add_argument("--out", required=True, metavar="PICTURE", help="the picture to write: .png, .svg or .pdf")
    p.add_argument("--column", action="append", default=[], metavar="NAME",
                   help="a column to draw (a state like TIME-WAIT, or a counter like TcpPassiveOpens, drawn "
                        "per second); repeatable; default: every state that is not always 0")
    p.add_argument("--title", default="", help="a title above the picture")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        logs = [read_stats_csv(path) for path in args.files]
        draw(logs, args.out, columns=args.column, title=args.title)
    except PlotError as exc:
        raise UsageError(str(exc)) from None
    except MissingMatplotlib as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    return 0
