"""`tcpstack drill`: packetdrill-language scripts against the Linux kernel and against tcpstack.

    tcpstack drill SCRIPT.pkt... [--target kernel|stack|both] [--tolerance-usecs N] [--json]
                                 [--verbose] [--ladder FILE.svg] [--config KEY=VALUE]... [--keep-going]

One line per script and target (`PASS`, `FAIL line N: expected ..., got ...`, `SKIP: unsupported X`),
with both targets a table (script, kernel, stack, first difference, listed as intended or not), and
the closing line `drill: N passed, M failed, K skipped`. Exit 0 only when nothing failed; a script
with a syntax error prints `FILE:LINE:COL: message` and exits 2 before anything runs. Without
--keep-going the first failure stops the runs not yet started. --config sets a `Config` field of
the stack target; --ladder draws each run as a ladder diagram (both ends' states).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stack.cli.common import Subcommands, UsageError
from stack.drill import differences, report
from stack.drill.drive import Options, run_all
from stack.drill.parser import parse_file
from stack.drill.runner import REMOTE_ADDR, RunResult
from stack.drill.script import Script, ScriptError
from stack.tcp.config import Config

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def register(sub: Subcommands) -> None:
    p = sub.add_parser("drill", help="run packetdrill scripts against Linux and tcpstack, side by side",
                       description="Run packetdrill-language scripts against the Linux kernel (in a private "
                                   "network namespace) and against tcpstack (on a virtual clock).")
    p.add_argument("scripts", nargs="+", metavar="SCRIPT.pkt")
    p.add_argument("--target", choices=("kernel", "stack", "both"), default="both",
                   help="the side under test (default: both, with a table of differences)")
    p.add_argument("--tolerance-usecs", type=_tolerance, metavar="N",
                   help="timing tolerance in microseconds (default: the script's, else 20000)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--verbose", "-v", action="store_true", help="print every event of every run")
    p.add_argument("--ladder", metavar="FILE.svg", help="draw each run as a ladder diagram (SVG)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="set a tcpstack Config field for the stack target (repeatable)")
    p.add_argument("--keep-going", action="store_true", help="run every script even after a failure")
    p.set_defaults(func=run_drill)


def _tolerance(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of microseconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def parse_config(items: list[str]) -> Config:
    """`--config KEY=VALUE` pairs -> a Config (UsageError naming a bad one)."""
    defaults = Config()
    kinds = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(Config)}
    kinds["user_timeout"] = float
    changes: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        kind = kinds.get(key)
        if not eq or kind is None or kind not in (bool, int, float, str):
            known = ", ".join(k for k, t in kinds.items() if t in (bool, int, float, str))
            raise UsageError(f"--config {item!r}: expected KEY=VALUE with KEY one of {known}")
        try:
            if kind is bool:
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError(text)
                changes[key] = text.lower() in _TRUE
            else:
                changes[key] = kind(text)
        except ValueError:
            raise UsageError(f"--config {item!r}: {text!r} is not a {kind.__name__}") from None
    try:
        return defaults.with_changes(**changes)
    except ValueError as exc:
        raise UsageError(f"--config: {exc}") from None


def _load(paths: list[str]) -> tuple[list[Script], list[str]]:
    """The parsed scripts, and one `FILE:LINE:COL: message` per script that does not parse."""
    scripts: list[Script] = []
    errors: list[str] = []
    for path in paths:
        try:
            scripts.append(parse_file(path))
        except ScriptError as exc:
            errors.append(str(exc))
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    return scripts, errors


def _kernel_probe(netns: str) -> Callable[[], str | None]:
    """The kernel's state of the connection under test, read with sock_diag (for ladders)."""
    from stack.observe.sockdiag import SockDiag

    diag = SockDiag(netns)

    def probe() -> str | None:
        sockets = diag.dump()
        for s in sockets:
            if s.remote[0] == REMOTE_ADDR:
                return s.rfc_state
        return "LISTEN" if any(s.state == "LISTEN" for s in sockets) else None

    return probe


def _draw(results: list[RunResult], path: str) -> list[str]:
    from stack.observe.ladder import entries_from_segments
    from stack.observe.ladder_svg import render_svg

    drawn = [r for r in results if r.trace]
    written = []
    for r in drawn:
        out = Path(path)
        if len(drawn) > 1:
            out = out.with_name(f"{out.stem}.{Path(r.script).stem}.{r.target}{out.suffix or '.svg'}")
        port = next((seg.src_port for _, d, seg in r.trace if d == "out"), r.trace[0][2].dst_port)
        entries = entries_from_segments(r.trace, port, stack_states=r.states or None, infer_states=True)
        left = "Linux" if r.target == "kernel" else "tcpstack"
        title = f"{Path(r.script).name} ({r.target}): {report.status_text(r)}"
        out.write_text(render_svg(entries, left=left, right="script", title=title))
        written.append(str(out))
    return written


def run_drill(args: argparse.Namespace) -> int:
    config = parse_config(args.config)
    scripts, errors = _load(args.scripts)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    try:
        listed = differences.load()
    except differences.DifferencesError as exc:
        raise UsageError(str(exc)) from None
    targets = ("kernel", "stack") if args.target == "both" else (args.target,)
    if "kernel" in targets:
        from stack.link.netns import install_signal_handlers

        install_signal_handlers()  # Ctrl-C deletes the namespaces of the runs in progress first
    options = Options(args.tolerance_usecs, config, _kernel_probe if args.ladder else None, listed)
    results: list[RunResult] = []
    stop = None if args.keep_going else (lambda r: r.failed)
    for result in run_all(scripts, targets, options, stop):
        results.append(result)
        if not args.json:
            print(report.run_line(result), flush=True)
            if args.verbose:
                print("\n".join(report.detail_lines(result)), flush=True)
    ran = {(r.script, r.target) for r in results}
    if len(ran) < len(scripts) * len(targets) and not args.json:
        print("drill: stopped at the first failure (--keep-going runs every script)")
    if args.json:
        print(json.dumps(report.to_json(results, len(targets) == 2), indent=2))
    else:
        if len(targets) == 2:
            print()
            print("\n".join(report.table_text(report.table_rows(results))))
            print()
        print(report.summarize(results).text())
    if args.ladder:
        for path in _draw(results, args.ladder):
            print(f"drill: ladder written to {path}", file=sys.stderr)
    return 1 if any(r.failed for r in results) else 0
