"""The filter language of iproute2's `ss`, the part that speaks of TCP endpoints.

    tcpstack ss [state STATE | exclude STATE]... [EXPRESSION]

    EXPRESSION = TERM { or TERM }             `||` for or, `&&` or nothing for and,
    TERM       = FACTOR { [and] FACTOR }      `!` or `not` negates, ( ) group
    FACTOR     = src HOST | dst HOST           local / peer address: ADDR, ADDR/PREFIX, ADDR:PORT,
                                               :PORT, *:PORT; IPv6 as [ADDR], [ADDR]:PORT, ADDR/PREFIX
               | sport OP PORT | dport OP PORT local / peer port; PORT is :N, N or a service name
    OP         = = == eq | != ne neq | < lt | > gt | <= le | >= ge   (none: =)

`state`/`exclude` pairs may appear anywhere at the top level; they choose states as ss does
(stack.observe.snapshot.parse_state_filter). Everything else must parse, or `SsFilterError` says
where it stopped, in one line.
"""

from __future__ import annotations

import ipaddress
import operator
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stack.observe.snapshot import SocketRow

Predicate = Callable[[SocketRow], bool]

_TOKEN = re.compile(r"\s*(\(|\)|!=|==|>=|<=|&&|\|\||=|<|>|!|[^\s()!=<>&|]+)")
_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq, "==": operator.eq, "eq": operator.eq,
    "!=": operator.ne, "ne": operator.ne, "neq": operator.ne,
    "<": operator.lt, "lt": operator.lt, ">": operator.gt, "gt": operator.gt,
    "<=": operator.le, "le": operator.le, ">=": operator.ge, "ge": operator.ge,
}


class SsFilterError(ValueError):
    """A filter ss would refuse; the message is one line."""


@dataclass(frozen=True, slots=True)
class Filter:
    states: list[str]  # state names from `state X` (to parse_state_filter)
    excluded: list[str]  # from `exclude X`
    predicate: Predicate | None  # None: no expression


def tokenize(args: Sequence[str]) -> list[str]:
    text = " ".join(args)
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover -- the pattern matches any non-blank character
            raise SsFilterError(f"cannot read the filter at {text[pos:]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def parse(args: Sequence[str]) -> Filter:
    """Split `state`/`exclude` pairs from the expression and compile the expression."""
    tokens = tokenize(args)
    states: list[str] = []
    excluded: list[str] = []
    rest: list[str] = []
    it = iter(tokens)
    for token in it:
        if token in ("state", "exclude", "excl"):
            name = next(it, None)
            if name is None:
                raise SsFilterError(f"`{token}` needs a state name (e.g. `{token} time-wait`)")
            (states if token == "state" else excluded).append(name)
        else:
            rest.append(token)
    predicate = _Parser(rest).parse() if rest else None
    return Filter(states, excluded, predicate)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise SsFilterError("the filter ends too soon")
        self.pos += 1
        return token

    def parse(self) -> Predicate:
        pred = self.expr()
        if self.peek() is not None:
            raise SsFilterError(f"unexpected {self.peek()!r} in the filter")
        return pred

    def expr(self) -> Predicate:
        terms = [self.term()]
        while self.peek() in ("or", "||"):
            self.take()
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else (lambda row: any(t(row) for t in terms))

    def term(self) -> Predicate:
        factors = [self.factor()]
        while self.peek() is not None and self.peek() not in ("or", "||", ")"):
            if self.peek() in ("and", "&&"):
                self.take()
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else (lambda row: all(f(row) for f in factors))

    def factor(self) -> Predicate:
        token = self.take()
        if token in ("not", "!"):
            inner = self.factor()
            return lambda row: not inner(row)
        if token == "(":
            inner = self.expr()
            if self.take() != ")":
                raise SsFilterError("a ( is not closed")
            return inner
        if token in ("sport", "dport"):
            op = _OPS["="]
            if self.peek() in _OPS:
                op = _OPS[self.take()]
            port = _port(self.take())
            if token == "sport":
                return lambda row: port is None or op(row.local_port, port)
            return lambda row: port is None or (row.peer_port is not None and op(row.peer_port, port))
        if token in ("src", "dst"):
            if self.peek() in ("=", "==", "eq"):
                self.take()
            match = _host(self.take())
            local = token == "src"
            return lambda row: match(row.local_addr if local else row.peer_addr,
                                     row.local_port if local else row.peer_port)
        raise SsFilterError(f"unknown filter word {token!r} (expected src, dst, sport, dport, state, exclude, "
                            "and, or, not)")


def _port(text: str) -> int | None:
    """':8' / '8' / ':http' -> 8 / 80; '*' or ':*' -> None (any)."""
    name = text[1:] if text.startswith(":") else text
    if name in ("*", ""):
        return None
    if name.isdigit():
        value = int(name)
        if not 0 <= value <= 65535:
            raise SsFilterError(f"port out of range: {text!r}")
        return value
    try:
        return socket.getservbyname(name, "tcp")
    except OSError:
        raise SsFilterError(f"not a port or service name: {text!r}") from None


def _host(text: str) -> Callable[[str, int | None], bool]:
    """ADDR, ADDR/PREFIX, ADDR:PORT, :PORT, *:PORT, * -> a matcher of (address, port). IPv6 as ss
    writes it: [ADDR] or [ADDR]:PORT (brackets when a port follows), or a bare ADDR[/PREFIX]."""
    addr_text, port = text, None
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :] if close > 0 else "?"
        if rest and not rest.startswith(":"):
            raise SsFilterError(f"not an [IPv6 address] or [IPv6 address]:port: {text!r}")
        addr_text = text[1:close]
        if rest:
            port = _port(rest)
    elif text.count(":") == 1:
        addr_text, _, port_text = text.rpartition(":")
        port = _port(port_text)
    network = None
    if addr_text not in ("", "*"):
        try:
            network = ipaddress.ip_network(addr_text, strict=False)
        except ValueError:
            raise SsFilterError(f"not an IPv4 or IPv6 address or prefix: {addr_text!r}") from None

    def match(addr: str, row_port: int | None) -> bool:
        if port is not None and row_port != port:
            return False
        if network is None:
            return True
        try:
            return ipaddress.ip_address(addr) in network  # False for the other family
        except ValueError:
            return False

    return match
