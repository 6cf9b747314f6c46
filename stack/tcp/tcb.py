"""The transmission control block (RFC 9293 §3.3.1): one connection's variables, and its timers.

Only state and what follows from it directly live here; the logic is split by concern around it
(gVisor's snd.go / rcv.go): `sender` puts segments on the wire, `acks` takes the peer's
acknowledgments, `recovery` decides what to resend, `receiver` takes text and FINs, `arrival` runs
RFC 9293's SEGMENT ARRIVES steps, `timers` the timer actions, and `connection` adds the user calls
and the entry points. Field names are RFC 9293's (`snd_una`, `snd_nxt`, `rcv_nxt`, ...), plus
`snd_max`: the highest sequence number sent so far, which stays put when a retransmission timeout
rewinds `snd_nxt` to `snd_una` (go-back-N), and against which ACKs are validated.
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache
from typing import TYPE_CHECKING

from stack.tcp import budget, congestion
from stack.tcp.buffers import ReceiveQueue, SendBuffer
from stack.tcp.config import Config, FourTuple
from stack.tcp.context import Context
from stack.tcp.events import Closed, CloseReason, StateChanged
from stack.tcp.outcome import FINISHED, Finished
from stack.tcp.rtt import RttEstimator
from stack.tcp.seq import HALF, MASK, seq_add, seq_sub
from stack.tcp.states import TRANSITIONS, State, check_transition

if TYPE_CHECKING:
    from stack.tcp.handle import ConnectionHandle
    from stack.tcp.recovery.base import LossRecovery

INF = float("inf")
S = State


class Timer(IntEnum):
    RTX = 0  # retransmission of SYN, data or FIN (RFC 6298)
    PERSIST = 1  # zero-window probe (RFC 9293 §3.8.6.1)
    DELACK = 2  # delayed ACK (RFC 9293 §3.8.6.3)
    KEEPALIVE = 3  # RFC 9293 §3.8.4
    FIN_WAIT_2 = 4  # orphan FIN-WAIT-2 reaping (Linux tcp_fin_timeout)
    LOSS_PROBE = 5  # tail loss probe (RFC 8985 §7)


N_TIMERS = len(Timer)  # a timer-wheel entry's id is cid * N_TIMERS + kind
_TIMER_KINDS = tuple(range(N_TIMERS))


class Tcb:
    """A connection's state. `Connection` (stack.tcp.connection) adds the calls that change it."""

    __slots__ = (
        "__weakref__",
        "_armed",
        "_timer_id",
        "announced",
        "bytes_acked",
        "bytes_received",
        "bytes_retrans",
        "bytes_sent",
        "cc",
        "cfg",
        "challenge_time",
        "cid",
        "close_reason",
        "deadlines",
        "fin_queued",
        "fin_seq",
                "four_tuple",
        "handle",
        "history",
        "irs",
        "iss",
        "keepalive_sent",
        "last_ack_sent",
        "last_data_time",
        "last_recv_time",
        "linger0",
        "listen_port",
        "max_snd_wnd",
        "orphan",
        "passive",
        "peer_fin",
        "pingpong",
        "probes_out",
        "probes_start",
        "quick_acks",
        "rcv_adv",
        "rcv_nxt",
        "rcv_wscale",
        "read_closed",
        "recovery",
        "recv",
        "retrans_stamp",
        "retries",
        "rtt",
        "rtt_seq",
        "rtt_time",
        "sack_ok",
        "send_buf",
        "snd_max",
        "snd_mss",
        "snd_nxt",
        "snd_sml",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "soft_error",
        "state",
        "syn_flags_sent",
        "tlp_high_seq",
        "total_retrans",
        "ts_offset",
        "ts_ok",
        "ts_recent",
        "ts_recent_time",
        "want_writable",
        "wscale_ok",
    )

    def __init__(self, four_tuple: FourTuple, cid: int, config: Config, iss: int, ts_offset: int, now: float,
                 passive: bool, listen_port: int | None = None) -> None:
        self.four_tuple = four_tuple
        self.cid = cid
        self.cfg = config
        self.state = S.LISTEN if passive else S.CLOSED
        self.passive = passive
        self.listen_port = listen_port
        self.history: list[tuple[float, State, State, str]] = []
        self.close_reason: CloseReason | None = None
        # Whether the application knows this connection: an active one from connect(), a passive
        # one once Accepted was emitted. Only those get a Closed event.
        self.announced = not passive
        self.handle: ConnectionHandle | None = None  # what the application holds (set by the host)

        # Send sequence space (RFC 9293 §3.3.1, Figure 3).
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.snd_mss = 536  # RFC 9293 §3.7.1: default when the peer sends no MSS option
        # Receive sequence space (Figure 4).
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window we advertised last (never moved left, §3.8.6.2.2)
        self.rcv_wscale = _window_shift(config.recv_buffer) if config.window_scaling else 0
        self.wscale_ok = False  # both SYNs carried the window-scale option (RFC 7323 §2.2)

        # Options (RFC 7323 timestamps, RFC 2018 SACK), decided by the handshake.
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_time = now
        self.ts_offset = ts_offset
        self.sack_ok = False
        self.last_ack_sent = 0

        self.send_buf = SendBuffer(config.send_buffer, seq_add(iss, 1))
        self.recv = ReceiveQueue()
        self.fin_queued = False  # the application shut down its sending side
        self.fin_seq: int | None = None  # sequence number of our FIN, once it has been sent
        self.peer_fin = False
        self.read_closed = False
        self.orphan = False  # the application closed the connection fully
        self.linger0 = False

        self.rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.cc = congestion.create(config.congestion_control, 536, config.initial_cwnd_segments)
        self.recovery: LossRecovery  # set by Connection (NewReno's; SACK's once negotiated)
        self.retries = 0
        # The last ICMP error about this connection (RFC 1122 §4.2.3.9 soft error, stack.tcp.icmp):
        # what the application sees instead of ETIMEDOUT if it times out; new data acknowledged
        # clears it (Linux sk_err_soft, reset in tcp_ack).
        self.soft_error: CloseReason | None = None
        self.rtt_seq: int | None = None  # the segment being timed (RFC 6298 §3), if any
        self.rtt_time = 0.0
        # When the retransmission timer first resent data since the last new ACK (Linux
        # retrans_stamp): the user timeout counts from there.
        self.retrans_stamp: float | None = None
        self.snd_sml = iss  # end of the last segment smaller than the MSS (Minshall's Nagle)
        self.last_recv_time = now
        self.keepalive_sent = 0
        self.probes_out = 0  # zero-window probes the peer has not answered (Linux icsk_probes_out)
        self.probes_start: float | None = None  # when the window has been zero since, probing
        self.tlp_high_seq: int | None = None  # SND.NXT when a tail loss probe went out (one at a time)
        self.challenge_time = -INF
        # ACK policy, after Linux's icsk_ack: ACK every data segment at once while `quick_acks`
        # last (from the first data, and after an idle RTO), unless the exchange is interactive
        # (`pingpong`: we answered within the delayed-ACK time, so the ACK may ride on an answer).
        self.quick_acks = 0
        self.pingpong = False
        self.last_data_time: float | None = None  # when in-order data last arrived
        self.want_writable = False
        self.syn_flags_sent = 0  # SYN or SYN|ACK, once sent: a second one is a retransmission
        # What TCP_INFO reports (RFC 4898's names, as Linux's tcpi_*): data octets put on the wire
        # (retransmissions included), of them retransmitted, acknowledged (SND.UNA's progress after
        # the handshake, FIN included), received in order; and segments retransmitted.
        self.bytes_sent = 0
        self.bytes_retrans = 0
        self.bytes_acked = 0
        self.bytes_received = 0
        self.total_retrans = 0
        self.deadlines = [INF] * N_TIMERS  # per Timer kind; INF when not armed
        self._timer_id = [-1] * N_TIMERS
        self._armed = [INF] * N_TIMERS  # when the wheel entry of each timer fires

    # ------------------------------------------------------------------ introspection
    def __repr__(self) -> str:
        la, lp, ra, rp = self.four_tuple
        return f"<{type(self).__name__} {la}:{lp} -> {ra}:{rp} {self.state}>"

    @property
    def rcv_wnd(self) -> int:
        """RCV.WND as last advertised: what the acceptability test of §3.10.7.4 checks against."""
        d = (self.rcv_adv - self.rcv_nxt) & MASK  # max(0, seq_sub(...)), inline: once per segment
        return d if d <= HALF else 0

    @property
    def recv_queue_len(self) -> int:
        """Bytes received in order and not yet read by the application (`ss` Recv-Q)."""
        return self.recv.ready_len

    @property
    def send_queue_len(self) -> int:
        """Bytes not yet acknowledged by the peer (`ss` Send-Q)."""
        return len(self.send_buf)

    @property
    def in_flight(self) -> int:
        return seq_sub(self.snd_nxt, self.snd_una)

    def unsent(self) -> int:
        """Bytes in the send buffer not yet sent."""
        return len(self.send_buf) - seq_sub(self.snd_nxt, self.send_buf.seq)

    def send_mss(self) -> int:
        """The segment size the sender uses: the MSS, or for a peer with a tiny window half of the
        largest window it offered, so that two segments can be in flight (Linux
        tcp_bound_to_half_wnd; RFC 1122 §4.2.3.4 leaves the sizing to the sender)."""
        mss = self.snd_mss
        max_wnd = self.max_snd_wnd
        if max_wnd and mss > max_wnd >> 1:
            return max(max_wnd >> 1 if max_wnd > 536 else max_wnd, 48)
        return mss

    def last_window(self) -> int:
        """The window field we advertised last (what a TIME-WAIT record keeps sending)."""
        return min(self.rcv_wnd >> self.rcv_wscale, 65535)

    def timer_deadline(self, kind: Timer) -> float | None:
        deadline = self.deadlines[kind]
        return None if deadline == INF else deadline

    def tsval(self, now: float) -> int:
        """Our timestamp clock: milliseconds plus a per-connection offset (RFC 7323 §5.4, §7.1)."""
        return (int(now * 1000.0) + self.ts_offset) & MASK

    # ------------------------------------------------------------------ the receive window
    def window_free(self) -> int:
        recv = self.recv
        free = self.cfg.recv_buffer - recv.ready_len - recv.ooo_bytes
        if free < 0:
            free = 0
        pool = recv.pool
        return budget.window_cap(self, free) if pool is not None and pool.under_pressure else free

    def advertise(self) -> int:
        """The window field of an outgoing ACK. The right edge never moves left (RFC 9293 §3.8.6.2.2
        SHLD-14) and grows only by useful amounts (receiver SWS avoidance, SHLD-13)."""
        # Sequence arithmetic of stack.tcp.seq written out: this runs for every ACK sent.
        shift = self.rcv_wscale
        rcv_nxt = self.rcv_nxt
        adv = self.rcv_adv
        right = (rcv_nxt + self.window_free()) & MASK
        grow = (right - adv) & MASK
        if grow > HALF:  # the new edge would be left of the advertised one
            right = adv
        elif grow and grow < min(self.cfg.recv_buffer // 2, self.snd_mss):
            right = adv  # too small a gain to announce (SWS avoidance)
        wnd = (right - rcv_nxt) & MASK
        if wnd > HALF:
            wnd = 0
        field = wnd >> shift
        if field >= 65535:
            field = 65535
        elif (field << shift) < wnd:
            field += 1  # round up: scaling must not pull the edge left (RFC 7323 §2.4)
        edge = (rcv_nxt + (field << shift)) & MASK
        if 0 < ((edge - adv) & MASK) < HALF:
            self.rcv_adv = edge
        return field

    # ------------------------------------------------------------------ state changes
    def set_state(self, new: State, cause: str, ctx: Context) -> None:
        old = self.state
        if (old, new) not in TRANSITIONS:
            check_transition(old, new)  # raises, with the message
        self.state = new
        now = ctx.now
        self.history.append((now, old, new, cause))
        ctx.edges[(old, new)] += 1  # Context.state_changed, inlined: once or more per segment
        if ctx.record_state_changes:
            ctx.events.append(StateChanged(now, self.four_tuple, old, new, cause))

    def finish(self, reason: CloseReason, cause: str, ctx: Context, new_state: State = S.CLOSED) -> Finished:
        """Stop: CLOSED (or LISTEN, for a passive embryo), timers cancelled. The host removes the
        connection from its tables when it sees the outcome."""
        self.set_state(new_state, cause, ctx)
        self.close_reason = reason
        self.cancel_all_timers(ctx)
        if self.announced and self.handle is not None:
            ctx.events.append(Closed(self.handle, reason))
        return FINISHED

    # ------------------------------------------------------------------ timers
    def set_timer(self, kind: Timer, deadline: float, ctx: Context) -> None:
        """Arm a timer. Pushing a deadline later leaves the wheel entry alone (it fires early, is
        re-armed then): an ACK stream that restarts the RTO costs no wheel work per ACK."""
        self.deadlines[kind] = deadline
        timer_id = self._timer_id[kind]
        if timer_id >= 0:
            if self._armed[kind] <= deadline:
                return
            ctx.wheel.cancel(timer_id)
        self._timer_id[kind] = ctx.wheel.schedule(deadline, self.cid * N_TIMERS + kind)
        self._armed[kind] = deadline

    def clear_timer(self, kind: Timer, ctx: Context) -> None:
        self.deadlines[kind] = INF
        timer_id = self._timer_id[kind]
        if timer_id >= 0:
            ctx.wheel.cancel(timer_id)
            self._timer_id[kind] = -1

    def cancel_all_timers(self, ctx: Context) -> None:
        self.deadlines = [INF] * N_TIMERS
        timer_ids = self._timer_id
        for kind in _TIMER_KINDS:
            timer_id = timer_ids[kind]
            if timer_id >= 0:
                ctx.wheel.cancel(timer_id)
                timer_ids[kind] = -1

    def timer_due(self, kind: Timer, ctx: Context) -> bool:
        """The wheel fired `kind`: whether its deadline is really due. A lazily pushed-back
        deadline is re-armed instead."""
        self._timer_id[kind] = -1
        deadline = self.deadlines[kind]
        if deadline == INF:
            return False
        if deadline > ctx.now:
            self._timer_id[kind] = ctx.wheel.schedule(deadline, self.cid * N_TIMERS + kind)
            self._armed[kind] = deadline
            return False
        self.deadlines[kind] = INF
        return True


@lru_cache(maxsize=64)
def _window_shift(buffer: int) -> int:
    """The smallest window-scale shift that lets 16 bits cover `buffer` (RFC 7323 §2.3, max 14)."""
    shift = 0
    while shift < 14 and (65535 << shift) < buffer:
        shift += 1
    return shift
