"""What an application holds for a connection: a small handle, never the TCB.

The handle answers what a socket answers (state, addresses, queue lengths, `info()` in the manner of
Linux's TCP_INFO) and takes the user calls of RFC 9293 §3.10, each with the current time. A call
goes to the connection through the host, which acts on what the connection returns; the handle
itself owns nothing. After the connection is gone (CLOSED, or its TIME-WAIT record expired) the
handle still answers with the last state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from stack.tcp.config import FourTuple
from stack.tcp.events import CloseReason
from stack.tcp.states import State
from stack.tcp.tcb import Timer

if TYPE_CHECKING:
    from stack.tcp.connection import Connection
    from stack.tcp.context import Context
    from stack.tcp.outcome import Outcome


class _Host(Protocol):
    """What a handle needs of the host (stack.tcp.host.Host), without importing it."""

    ctx: Context

    def act(self, conn: Connection, outcome: Outcome | None) -> None: ...


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """One connection's numbers, as Linux's `struct tcp_info` (and `ss -i`) name them."""

    state: State
    snd_mss: int  # the MSS we send with (options excluded)
    rto: float  # seconds, backoff included
    rtt: float | None  # smoothed RTT in seconds (None before the first sample)
    rttvar: float
    backoff: int  # RTO doublings since the last new acknowledgment
    retransmits: int  # retransmission timeouts in a row (what tcp_retries2 counts)
    cwnd: int  # bytes
    ssthresh: int  # bytes
    congestion_control: str
    loss_recovery: str  # "newreno" or "sack"
    in_recovery: bool
    snd_wnd: int  # the peer's window, scaled
    rcv_wnd: int  # the window we advertised last, scaled
    snd_wscale: int
    rcv_wscale: int
    timestamps: bool
    sack: bool
    unacked: int  # bytes sent and not yet acknowledged
    send_queue: int  # bytes in the send buffer (Send-Q)
    recv_queue: int  # bytes received in order and not read (Recv-Q)
    keepalive_probes: int  # unanswered keepalive probes
    timers: dict[str, float]  # pending timer -> deadline (the host's clock)
    bytes_sent: int = 0  # data octets sent, retransmissions included (tcpi_bytes_sent)
    bytes_retrans: int = 0  # of them, retransmitted (tcpi_bytes_retrans)
    bytes_acked: int = 0  # octets acknowledged after the handshake, FIN included (Linux also counts the SYN)
    bytes_received: int = 0  # data octets received in order (tcpi_bytes_received)
    total_retrans: int = 0  # segments retransmitted over the connection's life (tcpi_total_retrans)
    conn_id: int = 0  # the host's number for the connection (what `ss -e` shows as sk:)


class ConnectionHandle:
    __slots__ = ("_conn", "_host", "user_data")

    def __init__(self, host: _Host, conn: Connection) -> None:
        self._host = host
        self._conn = conn
        self.user_data: object = None  # free for the driver (the runtime keeps its transport here)

    def __repr__(self) -> str:
        la, lp, ra, rp = self._conn.four_tuple
        return f"<ConnectionHandle {la}:{lp} -> {ra}:{rp} {self.state}>"

    # ---------------------------------------------------------------- what a socket answers
    @property
    def state(self) -> State:
        return self._conn.state

    @property
    def four_tuple(self) -> FourTuple:
        """(local address, local port, remote address, remote port)."""
        return self._conn.four_tuple

    @property
    def local_address(self) -> tuple[str, int]:
        return self._conn.four_tuple[0], self._conn.four_tuple[1]

    @property
    def remote_address(self) -> tuple[str, int]:
        return self._conn.four_tuple[2], self._conn.four_tuple[3]

    @property
    def history(self) -> list[tuple[float, State, State, str]]:
        """Every state change: (time, old, new, cause), up to TIME-WAIT's end."""
        return list(self._conn.history)

    @property
    def close_reason(self) -> CloseReason | None:
        return self._conn.close_reason

    @property
    def eof(self) -> bool:
        """The peer's FIN arrived (after all its data)."""
        return self._conn.peer_fin

    @property
    def recv_queue_len(self) -> int:
        """Bytes received in order and not yet read (`ss` Recv-Q)."""
        return self._conn.recv_queue_len

    @property
    def send_queue_len(self) -> int:
        """Bytes not yet acknowledged by the peer (`ss` Send-Q)."""
        return self._conn.send_queue_len

    @property
    def orphan(self) -> bool:
        """The application closed the connection fully; the stack finishes it alone."""
        return self._conn.orphan

    @property
    def linger0(self) -> bool:
        return self._conn.linger0

    @linger0.setter
    def linger0(self, on: bool) -> None:
        """SO_LINGER {1, 0}: close() resets instead of sending FIN."""
        self._conn.linger0 = on

    def info(self) -> TcpInfo:
        c = self._conn
        rtt, cc, rec = c.rtt, c.cc, c.recovery
        timers = {kind.name: d for kind in Timer if (d := c.timer_deadline(kind)) is not None}
        return TcpInfo(
            state=c.state, snd_mss=c.snd_mss, rto=rtt.rto, rtt=rtt.srtt, rttvar=rtt.rttvar, backoff=rtt.backoff,
            retransmits=c.retries, cwnd=cc.cwnd, ssthresh=cc.ssthresh, congestion_control=cc.name,
            loss_recovery=rec.name, in_recovery=rec.in_recovery, snd_wnd=c.snd_wnd, rcv_wnd=c.rcv_wnd,
            snd_wscale=c.snd_wscale, rcv_wscale=c.rcv_wscale, timestamps=c.ts_ok, sack=c.sack_ok,
            unacked=c.in_flight, send_queue=c.send_queue_len, recv_queue=c.recv_queue_len,
            keepalive_probes=c.keepalive_sent, timers=timers, bytes_sent=c.bytes_sent,
            bytes_retrans=c.bytes_retrans, bytes_acked=c.bytes_acked, bytes_received=c.bytes_received,
            total_retrans=c.total_retrans, conn_id=c.cid,
        )

    # ---------------------------------------------------------------- user calls (RFC 9293 §3.10)
    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """SEND: queue data; returns how many bytes fitted in the send buffer."""
        ctx = self._host.ctx
        ctx.now = now
        return self._conn.send(data, ctx)

    def receive(self, now: float, max_bytes: int = -1) -> bytes:
        """RECEIVE: in-order data (all of it when max_bytes < 0); b"" when none is waiting."""
        ctx = self._host.ctx
        ctx.now = now
        return self._conn.receive(ctx, max_bytes)

    def receive_chunks(self, now: float) -> list[bytes]:
        """RECEIVE of all in-order data, in the pieces it arrived in (large ones not copied)."""
        ctx = self._host.ctx
        ctx.now = now
        return self._conn.receive_chunks(ctx)

    def shutdown(self, now: float, read: bool = False, write: bool = True) -> None:
        """shutdown(2): SHUT_WR sends our FIN after pending data; SHUT_RD sends nothing."""
        conn, host = self._conn, self._host
        ctx = host.ctx
        ctx.now = now
        host.act(conn, conn.shutdown(ctx, read, write))

    def close(self, now: float) -> None:
        """CLOSE: FIN after pending data (RST if unread data is discarded, or with linger0)."""
        conn, host = self._conn, self._host
        ctx = host.ctx
        ctx.now = now
        host.act(conn, conn.close(ctx))

    def abort(self, now: float) -> None:
        """ABORT: RST, no TIME-WAIT."""
        conn, host = self._conn, self._host
        ctx = host.ctx
        ctx.now = now
        host.act(conn, conn.abort(ctx))
