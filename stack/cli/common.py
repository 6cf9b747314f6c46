"""What the subcommands share: errors that become one line, the need for root, argument types."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from stack.faults import FaultEngine, FaultRule, FaultRuleError, load_rules, parse_rule
from stack.link.tun import kernel_link_available
from stack.wire.address import canonical_address

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time; the alias keeps annotations resolvable (pdoc, `make docs`)
    Subcommands = argparse._SubParsersAction


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr and exit code 2 (no usage dump). Used by the
    `tcpstack` commands and by the examples."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class CliError(Exception):
    """Printed as one line; the process exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """A bad argument found after parsing: exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


def check_writable(path: str, option: str) -> None:
    """UsageError unless `path` can be written, found before anything starts (a file that did not
    exist is created to be sure, then removed again)."""
    existed = os.path.lexists(path)
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "Is a directory", path)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        with contextlib.suppress(OSError):
            os.unlink(path)


def require_kernel_link() -> None:
    ok, reason = kernel_link_available()
    if not ok:
        raise CliError(reason, 1)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def bounded_int(kind: str, low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in low..high, `kind` naming it in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{kind} out of range {low}..{high}: {text!r}")
        return value

    return parse


def seconds_at_most(limit: float) -> Callable[[str], float]:
    """argparse type: a positive number of seconds, at most `limit` (every load loop is bounded)."""

    def parse(text: str) -> float:
        value = positive_float(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"at most {limit:g} seconds: {text!r}")
        return value

    return parse


port_number = bounded_int("port number", 1, 65535)


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, in the canonical text the stack compares addresses in."""
    try:
        return canonical_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 or IPv6 address: {text!r}") from None


def mtu_value(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an MTU: {text!r}") from None
    if not 576 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"MTU out of range 576..65535: {text!r}")
    return value


def add_offload_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-offload", dest="offload", action="store_false",
                        help="no TUN offloads: every segment crosses at its real size (default: the kernel "
                             "hands over and splits 64 KB segments, through the virtio-net header)")


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fault", action="append", default=[], metavar="RULE",
                        help="a fault rule, e.g. 'drop out state=TIME-WAIT nth=1' (repeatable; README: fault rules)")
    parser.add_argument("--fault-file", metavar="FILE", help="a scenario file: one fault rule per line, # comments")


def fault_engine(args: argparse.Namespace) -> FaultEngine | None:
    """The fault engine the --fault/--fault-file arguments ask for, checked before anything starts."""
    rules: list[FaultRule] = []
    for text in args.fault:
        try:
            rules.append(parse_rule(text))
        except FaultRuleError as exc:
            raise UsageError(f"--fault {text!r}: {exc}") from None
    if args.fault_file:
        try:
            rules.extend(load_rules(args.fault_file))
        except FaultRuleError as exc:
            raise UsageError(f"--fault-file {args.fault_file}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"--fault-file {args.fault_file}: {exc.strerror}") from None
    return FaultEngine(rules) if rules else None
