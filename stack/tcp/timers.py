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
from stack.tcp.sender import push, reset, retransmit, send_ack, send_new_segment, send_probe, send_syn
from stack.tcp.seq import seq_add, seq_sub
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
            return c.finish(c.soft_error or CloseReason.TIMED_OUT, "SYN retries exhausted", ctx)
        c.retries += 1
        if state is S.SYN_RECEIVED or c.retries > cfg.syn_linear_timeouts:
            c.rtt.on_timeout()  # (the first SYN retransmissions keep the initial RTO: Linux)
        counters.inc("TCPTimeouts")
        send_syn(c, ctx)
        return None
    if c.snd_una == c.snd_max:
        return None  # everything was acknowledged meanwhile
    if c.deadlines[Timer.LOSS_PROBE] <= now and _can_probe(c):
        # Linux has one timer for both: a probe due now goes instead of the RTO (and re-arms it).
        c.clear_timer(Timer.LOSS_PROBE, ctx)
        return _send_loss_probe(c, ctx)
    limit = cfg.retries
    if c.orphan:
        # Linux tcp_write_timeout for an orphan: its own retry limit, and the orphan cap.
        if ctx.orphans > cfg.max_orphans:
            counters.inc("TCPAbortOnMemory")
            return reset(c, CloseReason.ABORTED, "too many orphans", ctx)
        limit = _orphan_retries(c)
    if cfg.user_timeout is not None:
        # TCP_USER_TIMEOUT replaces the retry count (Linux retransmits_timed_out), counted from
        # the first retransmission.
        timed_out = c.retrans_stamp is not None and now - c.retrans_stamp >= cfg.user_timeout
    else:
        timed_out = c.retries >= limit
    if timed_out:
        # Silently, as Linux's tcp_write_err: a peer that answers nothing would not see a RST.
        counters.inc("TCPAbortOnTimeout")
        return c.finish(c.soft_error or CloseReason.TIMED_OUT, "retransmissions exhausted", ctx)
    c.retries += 1
    counters.inc("TCPTimeouts")
    c.cc.on_timeout(now, c.in_flight)
    c.rtt.on_timeout()
    c.recovery.on_timeout()
    c.tlp_high_seq = None
    c.clear_timer(Timer.LOSS_PROBE, ctx)
    c.rtt_seq = None  # Karn: no sample from what is about to be retransmitted
    # Go back N (RFC 9293 §3.8.1, RFC 5681 §3.1): resend from SND.UNA as the loss window allows.
    c.snd_nxt = c.snd_una
    if c.retrans_stamp is None:
        c.retrans_stamp = now
    if c.snd_una == c.iss:
        send_syn(c, ctx)  # closed in SYN-RECEIVED: the SYN-ACK itself is still unacknowledged
    rto = c.rtt.rto
    if cfg.user_timeout is not None:
        # Fire no later than the user timeout (Linux tcp_clamp_rto_to_user_timeout).
        rto = max(min(rto, c.retrans_stamp + cfg.user_timeout - now), 0.001)
    c.set_timer(Timer.RTX, now + rto, ctx)
    push(c, ctx)
    return None


def _orphan_retries(c: Tcb) -> int:
    """Linux tcp_orphan_retries: the configured number, or 8 while the RTO (with backoff) is below
    its maximum, and none once it reached it."""
    alive = c.rtt.rto < c.rtt.rto_max
    retries = c.cfg.orphan_retries
    return 8 if retries == 0 and alive else retries


def _on_persist(c: Tcb, ctx: Context) -> Outcome | None:
    """Zero-window probe: Linux's form, an ACK carrying SEQ = SND.UNA - 1, always answered.

    RFC 9293 §3.8.6.1 lets a sender probe for as long as the receiver answers; the bounds are
    Linux's (tcp_probe_timer): `retries` probes in a row without an answer, `user_timeout` of
    probing whatever the answers, and an orphan gives up once its backoff reached rto_max."""
    if c.state not in SENDING_STATES or c.unsent() <= 0 or c.snd_wnd > 0:
        return None
    cfg = c.cfg
    now = ctx.now
    if c.probes_start is None:
        c.probes_start = now
    elif cfg.user_timeout is not None and now - c.probes_start >= cfg.user_timeout:
        return _probing_failed(c, ctx)
    max_probes = cfg.retries
    if c.orphan:
        if ctx.orphans > cfg.max_orphans:
            ctx.counters.inc("TCPAbortOnMemory")
            return reset(c, CloseReason.ABORTED, "too many orphans", ctx)
        max_probes = _orphan_retries(c)
        if c.rtt.rto >= c.rtt.rto_max and c.rtt.backoff >= max_probes:
            return _probing_failed(c, ctx)
    if c.probes_out >= max_probes:
        return _probing_failed(c, ctx)
    c.probes_out += 1
    ctx.counters.inc("TCPZeroWindowProbes")
    send_probe(c, ctx)
    c.rtt.on_timeout()
    c.set_timer(Timer.PERSIST, now + c.rtt.rto, ctx)
    return None


def _probing_failed(c: Tcb, ctx: Context) -> Outcome:
    ctx.counters.inc("TCPAbortOnTimeout")
    return c.finish(c.soft_error or CloseReason.TIMED_OUT, "zero-window probes exhausted", ctx)


def _on_loss_probe(c: Tcb, ctx: Context) -> Outcome | None:
    """RFC 8985 §7.3, as Linux's tcp_send_loss_probe: send one new segment if the peer's window
    allows it (cwnd does not count), else resend the last segment sent; then the RTO restarts
    from now. One probe at a time: the next waits for an ACK beyond this one."""
    return _send_loss_probe(c, ctx) if _can_probe(c) else None


def _can_probe(c: Tcb) -> bool:
    return (c.snd_una != c.snd_max and c.tlp_high_seq is None and c.state in SENDING_STATES
            and not c.recovery.in_recovery)


def _send_loss_probe(c: Tcb, ctx: Context) -> Outcome | None:
    if not send_new_segment(c, ctx):
        end = c.send_buf.end_seq()
        n = min(c.snd_mss, seq_sub(end, c.snd_una))
        retransmit(c, seq_add(end, -n), n, ctx)  # the last segment, with our FIN if it is there
    c.tlp_high_seq = c.snd_max
    ctx.counters.inc("TCPLossProbes")
    c.set_timer(Timer.RTX, ctx.now + c.rtt.rto, ctx)
    return None


def _on_delack(c: Tcb, ctx: Context) -> Outcome | None:
    # A delayed ACK that had to go out alone: the exchange is not interactive after all (Linux
    # leaves pingpong mode here), so the next segments are acknowledged at once again.
    c.pingpong = False
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
        return reset(c, c.soft_error or CloseReason.TIMED_OUT, "keepalive probes unanswered", ctx)
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
    _on_loss_probe,
)
assert len(TIMER_ACTIONS) == len(Timer)
