"""What the core tells the application, about a connection's handle. Returned (`Host.take`), never
called back: the driver decides what to do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from stack.tcp.states import State

if TYPE_CHECKING:
    from stack.tcp.handle import ConnectionHandle


class CloseReason(Enum):
    NORMAL = "normal"
    """Both sides closed in order (possibly through TIME-WAIT)."""
    RESET = "reset"
    """The peer reset the connection (ECONNRESET)."""
    REFUSED = "refused"
    """The peer answered our SYN with RST (ECONNREFUSED)."""
    TIMED_OUT = "timed-out"
    """Retransmissions, keepalive probes or the user timeout ran out (ETIMEDOUT)."""
    ABORTED = "aborted"
    """The application aborted, or closed with unread data, or the stack reset it (RST sent)."""
    # The connection timed out after an ICMP error about it (a soft error, RFC 1122 §4.2.3.9):
    # the application sees that error instead of ETIMEDOUT, as Linux's tcp_write_err reports
    # sk_err_soft (stack.tcp.icmp maps each type and code).
    NET_UNREACHABLE = "net-unreachable"
    """ENETUNREACH: no route to the peer's network."""
    HOST_UNREACHABLE = "host-unreachable"
    """EHOSTUNREACH: the peer's host is unreachable (or the datagrams' time exceeded)."""
    PROTOCOL_UNREACHABLE = "protocol-unreachable"
    """ENOPROTOOPT: the peer's host does not speak TCP."""
    PROHIBITED = "prohibited"
    """EACCES: communication administratively prohibited (ICMPv6)."""
    PROTOCOL_ERROR = "protocol-error"
    """EPROTO: a parameter problem with our datagrams."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A passive open completed: a new connection on a listening port."""

    handle: ConnectionHandle
    listen_port: int


@dataclass(frozen=True, slots=True)
class Connected:
    """An active (or simultaneous) open completed."""

    handle: ConnectionHandle


@dataclass(frozen=True, slots=True)
class Readable:
    """New in-order data waits in the receive buffer; `ConnectionHandle.receive` takes it."""

    handle: ConnectionHandle


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer's FIN arrived after all its data: nothing more will be received."""

    handle: ConnectionHandle


@dataclass(frozen=True, slots=True)
class Writable:
    """Acknowledged data freed room in the send buffer."""

    handle: ConnectionHandle


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is finished for the application (it is CLOSED, or lives on as TIME-WAIT)."""

    handle: ConnectionHandle
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class StateChanged:
    """One state change, with what caused it: the raw material of traces and ladder diagrams."""

    time: float
    four_tuple: tuple[str, int, str, int]
    old: State
    new: State
    cause: str


Event = Accepted | Connected | Readable | EndOfStream | Writable | Closed | StateChanged
