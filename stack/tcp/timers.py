"""What each timer of a connection does when it fires (the kinds are `stack.tcp.tcb.Timer`).

The host's timer wheel holds at most one entry per (connection, kind); `Connection.on_timer`
checks the (possibly pushed-back) deadline and then runs the action here. RTX covers SYN, data and
FIN retransmission (RFC 6298, go-back-N after a timeout), PERSIST the zero-window probes, DELACK
the delayed ACK, KEEPALIVE RFC 9293 §3.8.4, FIN_WAIT_2 the reaping of orphans (tcp_fin_timeout).
Each returns the outcome for the host, if any.
"""

from __future__ import annotations

from collections.abc import Callable

from stack.tcp.context import Context
from stack.tcp.events import CloseReason
from stack.tcp.outcome import Outcome
from stack.tcp.sender import push, reset, send_ack, send_probe, send_syn
from stack.tcp.states import SENDING_STATES, State
from stack.tcp.tcb import Tcb, Timer

S = State


def _on_rtx(c: Tcb, ctx: Context) -> Outcome | None:
    counters = ctx.counters
    cfg = c.cfg
    state = c.state
    now = ctx.now
    if state in (S.SYN_SENT, S.SYN_RECEIVED):
        limit = cfg.syn_retries if state is S.SYN_SENT else cfg.synack_retries
        if c.retries >= limit:
            counters.inc("TCPAbortOnTimeout")
            return c.finish(CloseReason.TIMED_OUT, "SYN retries exhausted", ctx)
        c.retries += 1
        c.rtt.on_timeout()
        counters.inc("TCPTimeouts")
        send_syn(c, ctx)
        return None
    if c.snd_una == c.snd_max:
        return None  # everything was acknowledged meanwhile
    timed_out = c.retries >= cfg.retries
    if cfg.user_timeout is not None and c.first_unacked_time is not None:
        timed_out = timed_out or now - c.first_unacked_time >= cfg.user_timeout
    if timed_out:
        counters.inc("TCPAbortOnTimeout")
        return reset(c, CloseReason.TIMED_OUT, "retransmissions exhausted", ctx)
    c.retries += 1
    counters.inc("TCPTimeouts")
    c.cc.on_timeout(now, c.in_flight)
    c.rtt.on_timeout()
    c.recovery.on_timeout()
    c.rtt_seq = None  # Karn: no sample from what is about to be retransmitted
    # Go back N (RFC 9293 §3.8.1, RFC 5681 §3.1): resend from SND.UNA as the loss window allows.
    c.snd_nxt = c.snd_una
    if c.snd_una == c.iss:
        send_syn(c, ctx)  # closed in SYN-RECEIVED: the SYN-ACK itself is still unacknowledged
    c.set_timer(Timer.RTX, now + c.rtt.rto, ctx)
    push(c, ctx)
    return None


def _on_persist(c: Tcb, ctx: Context) -> Outcome | None:
    """Zero-window probe: Linux's form, an ACK carrying SEQ = SND.UNA - 1, always answered."""
    if c.state not in SENDING_STATES or c.unsent() <= 0 or c.snd_wnd > 0:
        return None
    ctx.counters.inc("TCPZeroWindowProbes")
    send_probe(c, ctx)
    c.rtt.on_timeout()
    c.set_timer(Timer.PERSIST, ctx.now + c.rtt.rto, ctx)
    return None


def _on_delack(c: Tcb, ctx: Context) -> Outcome | None:
    if c.last_ack_sent != c.rcv_nxt:
        ctx.counters.inc("DelayedACKs")
        send_ack(c, ctx)
    return None


def _on_keepalive(c: Tcb, ctx: Context) -> Outcome | None:
    cfg = c.cfg
    if not cfg.keepalive or not c.state.synchronized:
        return None
    # Compared as the deadline itself is computed: `now - last < time` can hold at the very
    # deadline by float rounding, which would re-arm the timer at `now` forever.
    due = c.last_recv_time + cfg.keepalive_time
    if ctx.now < due and c.keepalive_sent == 0:
        c.set_timer(Timer.KEEPALIVE, due, ctx)
        return None
    if c.keepalive_sent >= cfg.keepalive_probes:
        ctx.counters.inc("TCPAbortOnTimeout")
        return reset(c, CloseReason.TIMED_OUT, "keepalive probes unanswered", ctx)
    c.keepalive_sent += 1
    ctx.counters.inc("TCPKeepAliveProbes")
    send_probe(c, ctx)  # RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1, no data
    c.set_timer(Timer.KEEPALIVE, ctx.now + cfg.keepalive_interval, ctx)
    return None


def _on_fin_wait_2(c: Tcb, ctx: Context) -> Outcome | None:
    if c.state is S.FIN_WAIT_2 and c.orphan:
        ctx.counters.inc("TCPFinTimeout")
        return c.finish(CloseReason.NORMAL, "orphan FIN-WAIT-2 timeout", ctx)
    return None


# Indexed by Timer.
TIMER_ACTIONS: tuple[Callable[[Tcb, Context], Outcome | None], ...] = (
    _on_rtx,
    _on_persist,
    _on_delack,
    _on_keepalive,
    _on_fin_wait_2,
)
assert len(TIMER_ACTIONS) == len(Timer)
