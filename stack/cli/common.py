"""What the subcommands share: errors that become one line, the need for root, argument types."""

from __future__ import annotations

import argparse
import ipaddress

from stack.link.tun import kernel_link_available


class CliError(Exception):
    """Printed as one line; the process exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """A bad argument found after parsing: exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


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


def port_number(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1..65535: {text!r}")
    return value


def ipv4_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def mtu_value(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an MTU: {text!r}") from None
    if not 576 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"MTU out of range 576..65535: {text!r}")
    return value
