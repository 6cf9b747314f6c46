"""The receiver: segment text, the peer's FIN, and when to acknowledge (gVisor's rcv.go).

Text in order goes to the receive queue and is acknowledged at least every second full-sized
segment or within the delayed-ACK time (RFC 9293 §3.8.6.3); text out of order is kept for later
and answered at once with a duplicate ACK (RFC 5681 §4.2); the FIN is acted on once every byte
before it has arrived (eighth step of §3.10.7.4).
"""

from __future__ import annotations

from stack.tcp import budget
from stack.tcp.context import Context
from stack.tcp.events import EndOfStream, Readable
from stack.tcp.outcome import Outcome, ToTimeWait
from stack.tcp.sender import send_ack
from stack.tcp.seq import seq_add, seq_sub
from stack.tcp.states import State
from stack.tcp.tcb import INF, Tcb, Timer

S = State


def accept_text(c: Tcb, seq: int, payload: bytes, ctx: Context) -> None:
    recv = c.recv
    if seq == c.rcv_nxt:
        if not budget.in_order_fits(c, len(payload), ctx):
            return  # no memory for it (stack.tcp.budget): dropped, the peer sends it again
        had_gap = bool(recv.ooo)
        recv.add(payload)
        c.rcv_nxt = seq_add(seq, len(payload))
        if had_gap:
            c.rcv_nxt = recv.pull_contiguous(c.rcv_nxt)
            ctx.request_ack(c)  # a gap filled: ACK at once (RFC 5681 §4.2)
        else:
            _delayed_ack(c, ctx)
        c.bytes_received += seq_sub(c.rcv_nxt, seq)  # this text and what it joined to
        if c.handle is not None:
            ctx.events.append(Readable(c.handle))
    elif budget.queue_out_of_order(c, seq, payload, ctx):
        ctx.request_ack(c)  # out of order: immediate duplicate ACK with SACK blocks (RFC 5681 §4.2)


MAX_QUICK_ACKS = 16  # Linux TCP_MAX_QUICKACKS


def _delayed_ack(c: Tcb, ctx: Context) -> None:
    """ACK at least every second full-sized segment, else within the delayed-ACK timeout (§3.8.6.3).
    Counted in bytes, as Linux does, so that one 64 KB GSO segment counts as the many it stands for.
    In quick-ACK mode every segment is acknowledged at once (Linux tcp_event_data_recv: at the
    first data and after an idle period longer than the RTO, the sender may be in slow start and
    waiting for every ACK)."""
    now = ctx.now
    last = c.last_data_time
    if last is None or now - last > c.rtt.rto:
        quick = min(max(c.rcv_wnd // (2 * c.snd_mss), 2), MAX_QUICK_ACKS)
        if quick > c.quick_acks:
            c.quick_acks = quick
    c.last_data_time = now
    if (not c.cfg.delayed_ack or seq_sub(c.rcv_nxt, c.last_ack_sent) >= 2 * c.snd_mss
            or (c.quick_acks and not c.pingpong)):
        ctx.request_ack(c)
    elif c.deadlines[Timer.DELACK] == INF:
        c.set_timer(Timer.DELACK, now + c.cfg.delayed_ack_timeout, ctx)


def fin_received(c: Tcb, ctx: Context) -> Outcome | None:
    """Eighth step: the peer's FIN, in order. ACK it at once and move on per state."""
    c.rcv_nxt = seq_add(c.rcv_nxt, 1)
    c.peer_fin = True
    if c.handle is not None:
        ctx.events.append(EndOfStream(c.handle))
    state = c.state
    if state is S.FIN_WAIT_2:
        send_ack(c, ctx)  # now: the connection hands its 4-tuple to a TIME-WAIT record next
        return ToTimeWait("rcv FIN")
    # The ACK goes out with whatever the caller's push() sends, or alone from Host.take().
    ctx.request_ack(c)
    if state is S.ESTABLISHED:
        c.set_state(S.CLOSE_WAIT, "rcv FIN", ctx)
    elif state is S.FIN_WAIT_1:
        # Our FIN is not yet acknowledged (else the ACK step moved us to FIN-WAIT-2): CLOSING.
        c.set_state(S.CLOSING, "rcv FIN", ctx)
    return None


def window_update_after_read(c: Tcb, ctx: Context) -> None:
    """After a read, tell the peer when the window opened by a useful amount (SHLD-13), but only
    if the window it knows is getting small: with room left, the next ACK carries the news
    (Linux's tcp_cleanup_rbuf does likewise). Requested, so a reply can carry it."""
    cfg = c.cfg
    if c.rcv_wnd >= min(cfg.recv_buffer // 2, 16 * cfg.mss):
        return
    right = seq_add(c.rcv_nxt, c.window_free())
    if seq_sub(right, c.rcv_adv) >= min(cfg.recv_buffer // 2, 2 * cfg.mss):
        ctx.request_ack(c)
