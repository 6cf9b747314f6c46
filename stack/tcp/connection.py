"""A connection: the TCB's user calls (RFC 9293 §3.10) and its entry points.

Every call takes the host's `Context` (the time, where output goes) and returns an `Outcome`
when something happened that changes the host's tables (stack.tcp.outcome), else None. The
connection never holds the host: the host calls in, reads the outcome and acts on it.
"""

from __future__ import annotations

from stack.tcp import budget, recovery
from stack.tcp.arrival import segment_arrives
from stack.tcp.config import Config, FourTuple
from stack.tcp.context import Context
from stack.tcp.events import Closed, CloseReason
from stack.tcp.outcome import Outcome
from stack.tcp.receiver import window_update_after_read
from stack.tcp.sender import reset, send_ack, send_syn
from stack.tcp.states import SENDING_STATES, State
from stack.tcp.tcb import Tcb, Timer
from stack.tcp.timers import TIMER_ACTIONS
from stack.tcp.timewait import TimeWait

S = State


class InvalidCall(Exception):
    """A user call the current state does not allow (RFC 9293 §3.10 'error: ...' responses)."""


class Connection(Tcb):
    __slots__ = ()

    def __init__(self, four_tuple: FourTuple, cid: int, config: Config, iss: int, ts_offset: int, now: float,
                 passive: bool, listen_port: int | None = None) -> None:
        super().__init__(four_tuple, cid, config, iss, ts_offset, now, passive, listen_port)
        self.recovery = recovery.for_connection(False, iss)  # SACK's once negotiated (stack.tcp.arrival)

    # ------------------------------------------------------------------ entry points
    # SEGMENT ARRIVES (RFC 9293 §3.10.7) for this connection: process(seg, ctx) -> Outcome | None.
    # The function itself, not a method wrapping it: one call less per segment.
    process = segment_arrives

    def on_timer(self, kind: Timer, ctx: Context) -> Outcome | None:
        """The wheel fired `kind`. A lazily pushed-back deadline re-arms instead of acting."""
        if not self.timer_due(kind, ctx):
            return None
        return TIMER_ACTIONS[kind](self, ctx)

    # ------------------------------------------------------------------ user calls (RFC 9293 §3.10)
    def send(self, data: bytes | bytearray | memoryview, ctx: Context) -> int:
        """SEND: queue data; returns how many bytes fitted in the send buffer (no outcome: SEND
        never changes the host's tables)."""
        if self.fin_queued or self.state in (S.CLOSED, S.CLOSING, S.LAST_ACK, S.TIME_WAIT):
            raise InvalidCall("connection closing")
        if self.state is S.LISTEN:
            # SEND on a fully specified passive OPEN turns it active (RFC 9293 §3.10.2, LISTEN).
            self.passive = False
            self.set_state(S.SYN_SENT, "SEND", ctx)
            ctx.counters.inc("ActiveOpens")
            send_syn(self, ctx)
        n = self.send_buf.append(data, self.send_mss(), self.max_snd_wnd >> 1)
        if n < len(data):
            self.want_writable = True
        if self.state in SENDING_STATES:
            ctx.request_push(self)  # sent by Host.take: with a close after it, one segment
        return n

    def receive(self, ctx: Context, max_bytes: int = -1) -> bytes:
        """RECEIVE: take in-order data (all of it when max_bytes < 0), reopening the window."""
        data = self.recv.take(max_bytes) if self.recv.ready_len else b""
        if data and self.state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            window_update_after_read(self, ctx)
        return data

    def receive_chunks(self, ctx: Context) -> list[bytes]:
        """RECEIVE of everything, in the pieces it arrived in (ReceiveQueue.take_chunks): what a
        driver that hands data on piece by piece takes instead of one joined copy."""
        if not self.recv.ready_len:
            return []
        chunks = self.recv.take_chunks()
        if self.state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            window_update_after_read(self, ctx)
        return chunks

    def shutdown(self, ctx: Context, read: bool = False, write: bool = True) -> Outcome | None:
        """shutdown(2): SHUT_WR sends our FIN after pending data and keeps receiving; SHUT_RD sends nothing."""
        if read:
            self.read_closed = True
        if not write or self.fin_queued:
            return None
        if self.state is S.SYN_SENT:
            return self.finish(CloseReason.ABORTED, "shutdown in SYN-SENT", ctx)
        self._queue_fin("shutdown(SHUT_WR)", ctx)
        return None

    def close(self, ctx: Context) -> Outcome | None:
        """CLOSE (RFC 9293 §3.10.4) with Linux's choices: RST when unread data is discarded (SHLD-3)."""
        if self.orphan or self.state in (S.CLOSED, S.TIME_WAIT):
            return None
        self.orphan = True
        ctx.orphans += 1
        self.read_closed = True
        if self.state in (S.SYN_SENT, S.LISTEN):
            return self.finish(CloseReason.ABORTED, "CLOSE", ctx)
        if self.recv.ready_len and self.state.synchronized:
            ctx.counters.inc("TCPAbortOnClose")
            return reset(self, CloseReason.ABORTED, "close with unread data", ctx)
        if self.linger0:
            return self.abort(ctx)
        if ctx.orphans > self.cfg.max_orphans and self.state.synchronized:
            # Too many orphans (Linux tcp_close -> tcp_check_oom): this one is reset at once.
            ctx.counters.inc("TCPAbortOnMemory")
            return reset(self, CloseReason.ABORTED, "too many orphans", ctx)
        if budget.out_of_memory(self):
            ctx.counters.inc("TCPAbortOnMemory")
            return reset(self, CloseReason.ABORTED, "close while out of memory", ctx)
        if not self.fin_queued:
            self._queue_fin("CLOSE", ctx)
        if self.state is S.FIN_WAIT_2:
            self.set_timer(Timer.FIN_WAIT_2, ctx.now + self.cfg.fin_timeout, ctx)
        return None

    def abort(self, ctx: Context) -> Outcome | None:
        """ABORT (RFC 9293 §3.10.5), also close() under SO_LINGER {1, 0}: RST, no TIME-WAIT."""
        if self.state in (S.CLOSED, S.TIME_WAIT):
            return None
        if not self.orphan:
            self.orphan = True
            ctx.orphans += 1
        if self.state in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            ctx.counters.inc("TCPAbortOnLinger")
            return reset(self, CloseReason.ABORTED, "abort", ctx)
        return self.finish(CloseReason.ABORTED, "abort", ctx)

    def _queue_fin(self, cause: str, ctx: Context) -> None:
        self.fin_queued = True
        state = self.state
        if state in (S.ESTABLISHED, S.SYN_RECEIVED):
            self.set_state(S.FIN_WAIT_1, cause, ctx)
        elif state is S.CLOSE_WAIT:
            self.set_state(S.LAST_ACK, cause, ctx)
        else:
            return
        ctx.request_push(self)  # the FIN rides on data queued in the same batch of calls

    # ------------------------------------------------------------------ what the host asks
    def send_owed_ack(self, ctx: Context) -> None:
        """Send now an ACK this connection was asked for and has not sent (say, for the peer's FIN
        in CLOSING, when the ACK of ours arrives in the same batch), before it leaves the table:
        nothing would send it later."""
        if ctx.ack_pending.pop(self, 0) is None and self.last_ack_sent != self.rcv_nxt:
            send_ack(self, ctx)

    def enter_time_wait(self, cause: str, ctx: Context) -> TimeWait:
        """Hand over to a compact TIME-WAIT record (the host stores it)."""
        self.send_owed_ack(ctx)
        self.set_state(S.TIME_WAIT, cause, ctx)
        self.close_reason = CloseReason.NORMAL
        self.cancel_all_timers(ctx)
        if self.announced and self.handle is not None:
            ctx.events.append(Closed(self.handle, CloseReason.NORMAL))
        now = ctx.now
        return TimeWait(self.four_tuple, self.snd_nxt, self.rcv_nxt, self.last_window(),
                        self.ts_recent if self.ts_ok else None, self.ts_recent_time, self.ts_offset, now,
                        now + self.cfg.time_wait_duration, self.rcv_wscale)

    def time_wait_ended(self, cause: str, now: float) -> None:
        """The host ended the TIME-WAIT record this connection handed over to (2MSL, an RST, a new
        SYN, a reuse): its state and history say so to whoever still holds the handle."""
        if self.state is S.TIME_WAIT:
            self.state = S.CLOSED
            self.history.append((now, S.TIME_WAIT, S.CLOSED, cause))
