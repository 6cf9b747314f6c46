"""The timers of a connection and what each does when it fires.

The host's timer wheel holds at most one entry per (connection, kind); `Connection.on_timer`
checks the (possibly pushed-back) deadline and then runs the action here. RTX covers SYN, data and
FIN retransmission (RFC 6298, go-back-N after a timeout), PERSIST the zero-window probes, DELACK
the delayed ACK, KEEPALIVE RFC 9293 §3.8.4, FIN_WAIT_2 the reaping of orphans (tcp_fin_timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

from stack.tcp.events import CloseReason
from stack.tcp.seq import seq_add
from stack.tcp.states import SENDING_STATES, State
from stack.wire.segment import ACK

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = State


class Timer(IntEnum):
    RTX = 0  # retransmission of SYN, data or FIN (RFC 6298)
    PERSIST = 1  # zero-window probe (RFC 9293 §3.8.6.1)
    DELACK = 2  # delayed ACK (RFC 9293 §3.8.6.3)
    KEEPALIVE = 3  # RFC 9293 §3.8.4
    FIN_WAIT_2 = 4  # orphan FIN-WAIT-2 reaping (Linux tcp_fin_timeout)


N_TIMERS = len(Timer)


def _on_rtx(c: Connection, now: float) -> None:
    counters = c.host.counters
    cfg = c.cfg
    state = c.state
    if state in (S.SYN_SENT, S.SYN_RECEIVED):
        limit = cfg.syn_retries if state is S.SYN_SENT else cfg.synack_retries
        if c.retries >= limit:
            counters.inc("TCPAbortOnTimeout")
            c.finish(CloseReason.TIMED_OUT, "SYN retries exhausted", now)
            return
        c.retries += 1
        c.rtt.on_timeout()
        counters.inc("TCPTimeouts")
        c.send_syn(now)
        return
    if c.snd_una == c.snd_max:
        return  # everything was acknowledged meanwhile
    timed_out = c.retries >= cfg.retries
    if cfg.user_timeout is not None and c.first_unacked_time is not None:
        timed_out = timed_out or now - c.first_unacked_time >= cfg.user_timeout
    if timed_out:
        counters.inc("TCPAbortOnTimeout")
        c._reset(now, CloseReason.TIMED_OUT, "retransmissions exhausted")
        return
    c.retries += 1
    counters.inc("TCPTimeouts")
    c.cc.on_timeout(now, c.in_flight)
    c.rtt.on_timeout()
    c.in_recovery = False
    c.dupacks = 0
    c.sacked = []  # RFC 2018 §8: after a timeout the SACKed bits are not relied on
    c._rtt_seq = None  # Karn: no sample from what is about to be retransmitted
    # Go back N (RFC 9293 §3.8.1, RFC 5681 §3.1): resend from SND.UNA as the loss window allows.
    c.snd_nxt = c.snd_una
    if c.snd_una == c.iss:
        c.send_syn(now)  # closed in SYN-RECEIVED: the SYN-ACK itself is still unacknowledged
    c.set_timer(Timer.RTX, now + c.rtt.rto)
    c.push(now)


def _on_persist(c: Connection, now: float) -> None:
    """Zero-window probe: Linux's form, an ACK carrying SEQ = SND.UNA - 1, always answered."""
    if c.state not in SENDING_STATES or c.unsent() <= 0 or c.snd_wnd > 0:
        return
    c.host.counters.inc("TCPZeroWindowProbes")
    c.emit(ACK, seq_add(c.snd_una, -1), b"", now)
    c.rtt.on_timeout()
    c.set_timer(Timer.PERSIST, now + c.rtt.rto)


def _on_delack(c: Connection, now: float) -> None:
    if c.last_ack_sent != c.rcv_nxt:
        c.host.counters.inc("DelayedACKs")
        c.send_ack(now)


def _on_keepalive(c: Connection, now: float) -> None:
    cfg = c.cfg
    if not cfg.keepalive or not c.state.synchronized:
        return
    idle = now - c.last_recv_time
    if idle < cfg.keepalive_time and c.keepalive_sent == 0:
        c.set_timer(Timer.KEEPALIVE, c.last_recv_time + cfg.keepalive_time)
        return
    if c.keepalive_sent >= cfg.keepalive_probes:
        c.host.counters.inc("TCPAbortOnTimeout")
        c._reset(now, CloseReason.TIMED_OUT, "keepalive probes unanswered")
        return
    c.keepalive_sent += 1
    c.host.counters.inc("TCPKeepAliveProbes")
    c.emit(ACK, seq_add(c.snd_una, -1), b"", now)  # RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1, no data
    c.set_timer(Timer.KEEPALIVE, now + cfg.keepalive_interval)


def _on_fin_wait_2(c: Connection, now: float) -> None:
    if c.state is S.FIN_WAIT_2 and c.orphan:
        c.host.counters.inc("TCPFinTimeout")
        c.finish(CloseReason.NORMAL, "orphan FIN-WAIT-2 timeout", now)


# Indexed by Timer.
TIMER_ACTIONS: tuple[Callable[[Connection, float], None], ...] = (
    _on_rtx,
    _on_persist,
    _on_delack,
    _on_keepalive,
    _on_fin_wait_2,
)
