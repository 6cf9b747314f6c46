"""`tcpstack ss` and `tcpstack stats`: look into a running `tcpstack serve` as iproute2's ss and nstat do.

    tcpstack ss [-tanoeilsH4] [--json] [--watch SECONDS [--count N]] [state STATE]... [exclude STATE]...
                [EXPRESSION] [--netns NAME | --control PATH]
    tcpstack stats [-azsrn] [--json] [--watch SECONDS [--count N]] [PATTERN...] [--netns NAME | --control PATH]

`ss` takes iproute2's habits: -t (TCP: all there is), -a (all states), -l (listening), -n
(numeric: always), -o (timers), -e (details), -i (TCP info), -s (summary), -H (no header), combined
as in `-tan`; `state X` / `exclude X` and the filter expressions `sport = :N`, `dport != :N`,
`src ADDR[/LEN][:PORT]`, `dst ...`, with and/or/not and parentheses (stack.observe.ssfilter).
Without -a, -l or a state it shows what ss shows: connected sockets, not listeners nor TIME-WAIT.
`--json` prints a list of row objects (every field, -i's info included), or the summary object.

`stats` prints the counters as `nstat` does (stack.observe.nstat): Tcp/TcpExt/Ip names, the
increase since the previous call (the first call: since the stack started), zeros hidden unless
-z, -a for absolute values, PATTERNs (shell globs) to choose. `--json` prints every counter under
the stack's own names, absolute, zeros included: the full picture, history untouched.

`--watch SECONDS` refreshes in place on a terminal (`stats` shows the increase per interval); into
a pipe or a file it prints plain lines instead, each starting with the time, one block per
interval. `--count N` stops after N refreshes; Ctrl-C stops too (exit 0).

Which stack: --control PATH, else --netns NAME (its default socket), else the only one running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from stack.cli.common import CliError, Subcommands, UsageError, positive_float
from stack.cli.control import ControlError, netns_name, request, resolve
from stack.observe import nstat
from stack.observe.snapshot import (
    SocketRow,
    UnknownState,
    format_summary,
    format_table,
    row_from_json,
    shown_states,
    summarize,
)
from stack.observe.ssfilter import SsFilterError, parse

CLEAR = "\033[H\033[2J"  # cursor home, clear screen: what `watch` does between refreshes


def register(sub: Subcommands) -> None:
    p = sub.add_parser("ss", help="list the running stack's sockets, like iproute2's ss",
                       description="List the running stack's sockets as iproute2's ss lists the kernel's.")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP sockets (the only kind there is)")
    p.add_argument("-a", "--all", action="store_true", help="every state, listeners and TIME-WAIT included")
    p.add_argument("-l", "--listening", action="store_true", help="listening sockets only")
    p.add_argument("-n", "--numeric", action="store_true", help="numeric (names are never resolved anyway)")
    p.add_argument("-o", "--options", action="store_true", help="show timers, like `ss -o`")
    p.add_argument("-e", "--extended", action="store_true", help="show details (ino, sk, open directions)")
    p.add_argument("-i", "--info", action="store_true",
                   help="show TCP info (rtt, rto, cwnd, ssthresh, bytes, retransmissions)")
    p.add_argument("-s", "--summary", action="store_true", help="print a summary like `ss -s`")
    p.add_argument("-H", "--no-header", action="store_true", help="no header line")
    p.add_argument("-4", "--ipv4", action="store_true", help="IPv4 (the only family there is)")
    p.add_argument("--json", action="store_true", help="print JSON (a list of objects; an object with -s)")
    _watch_options(p)
    p.add_argument("filter", nargs="*", metavar="FILTER",
                   help="`state STATE` / `exclude STATE` (ss names: established, time-wait, listening, ...; "
                        "groups all, connected, synchronized, bucket, big) and expressions: sport = :8, "
                        "dport != :7, src 198.18.0.2, dst 198.18.0.0/24, and/or/not, ( )")
    _target_options(p)
    p.set_defaults(func=run_ss)

    p = sub.add_parser("stats", help="print the running stack's counters, like nstat",
                       description="Print the running stack's counters as nstat prints the kernel's: "
                                   "increases since the previous call.")
    p.add_argument("-a", "--absolute", action="store_true", help="absolute values, not increases")
    p.add_argument("-z", "--zeros", action="store_true", help="show counters that are zero too")
    p.add_argument("-s", "--no-update", action="store_true", help="do not update the history")
    p.add_argument("-r", "--reset", action="store_true", help="start the history over")
    p.add_argument("-n", "--nooutput", action="store_true", help="update the history, print nothing")
    p.add_argument("--json", action="store_true",
                   help="print every counter, absolute, under the stack's own names (history untouched)")
    _watch_options(p)
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="counter names or shell globs (TcpExt*)")
    _target_options(p)
    p.set_defaults(func=run_stats)


def _target_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--netns", type=netns_name, metavar="NAME", help="the stack serving this namespace")
    group.add_argument("--control", metavar="PATH", help="the stack's control socket")


def _watch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", type=positive_float, metavar="SECONDS",
                   help="refresh every SECONDS (in place on a terminal, plain lines otherwise)")
    p.add_argument("--count", type=_count, metavar="N", help="with --watch: stop after N refreshes")


def _count(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _output(text: str) -> None:
    """Print, and treat a reader that went away (`| head`) as the end of the output, not an error."""
    try:
        sys.stdout.write(text + "\n" if text else "")
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise SystemExit(0) from None


def _ask(path: str, cmd: str) -> Any:
    try:
        return request(path, cmd)
    except ControlError as exc:
        raise CliError(str(exc)) from None


def _path(args: argparse.Namespace) -> str:
    try:
        return resolve(args.netns, args.control)
    except ControlError as exc:
        raise CliError(str(exc)) from None


def _watch(args: argparse.Namespace, title: str, refresh: Callable[[], list[str]]) -> int:
    """Run `refresh` once, or every --watch seconds: redraw on a terminal, plain lines elsewhere."""
    if args.count is not None and args.watch is None:
        raise UsageError("--count goes with --watch")
    if args.watch is None:
        _output("\n".join(refresh()))
        return 0
    tty = sys.stdout.isatty()
    done = 0
    next_at = time.monotonic()
    # Ctrl-C ends a watch as it ends every command (stack/cli/interrupt.py): one line, status 130.
    while True:
        lines = refresh()
        stamp = time.strftime("%H:%M:%S")
        if tty:
            _output(CLEAR + f"Every {args.watch:g}s: {title}    {stamp}\n\n" + "\n".join(lines))
        else:
            _output("\n".join(f"{stamp} {line}" for line in lines if line.strip()))
        done += 1
        if args.count is not None and done >= args.count:
            return 0
        next_at += args.watch
        time.sleep(max(0.0, next_at - time.monotonic()))


# ---------------------------------------------------------------------------------------- ss
def run_ss(args: argparse.Namespace) -> int:
    try:
        flt = parse(args.filter)
        states = shown_states(flt.states, flt.excluded, all_states=args.all, listening=args.listening)
    except (UnknownState, SsFilterError) as exc:
        raise UsageError(str(exc)) from None
    path = _path(args)

    def rows() -> list[SocketRow]:
        result = _ask(path, "ss")
        try:
            return [row_from_json(obj) for obj in result["rows"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CliError(f"the stack sent rows this tcpstack cannot read ({exc!r})") from None

    if args.summary:
        # Like `ss -s`: the summary counts every socket, whatever the filter.
        def summary() -> list[str]:
            s = summarize(rows())
            if args.json:
                return [json.dumps(s.to_json())]
            lines = format_summary(s)
            if args.watch is not None and not sys.stdout.isatty():
                return [f"{lines[0]}  {lines[1]}"]  # one line per interval
            return lines

        return _watch(args, "tcpstack ss -s", summary)

    def table() -> list[str]:
        shown = [r for r in rows() if r.state in states and (flt.predicate is None or flt.predicate(r))]
        if args.json:
            return [json.dumps([row.to_json() for row in shown])]
        return format_table(shown, show_state=len(states) != 1, show_timers=args.options,
                            show_details=args.extended, show_info=args.info, header=not args.no_header,
                            numeric=args.numeric)

    return _watch(args, "tcpstack ss", table)


# ---------------------------------------------------------------------------------------- stats
def run_stats(args: argparse.Namespace) -> int:
    path = _path(args)

    def counters() -> dict[str, int]:
        result = _ask(path, "stats")
        stats = result.get("stats") if isinstance(result, dict) else None
        if not isinstance(stats, dict):
            raise CliError("the stack sent no counters")
        return {str(k): int(v) for k, v in stats.items()}

    if args.json:
        return _watch(args, "tcpstack stats --json", lambda: [json.dumps(counters())])
    info = _ask(path, "info")
    identity = f"{info.get('pid')}:{info.get('netns')}:{info.get('started', '')}" if isinstance(info, dict) else ""
    source = f"{nstat.SOURCE} {info.get('netns', '')}".rstrip() if isinstance(info, dict) else nstat.SOURCE
    history_file = nstat.history_path(path)
    previous = None if args.reset else nstat.load_history(history_file, identity)
    state: dict[str, Any] = {"values": previous.values if previous else None,
                             "time": previous.time if previous else None}

    def refresh() -> list[str]:
        now = time.time()
        view = nstat.nstat_view(counters())
        elapsed = now - state["time"] if state["time"] is not None else None
        rep = nstat.report(view, state["values"], elapsed, absolute=args.absolute)
        if args.watch is None and not args.no_update:
            try:
                nstat.save_history(history_file, nstat.History(identity, now, view))
            except OSError as exc:
                print(f"tcpstack stats: history not saved ({history_file}: {exc.strerror})", file=sys.stderr)
        if args.watch is not None:
            state["values"], state["time"] = view, now  # next refresh: the increase per interval
        if args.nooutput:
            return []
        lines = nstat.format_report(rep, zeros=args.zeros, patterns=args.patterns, source=source)
        if args.watch is not None and not sys.stdout.isatty():
            return lines[1:]  # the time starts each line instead of the #source header
        return lines

    return _watch(args, "tcpstack stats", refresh)
