"""SEGMENT ARRIVES for a connection in LISTEN, SYN-SENT and the synchronized states (RFC 9293 §3.10.7.2-4).

A listener's LISTEN and CLOSED are the host's business (`stack.tcp.host`), TIME-WAIT that of the
compact records in `stack.tcp.timewait`. The steps below are the RFC's, in its order: sequence
number, RST, SYN, ACK, (URG), text, FIN; with RFC 5961's checks and RFC 7323's PAWS where RFC 9293
points to them. The ACK's effect on the sender is `stack.tcp.acks`; text and FIN are
`stack.tcp.receiver`'s. Every function returns the outcome for the host (stack.tcp.outcome), if any.
"""

from __future__ import annotations

from stack.tcp import congestion, recovery
from stack.tcp.acks import on_ack, rtt_sample
from stack.tcp.config import default_peer_mss
from stack.tcp.context import Context
from stack.tcp.events import Accepted, CloseReason, Connected
from stack.tcp.outcome import ESTABLISHED, CookieCheck, Outcome, ToTimeWait
from stack.tcp.receiver import accept_text, fin_received
from stack.tcp.sender import challenge_ack, push, reply_rst, send_ack, send_syn
from stack.tcp.seq import HALF, MASK, MOD, seq_add, seq_ge, seq_gt, seq_le, seq_lt
from stack.tcp.states import State
from stack.tcp.tcb import Tcb, Timer
from stack.wire.segment import ACK, FIN, RST, SYN, Segment

S = State
PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323 §5.5: TS.Recent older than 24 days is stale

_DATA_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


def negotiate(c: Tcb, syn: Segment, now: float) -> None:
    """Take the peer's SYN options: MSS, window scale, SACK-permitted, timestamps (RFC 9293 §3.7.1,
    RFC 7323 §2.2 and §3.2, RFC 2018 §2). An option counts only if both SYNs carried it."""
    cfg = c.cfg
    opts = syn.options
    c.irs = syn.seq
    c.rcv_nxt = seq_add(syn.seq, 1)
    c.rcv_adv = c.rcv_nxt
    if cfg.window_scaling and opts.wscale is not None:
        c.wscale_ok = True
        c.snd_wscale = min(opts.wscale, 14)  # RFC 7323 §2.3: larger shifts are treated as 14
    else:
        c.wscale_ok = False
        c.snd_wscale = 0
        c.rcv_wscale = 0
    c.sack_ok = cfg.sack and opts.sack_permitted
    if c.sack_ok != (c.recovery.name == "sack"):
        c.recovery = recovery.for_connection(c.sack_ok, c.iss)
    if cfg.timestamps and opts.timestamp is not None:
        c.ts_ok = True
        c.ts_recent = opts.timestamp[0]
        c.ts_recent_time = now
    else:
        c.ts_ok = False
    local = c.four_tuple[0]
    peer_mss = opts.mss if opts.mss else default_peer_mss(local)
    # The MSS excludes options; with timestamps every segment carries 12 bytes of them (RFC 7323 §2).
    c.snd_mss = max(64, min(peer_mss, cfg.mss_for(local)) - (12 if c.ts_ok else 0))


def become_established(c: Tcb, seg: Segment, ctx: Context, cause: str) -> Outcome | None:
    """The handshake completed. A listener's embryo tells the host it leaves the SYN backlog."""
    c.set_state(S.ESTABLISHED, cause, ctx)
    c.snd_wnd = seg.window << c.snd_wscale if not seg.flags & SYN else seg.window
    c.max_snd_wnd = max(c.max_snd_wnd, c.snd_wnd)
    c.snd_wl1 = seg.seq
    c.snd_wl2 = seg.ack
    c.retries = 0
    c.cc = congestion.create(c.cfg.congestion_control, c.snd_mss, c.cfg.initial_cwnd_segments)
    if c.cfg.keepalive:
        c.set_timer(Timer.KEEPALIVE, ctx.now + c.cfg.keepalive_time, ctx)
    handle = c.handle
    assert handle is not None
    if c.announced:
        ctx.events.append(Connected(handle))
    else:
        c.announced = True
        assert c.listen_port is not None
        ctx.events.append(Accepted(handle, c.listen_port))
    return ESTABLISHED if c.listen_port is not None else None


def return_to_listen(c: Tcb, cause: str, ctx: Context) -> Outcome | None:
    """A passive connection's handshake failed: back to LISTEN (RFC 9293 §3.10.7.4). An embryo
    of a listener simply goes away; a fully specified passive OPEN keeps listening."""
    if c.listen_port is not None:
        return c.finish(CloseReason.RESET, cause, ctx, S.LISTEN)
    c.set_state(S.LISTEN, cause, ctx)
    c.cancel_all_timers(ctx)
    c.snd_una = c.snd_nxt = c.snd_max = c.iss
    c.rcv_nxt = c.rcv_adv = c.irs = 0
    c.ts_ok = c.sack_ok = c.wscale_ok = False
    c.retries = 0
    return None


def segment_arrives(c: Tcb, seg: Segment, ctx: Context) -> Outcome | None:
    state = c.state
    if state is S.SYN_SENT:
        return _syn_sent(c, seg, ctx)
    if state is S.LISTEN:
        listen_arrives(c, seg, ctx)
        return None
    now = ctx.now
    counters = ctx.counters
    flags = seg.flags
    c.last_recv_time = now
    c.keepalive_sent = 0
    ts = seg.options.timestamp if c.ts_ok else None

    # A retransmitted SYN in SYN-RECEIVED means our SYN-ACK was lost: send it again (as Linux does).
    if flags & SYN and state is S.SYN_RECEIVED and flags & (SYN | ACK | RST) == SYN and seg.seq == c.irs:
        if ts is not None and seq_ge(ts[0], c.ts_recent):
            # Echo this SYN's TSval, as Linux's tcp_check_req does: the peer then measures the
            # RTT of the SYN that was answered, not of one that was lost.
            c.ts_recent, c.ts_recent_time = ts[0], now
        send_syn(c, ctx)
        return None

    seq = seg.seq
    if (
        flags & SYN
        and state is S.SYN_RECEIVED
        and not c.passive
        and flags & (SYN | ACK | RST) == SYN | ACK
        and seq_add(seq, 1) == c.rcv_nxt
        and seg.ack == c.snd_nxt
    ):
        # Simultaneous open (RFC 9293 Figure 8): the peer's SYN,ACK repeats its SYN, already taken,
        # and acknowledges ours. Take it as that ACK (Linux does the same in tcp_validate_incoming).
        flags &= ~SYN
        seq = c.rcv_nxt

    # PAWS (RFC 7323 §5.3 R1): an older TSval is an old duplicate; ACK it and drop. RST is exempt.
    if ts is not None and not flags & RST and seq_lt(ts[0], c.ts_recent) and now - c.ts_recent_time < PAWS_IDLE:
        counters.inc("PAWSEstab")
        send_ack(c, ctx)
        return None

    # First: the acceptability test (Table 6). The window [RCV.NXT, RCV.NXT + RCV.WND) is tested
    # as an offset from RCV.NXT (stack.tcp.seq's seq_in, written out: once per segment).
    payload = seg.payload
    seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    rcv_nxt = c.rcv_nxt
    wnd = (c.rcv_adv - rcv_nxt) & MASK  # RCV.WND (Tcb.rcv_wnd)
    if wnd > HALF:
        wnd = 0
    right = (rcv_nxt + wnd) & MASK
    offset = (seq - rcv_nxt) & MASK
    if seg_len == 0:
        acceptable = offset == 0 if wnd == 0 else offset < wnd
    elif wnd == 0:
        # Nothing fits a zero window -- but a bare FIN at RCV.NXT takes no buffer, and Linux takes it
        # (tcp_data_queue), so a peer does not loop FIN, ACK, FIN until the application reads.
        acceptable = seq == rcv_nxt and not payload and bool(flags & FIN)
    else:
        acceptable = offset < wnd or ((offset + seg_len - 1) & MASK) < wnd
    if not acceptable:
        if flags & RST:
            return None
        if flags & SYN and state is not S.SYN_RECEIVED:
            # RFC 5961 §4.2: a SYN in a synchronized state gets a challenge ACK "irrespective of the
            # sequence number" (rate-limited, §7), in or out of the window (Linux: syn_challenge).
            counters.inc("TCPSYNChallenge")
            challenge_ack(c, ctx)
            return None
        if wnd == 0 and seq == rcv_nxt and flags & ACK:
            # "Special allowance" for a closed window: take the ACK, not the text (§3.10.7.4).
            payload = b""
            flags &= ~(FIN | SYN)
            ctx.request_ack(c)
        else:
            send_ack(c, ctx)
            return None

    # Second: RST (RFC 5961 §3): exact match resets, anything else in the window is challenged.
    if flags & RST:
        if seq != rcv_nxt:
            challenge_ack(c, ctx)
            return None
        return _reset_received(c, ctx)

    # Fourth: SYN (RFC 5961 §4): a passive embryo returns to LISTEN; synchronized states challenge.
    if flags & SYN:
        if state is S.SYN_RECEIVED and c.passive:
            counters.inc("AttemptFails")
            return return_to_listen(c, "rcv SYN", ctx)
        counters.inc("TCPSYNChallenge")
        challenge_ack(c, ctx)
        return None

    # Fifth: ACK.
    if not flags & ACK:
        return None
    ack = seg.ack
    # The comparisons of stack.tcp.seq written out from here on: every segment passes them.
    if 0 < ((ack - c.snd_max) & MASK) < HALF:  # SEG.ACK > SND.MAX
        # Acknowledges something never sent (§3.10.7.4): ACK and drop. A SYN-RECEIVED embryo resets.
        if state is S.SYN_RECEIVED:
            return _bad_ack_in_syn_received(c, seg, ctx)
        challenge_ack(c, ctx)
        return None
    max_snd_wnd = c.max_snd_wnd
    if max_snd_wnd and 0 < ((c.snd_una - max_snd_wnd - ack) & MASK) < HALF:  # SEG.ACK < SND.UNA - MAX.SND.WND
        challenge_ack(c, ctx)  # RFC 5961 §5: too old to be from the real peer
        return None
    outcome: Outcome | None = None
    if state is S.SYN_RECEIVED:
        if not seq_gt(ack, c.snd_una):
            return _bad_ack_in_syn_received(c, seg, ctx)
        rtt_sample(c, seg, ack, ctx)
        c.snd_una = ack
        c.send_buf.ack_to(ack)
        c.clear_timer(Timer.RTX, ctx)
        outcome = become_established(c, seg, ctx, "rcv ACK of SYN")
        state = S.ESTABLISHED

    # RFC 7323 §4.3: TS.Recent follows the segment that covers the last ACK we sent.
    if ts is not None and ((c.last_ack_sent - seq) & MASK) < HALF and ((ts[0] - c.ts_recent) & MASK) < HALF:
        c.ts_recent = ts[0]
        c.ts_recent_time = now

    on_ack(c, seg, ack, ctx)
    state = c.state
    fin_seq = c.fin_seq
    if fin_seq is not None and 0 < ((ack - fin_seq) & MASK) < HALF:
        # Our FIN is acknowledged.
        if state is S.FIN_WAIT_1:
            c.set_state(S.FIN_WAIT_2, "rcv ACK of FIN", ctx)
            state = S.FIN_WAIT_2
            if c.orphan:
                c.set_timer(Timer.FIN_WAIT_2, now + c.cfg.fin_timeout, ctx)
        elif state is S.CLOSING:
            return ToTimeWait("rcv ACK of FIN")
        elif state is S.LAST_ACK:
            return c.finish(CloseReason.NORMAL, "rcv ACK of FIN", ctx)

    # Trim to the window: what precedes RCV.NXT was seen already, what passes the right edge is
    # dropped with any FIN behind it (§3.10.7.4, "the idealized segment").
    if payload:
        seen = (rcv_nxt - seq) & MASK
        if 0 < seen < HALF:  # SEG.SEQ < RCV.NXT: that much is a duplicate
            payload = payload[seen:]
            seq = rcv_nxt
        room = (right - seq) & MASK
        if room > HALF:
            room -= MOD
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            flags &= ~FIN

    # Seventh: segment text.
    if payload and state in _DATA_STATES:
        if state is not S.ESTABLISHED and c.read_closed:
            # Data for an application that is gone: RST, as RFC 1122 §4.2.2.13 and Linux do.
            counters.inc("TCPAbortOnData")
            reply_rst(seg, ctx)
            return c.finish(CloseReason.ABORTED, "data after close", ctx)
        accept_text(c, seq, payload, ctx)

    # Eighth: FIN. Acted on only once every byte before it has arrived.
    if flags & FIN and not c.peer_fin and state is not S.SYN_RECEIVED:
        fin_at = seq_add(seq, len(payload))
        if c.recv.fin_seq is None:
            c.recv.fin_seq = fin_at
        if fin_at != c.rcv_nxt:
            ctx.request_ack(c)  # out of order: a duplicate ACK tells the peer where the gap is
    if c.recv.fin_seq is not None and not c.peer_fin and c.recv.fin_seq == c.rcv_nxt:
        fin_outcome = fin_received(c, ctx)
        if fin_outcome is not None:
            return fin_outcome
    # Our own data (and FIN) may move now: the ACK may have opened the window, and after the
    # peer's FIN we may still have data queued behind ours (FIN-WAIT-1 -> CLOSING, CLOSE-WAIT).
    push(c, ctx)
    return outcome


def _bad_ack_in_syn_received(c: Tcb, seg: Segment, ctx: Context) -> Outcome | None:
    """SYN-RECEIVED, an unacceptable ACK: <SEQ=SEG.ACK><CTL=RST> (§3.10.7.4, fifth step) - unless
    it returns a SYN cookie: a duplicated SYN can get a cookie SYN,ACK (backlog full) and a normal
    one (room again a moment later); the peer may complete either, and the cookie's connection
    then replaces this embryo, as Linux lets the listener check a cookie here. The host knows
    the cookies: it decides."""
    if c.passive and c.listen_port is not None:
        return CookieCheck(seg)
    reply_rst(seg, ctx)
    return None


def _reset_received(c: Tcb, ctx: Context) -> Outcome | None:
    state = c.state
    counters = ctx.counters
    if state is S.SYN_RECEIVED:
        counters.inc("AttemptFails")
        if c.passive:
            return return_to_listen(c, "rcv RST", ctx)
        return c.finish(CloseReason.REFUSED, "rcv RST", ctx)
    if state in (S.ESTABLISHED, S.CLOSE_WAIT):
        counters.inc("EstabResets")
    return c.finish(CloseReason.RESET, "rcv RST", ctx)


def listen_arrives(c: Tcb, seg: Segment, ctx: Context) -> bool:
    """LISTEN (RFC 9293 §3.10.7.2) for a connection that is listening: RST is ignored, an ACK is
    answered with <SEQ=SEG.ACK><CTL=RST>, a SYN moves it to SYN-RECEIVED with a SYN,ACK.
    Returns whether a handshake started. SYN+FIN is dropped, as Linux does."""
    flags = seg.flags
    if flags & RST:
        return False
    if flags & ACK:
        reply_rst(seg, ctx)
        return False
    if not flags & SYN or flags & FIN:
        return False
    negotiate(c, seg, ctx.now)
    c.last_recv_time = ctx.now
    c.set_state(S.SYN_RECEIVED, "rcv SYN", ctx)
    ctx.counters.inc("PassiveOpens")
    send_syn(c, ctx)
    return True


def _syn_sent(c: Tcb, seg: Segment, ctx: Context) -> Outcome | None:
    """RFC 9293 §3.10.7.3."""
    flags = seg.flags
    ack_ok = False
    if flags & ACK:
        if seq_le(seg.ack, c.iss) or seq_gt(seg.ack, c.snd_max):
            if not flags & RST:
                reply_rst(seg, ctx)  # <SEQ=SEG.ACK><CTL=RST>
            return None
        ack_ok = True
    if flags & RST:
        if ack_ok:
            ctx.counters.inc("AttemptFails")
            return c.finish(CloseReason.REFUSED, "rcv RST", ctx)
        return None
    if not flags & SYN:
        return None
    negotiate(c, seg, ctx.now)
    c.last_recv_time = ctx.now
    if ack_ok:
        rtt_sample(c, seg, seg.ack, ctx)
        c.snd_una = seg.ack
        c.send_buf.ack_to(seg.ack)
        c.clear_timer(Timer.RTX, ctx)
        outcome = become_established(c, seg, ctx, "rcv SYN,ACK")
        if seg.payload:
            accept_text(c, c.rcv_nxt, seg.payload, ctx)
        ctx.request_ack(c)  # carried by queued data if push() sends any
        push(c, ctx)
        return outcome
    # Simultaneous open: answer with SYN,ACK from our ISS (§3.10.7.3, fourth step).
    c.set_state(S.SYN_RECEIVED, "rcv SYN", ctx)
    send_syn(c, ctx)
    return None
