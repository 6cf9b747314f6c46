"""`tcpstack ss` and `tcpstack stats`: look into a running `tcpstack serve` through its control socket.

    tcpstack ss [-s] [-o] [--json] [state STATE ...] [--netns NAME | --control PATH]
    tcpstack stats [--json] [--netns NAME | --control PATH]

`ss` prints what `ss -tan` prints for kernel sockets (listeners included, as with -a): one header
line, one line per socket. `state STATE` (repeatable, names and groups of iproute2's ss) filters
and, like `ss state STATE`, drops the State column, so `tcpstack ss state time-wait | wc -l` is the
count plus one, as with the kernel's ss. `-o` appends timers (`timer:(timewait,59sec,0)`), `-s`
prints the `ss -s` summary instead of the table, `--json` prints a list of objects (the summary
object with -s). `stats` prints the counters, nstat names, one `Name  value` per line.

Which stack: --control PATH, else --netns NAME (its default socket), else the only one running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from stack.cli.common import CliError, Subcommands, UsageError
from stack.cli.control import ControlError, netns_name, request, resolve
from stack.observe.snapshot import (
    SocketRow,
    UnknownState,
    filter_rows,
    format_stats,
    format_summary,
    format_table,
    parse_state_filter,
    row_from_json,
    summarize,
)


def register(sub: Subcommands) -> None:
    p = sub.add_parser("ss", help="list the running stack's sockets, like `ss -tan`",
                       description="List the running stack's sockets in the shape of `ss -tan`.")
    p.add_argument("-s", "--summary", action="store_true", help="print a summary like `ss -s`")
    p.add_argument("-o", "--options", action="store_true", help="show timers, like `ss -o`")
    p.add_argument("--json", action="store_true", help="print JSON (a list of objects; an object with -s)")
    p.add_argument("filter", nargs="*", metavar="state STATE",
                   help="filter by state (ss names: established, time-wait, listening, ..., or the groups "
                        "all, connected, synchronized, bucket, big); repeatable")
    _target_options(p)
    p.set_defaults(func=run_ss)

    p = sub.add_parser("stats", help="print the running stack's counters (nstat names)",
                       description="Print the running stack's counters, one `Name  value` per line.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _target_options(p)
    p.set_defaults(func=run_stats)


def _target_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--netns", type=netns_name, metavar="NAME", help="the stack serving this namespace")
    group.add_argument("--control", metavar="PATH", help="the stack's control socket")


def _state_names(tokens: list[str]) -> list[str]:
    """`state A state B` -> [A, B]; anything else is a usage error (ss's filter grammar, the part we keep)."""
    names: list[str] = []
    it = iter(tokens)
    for token in it:
        if token != "state":
            raise UsageError(f"unexpected {token!r}: the filter is `state STATE` (e.g. `state time-wait`)")
        name = next(it, None)
        if name is None:
            raise UsageError("`state` needs a state name (e.g. `state time-wait`)")
        names.append(name)
    return names


def _output(text: str) -> None:
    """Print, and treat a reader that went away (`| head`) as the end of the output, not an error."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _ask(args: argparse.Namespace, cmd: str) -> Any:
    try:
        return request(resolve(args.netns, args.control), cmd)
    except ControlError as exc:
        raise CliError(str(exc)) from None


def run_ss(args: argparse.Namespace) -> int:
    try:
        states = parse_state_filter(_state_names(args.filter))
    except UnknownState as exc:
        raise UsageError(str(exc)) from None
    result = _ask(args, "ss")
    try:
        rows: list[SocketRow] = [row_from_json(obj) for obj in result["rows"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"the stack sent rows this tcpstack cannot read ({exc!r})") from None
    if args.summary:
        # Like `ss -s`: the summary counts every socket, whatever the filter.
        summary = summarize(rows)
        if args.json:
            _output(json.dumps(summary.to_json()))
        else:
            _output("\n".join(format_summary(summary)))
        return 0
    shown = filter_rows(rows, states)
    if args.json:
        _output(json.dumps([row.to_json() for row in shown]))
        return 0
    _output("\n".join(format_table(shown, show_state=states is None, show_timers=args.options)))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    result = _ask(args, "stats")
    stats = result.get("stats") if isinstance(result, dict) else None
    if not isinstance(stats, dict):
        raise CliError("the stack sent no counters")
    if args.json:
        _output(json.dumps(stats))
    else:
        _output("\n".join(format_stats(stats)))
    return 0
