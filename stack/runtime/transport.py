"""`asyncio.Transport` over one tcpstack connection, so ordinary asyncio protocols and streams run
unchanged on the userspace stack.

Writes go into the core's send buffer as far as it has room; the rest waits here and goes on
`Writable`, with `pause_writing`/`resume_writing` at the usual water marks. Reading can be paused:
data then stays in the core's receive buffer and the advertised window closes, as with a kernel
socket nobody reads.
"""

from __future__ import annotations

import asyncio
import errno
from typing import TYPE_CHECKING, Any

from stack.tcp.connection import InvalidCall
from stack.tcp.events import CloseReason
from stack.tcp.handle import ConnectionHandle
from stack.tcp.states import State

if TYPE_CHECKING:
    from stack.runtime.stack import Stack

_EXCEPTIONS: dict[CloseReason, type[Exception] | None] = {
    CloseReason.NORMAL: None,
    CloseReason.ABORTED: None,
    CloseReason.RESET: ConnectionResetError,
    CloseReason.REFUSED: ConnectionRefusedError,
    CloseReason.TIMED_OUT: TimeoutError,
}
# Errors learnt from ICMP (stack.tcp.icmp): an OSError with Linux's errno.
_ERRNOS = {
    CloseReason.NET_UNREACHABLE: errno.ENETUNREACH,
    CloseReason.HOST_UNREACHABLE: errno.EHOSTUNREACH,
    CloseReason.PROTOCOL_UNREACHABLE: errno.ENOPROTOOPT,
    CloseReason.PROHIBITED: errno.EACCES,
    CloseReason.PROTOCOL_ERROR: errno.EPROTO,
}


_BYTES_LIKE = (bytes, bytearray, memoryview)
_NO_EXTRA: dict[str, Any] = {}
_LOST = asyncio.Protocol()  # what a transport holds once its protocol heard connection_lost


def close_exception(reason: CloseReason) -> Exception | None:
    number = _ERRNOS.get(reason)
    if number is not None:
        return OSError(number, f"connection {reason.value}")
    exc_type = _EXCEPTIONS[reason]
    return exc_type(f"connection {reason.value}") if exc_type is not None else None


class TcpTransport(asyncio.Transport):
    # One per connection: slots, and no `extra` dict (get_extra_info answers from the handle).
    __slots__ = ("_closing", "_conn", "_eof_pending", "_eof_seen", "_high", "_lost", "_low", "_pending",
                 "_protocol", "_reading", "_stack", "_writing_paused")

    def __init__(self, stack: Stack, conn: ConnectionHandle, protocol: asyncio.BaseProtocol) -> None:
        self._extra = _NO_EXTRA
        self._stack = stack
        self._conn = conn
        self._protocol = protocol
        self._pending = bytearray()  # written by the application, not yet taken by the core
        self._eof_pending = False
        self._closing = False
        self._lost = False
        self._reading = True
        self._writing_paused = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._eof_seen = False
        conn.user_data = self

    # ---------------------------------------------------------------- info
    @property
    def conn(self) -> ConnectionHandle:
        """The connection's handle (state, addresses, `info()`)."""
        return self._conn

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        la, lp, ra, rp = self._conn.four_tuple
        if name == "peername":
            # As a socket of the family gives it: IPv6 adds flowinfo and scope_id (both 0 here).
            return (ra, rp, 0, 0) if ":" in ra else (ra, rp)
        if name == "sockname":
            return (la, lp, 0, 0) if ":" in la else (la, lp)
        if name == "tcp_state":
            return self._conn.state.value
        if name == "connection":
            return self._conn
        if name == "stack":
            return self._stack
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing or self._lost

    # ---------------------------------------------------------------- reading
    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._stack.call_soon_deliver(self)

    def deliver(self) -> None:
        """Hand in-order data to the protocol, then EOF once all data is out (Readable/EndOfStream)."""
        if not self._reading or self._lost:
            return
        conn = self._conn
        # Piece by piece as the segments came (a 64 KB segment is handed on without a copy); all
        # of it now, as one joined read would have been, unless the protocol closes meanwhile.
        for data in conn.receive_chunks(self._stack.now()):
            self._protocol.data_received(data)  # type: ignore[attr-defined]
            if self._lost or self._closing:
                break
        if conn.eof and not conn.recv_queue_len and not self._eof_seen and self._reading and not self._lost:
            self._eof_seen = True
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
            if not keep_open:
                self.close()

    # ---------------------------------------------------------------- writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, _BYTES_LIKE):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self._lost:
            # First: a connection the peer reset (or the stack aborted) is also "closing", and
            # asyncio drops writes on a lost connection silently rather than raising.
            return
        if self._eof_pending or self._closing:
            raise RuntimeError("cannot write after write_eof() or close()")
        if not data:
            return
        if self._pending:
            self._pending += data
        else:
            taken = self._send(data)
            if taken < len(data):
                self._pending += memoryview(data)[taken:]
        self._stack.kick()
        self._check_high_water()

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self._conn.send(data, self._stack.now())
        except InvalidCall:
            return len(data)  # the connection is closing under us: nothing more will go out

    def writable(self) -> None:
        """The core's send buffer has room again (Writable): move pending bytes into it."""
        if self._pending:
            taken = self._send(self._pending)
            del self._pending[:taken]
        if not self._pending:
            self._finish_pending_close()
        self._check_low_water()

    def _finish_pending_close(self) -> None:
        if self._eof_pending and not self._closing:
            self._eof_pending = False
            self._conn.shutdown(self._stack.now())
        if self._closing and not self._lost:
            self._conn.close(self._stack.now())
            self._stack.kick()
            self._connection_lost(None)

    def write_eof(self) -> None:
        """Half-close: our FIN goes after the pending data; reading goes on."""
        if self._closing or self._eof_pending or self._lost:
            return
        self._eof_pending = True
        if not self._pending:
            self._finish_pending_close()
        self._stack.kick()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_high_water()

    def _check_high_water(self) -> None:
        if not self._writing_paused and len(self._pending) > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _check_low_water(self) -> None:
        if self._writing_paused and len(self._pending) <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        """Normal close: pending data, then FIN (RST instead if received data stays unread)."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._reading = False
        if not self._pending:
            self._finish_pending_close()
        self._stack.kick()

    def abort(self) -> None:
        """Send RST at once, drop pending data (RFC 9293 ABORT)."""
        if self._lost:
            return
        self._pending.clear()
        self._conn.abort(self._stack.now())
        self._stack.kick()
        self._connection_lost(None)

    def set_linger0(self, on: bool = True) -> None:
        """SO_LINGER {1, 0}: close() then resets instead of closing in order."""
        self._conn.linger0 = on

    def connection_closed(self, reason: CloseReason) -> None:
        """The core finished the connection (Closed event)."""
        if self._conn.state is State.CLOSED or reason is not CloseReason.NORMAL:
            self._pending.clear()
        if not self._lost:
            # Deliver what was received before the end; a reset discards it (as a kernel does).
            if reason is CloseReason.NORMAL and self._reading:
                self.deliver()
            self._connection_lost(close_exception(reason))

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._conn.user_data = None  # no cycle left for the garbage collector to find
        self._stack.forget_transport(self)
        self._stack.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        protocol = self._protocol
        self._protocol = _LOST  # as asyncio's own transports drop theirs: no transport <-> protocol cycle
        protocol.connection_lost(exc)

    def __repr__(self) -> str:
        return f"<TcpTransport {self._conn!r}>"
