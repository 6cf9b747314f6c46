"""What a connection returns when something happened that changes the host's tables.

Every entry point of a connection (segment arrival, a timer, a user call) returns `None` or one of
these; only the host acts on them (it owns the 4-tuple table, the TIME-WAIT table and listeners).
Within one call, a later outcome supersedes an earlier one: a handshake that completes and a
connection that then reaches TIME-WAIT in the same segment is reported as `ToTimeWait`, and the
host's clean-up of a connection covers what `Established` would have done.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.wire.segment import Segment


@dataclass(frozen=True, slots=True)
class Finished:
    """The connection left the table: it is CLOSED (or, a listener's embryo, back in LISTEN)."""


@dataclass(frozen=True, slots=True)
class ToTimeWait:
    """The connection reached TIME-WAIT: the host decides between a TIME-WAIT record and, at
    `max_time_wait`, closing at once (`Tcb.enter_time_wait` / `Tcb.finish` do the rest)."""

    cause: str


@dataclass(frozen=True, slots=True)
class Established:
    """A listener's embryo completed its handshake: it leaves the listener's SYN backlog."""


@dataclass(frozen=True, slots=True)
class CookieCheck:
    """A half-open connection got an ACK it cannot accept: the host checks whether the ACK
    completes a SYN cookie it sent for the same 4-tuple (then that connection replaces this
    embryo), else answers it with <SEQ=SEG.ACK><CTL=RST> (RFC 9293 §3.10.7.4, fifth step)."""

    segment: Segment


Outcome = Finished | ToTimeWait | Established | CookieCheck

FINISHED = Finished()
ESTABLISHED = Established()
