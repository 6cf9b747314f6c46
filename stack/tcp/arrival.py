"""SEGMENT ARRIVES for a connection in SYN-SENT and the synchronized states (RFC 9293 §3.10.7.3-4).

LISTEN and CLOSED are the host's business (`stack.tcp.host`), TIME-WAIT that of the compact records
in `stack.tcp.timewait`. The steps below are the RFC's, in its order: sequence number, RST, SYN,
ACK, (URG), text, FIN; with RFC 5961's checks and RFC 7323's PAWS where RFC 9293 points to them.
"""

from __future__ import annotations

from stack.tcp import congestion, sack
from stack.tcp.connection import INF, Connection
from stack.tcp.events import Accepted, CloseReason, Connected, EndOfStream, Readable
from stack.tcp.seq import MASK, seq_add, seq_ge, seq_gt, seq_in, seq_le, seq_lt, seq_sub
from stack.tcp.states import State
from stack.tcp.timers import Timer
from stack.wire.segment import ACK, FIN, RST, SYN, Segment

S = State
PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323 §5.5: TS.Recent older than 24 days is stale

_DATA_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


def negotiate(c: Connection, syn: Segment, now: float) -> None:
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
    if cfg.timestamps and opts.timestamp is not None:
        c.ts_ok = True
        c.ts_recent = opts.timestamp[0]
        c.ts_recent_time = now
    else:
        c.ts_ok = False
    peer_mss = opts.mss if opts.mss else 536
    # The MSS excludes options; with timestamps every segment carries 12 bytes of them (RFC 7323 §2).
    c.snd_mss = max(64, min(peer_mss, cfg.mss) - (12 if c.ts_ok else 0))


def become_established(c: Connection, seg: Segment, now: float, cause: str) -> None:
    c.set_state(S.ESTABLISHED, cause, now)
    c.snd_wnd = seg.window << c.snd_wscale if not seg.flags & SYN else seg.window
    c.max_snd_wnd = max(c.max_snd_wnd, c.snd_wnd)
    c.snd_wl1 = seg.seq
    c.snd_wl2 = seg.ack
    c.retries = 0
    c.cc = congestion.create(c.cfg.congestion_control, c.snd_mss, c.cfg.initial_cwnd_segments)
    if c.cfg.keepalive:
        c.set_timer(Timer.KEEPALIVE, now + c.cfg.keepalive_time)
    c.host.embryo_done(c)  # no longer half-open: it leaves the listener's SYN backlog
    if c.announced:
        c.host.emit_event(Connected(c))
    else:
        c.announced = True
        assert c.listen_port is not None
        c.host.emit_event(Accepted(c, c.listen_port))


def segment_arrives(c: Connection, seg: Segment, now: float) -> None:
    state = c.state
    if state is S.SYN_SENT:
        _syn_sent(c, seg, now)
        return
    if state is S.LISTEN:
        listen_arrives(c, seg, now)
        return
    flags = seg.flags
    c.last_recv_time = now
    c.keepalive_sent = 0
    ts = seg.options.timestamp if c.ts_ok else None

    # A retransmitted SYN in SYN-RECEIVED means our SYN-ACK was lost: send it again (as Linux does).
    if state is S.SYN_RECEIVED and flags & (SYN | ACK | RST) == SYN and seg.seq == c.irs:
        c.send_syn(now)
        return

    seq = seg.seq
    if (
        state is S.SYN_RECEIVED
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
        c.host.counters.inc("PAWSEstab")
        c.send_ack(now)
        return

    # First: the acceptability test (Table 6).
    payload = seg.payload
    seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    rcv_nxt = c.rcv_nxt
    wnd = c.rcv_wnd
    right = seq_add(rcv_nxt, wnd)
    if seg_len == 0:
        acceptable = seq == rcv_nxt if wnd == 0 else seq_in(seq, rcv_nxt, right)
    elif wnd == 0:
        acceptable = False
    else:
        acceptable = seq_in(seq, rcv_nxt, right) or seq_in(seq_add(seq, seg_len - 1), rcv_nxt, right)
    if not acceptable:
        if flags & RST:
            return
        if flags & SYN and state is not S.SYN_RECEIVED:
            # RFC 5961 §4.2: a SYN in a synchronized state gets a challenge ACK "irrespective of the
            # sequence number" (rate-limited, §7), in or out of the window (Linux: syn_challenge).
            c.host.counters.inc("TCPSYNChallenge")
            c.challenge_ack(now)
            return
        if wnd == 0 and seq == rcv_nxt and flags & ACK:
            # "Special allowance" for a closed window: take the ACK, not the text (§3.10.7.4).
            payload = b""
            flags &= ~(FIN | SYN)
            c.host.request_ack(c)
        else:
            c.send_ack(now)
            return

    # Second: RST (RFC 5961 §3): exact match resets, anything else in the window is challenged.
    if flags & RST:
        if seq != rcv_nxt:
            c.challenge_ack(now)
            return
        _reset_received(c, now)
        return

    # Fourth: SYN (RFC 5961 §4): a passive embryo returns to LISTEN; synchronized states challenge.
    if flags & SYN:
        if state is S.SYN_RECEIVED and c.passive:
            c.host.counters.inc("AttemptFails")
            c.return_to_listen(now, "rcv SYN")
            return
        c.host.counters.inc("TCPSYNChallenge")
        c.challenge_ack(now)
        return

    # Fifth: ACK.
    if not flags & ACK:
        return
    ack = seg.ack
    if seq_gt(ack, c.snd_max):
        # Acknowledges something never sent (§3.10.7.4): ACK and drop. A SYN-RECEIVED embryo resets.
        if state is S.SYN_RECEIVED:
            _bad_ack_in_syn_received(c, seg, now)
        else:
            c.challenge_ack(now)
        return
    if c.max_snd_wnd and seq_lt(ack, seq_sub(c.snd_una, c.max_snd_wnd) & MASK):
        c.challenge_ack(now)  # RFC 5961 §5: too old to be from the real peer
        return
    if state is S.SYN_RECEIVED:
        if not seq_gt(ack, c.snd_una):
            _bad_ack_in_syn_received(c, seg, now)
            return
        _rtt_sample(c, seg, ack, now)
        c.snd_una = ack
        c.send_buf.ack_to(ack)
        c.clear_timer(Timer.RTX)
        become_established(c, seg, now, "rcv ACK of SYN")
        state = S.ESTABLISHED

    # RFC 7323 §4.3: TS.Recent follows the segment that covers the last ACK we sent.
    if ts is not None and seq_le(seq, c.last_ack_sent) and seq_ge(ts[0], c.ts_recent):
        c.ts_recent = ts[0]
        c.ts_recent_time = now

    if not _process_ack(c, seg, ack, now):
        return  # the connection reached TIME-WAIT or CLOSED
    state = c.state

    # Trim to the window: what precedes RCV.NXT was seen already, what passes the right edge is
    # dropped with any FIN behind it (§3.10.7.4, "the idealized segment").
    if payload:
        if seq_lt(seq, rcv_nxt):
            payload = payload[seq_sub(rcv_nxt, seq) :]
            seq = rcv_nxt
        room = seq_sub(right, seq)
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            flags &= ~FIN

    # Seventh: segment text.
    if payload and state in _DATA_STATES:
        if state is not S.ESTABLISHED and c.read_closed:
            # Data for an application that is gone: RST, as RFC 1122 §4.2.2.13 and Linux do.
            counters = c.host.counters
            counters.inc("TCPAbortOnData")
            c.host.reply_rst(seg)
            c.finish(CloseReason.ABORTED, "data after close", now)
            return
        _accept_text(c, seq, payload, now)

    # Eighth: FIN. Acted on only once every byte before it has arrived.
    if flags & FIN and not c.peer_fin and state is not S.SYN_RECEIVED:
        fin_at = seq_add(seq, len(payload))
        if c.recv.fin_seq is None:
            c.recv.fin_seq = fin_at
        if fin_at != c.rcv_nxt:
            c.host.request_ack(c)  # out of order: a duplicate ACK tells the peer where the gap is
    if c.recv.fin_seq is not None and not c.peer_fin and c.recv.fin_seq == c.rcv_nxt:
        _fin_received(c, now)
    # Our own data (and FIN) may move now: the ACK may have opened the window, and after the
    # peer's FIN we may still have data queued behind ours (FIN-WAIT-1 -> CLOSING, CLOSE-WAIT).
    c.push(now)


def _accept_text(c: Connection, seq: int, payload: bytes, now: float) -> None:
    recv = c.recv
    host = c.host
    if seq == c.rcv_nxt:
        had_gap = bool(recv.ooo)
        recv.add(payload)
        c.rcv_nxt = seq_add(seq, len(payload))
        if had_gap:
            c.rcv_nxt = recv.pull_contiguous(c.rcv_nxt)
            host.request_ack(c)  # a gap filled: ACK at once (RFC 5681 §4.2)
        else:
            _delayed_ack(c, now)
        host.emit_event(Readable(c))
    else:
        recv.insert_ooo(c.rcv_nxt, seq, payload)
        host.counters.inc("TCPOFOQueue")
        host.request_ack(c)  # out of order: immediate duplicate ACK with SACK blocks (RFC 5681 §4.2)


def _delayed_ack(c: Connection, now: float) -> None:
    """ACK at least every second full-sized segment, else within the delayed-ACK timeout (§3.8.6.3).
    Counted in bytes, as Linux does, so that one 64 KB GSO segment counts as the many it stands for."""
    if not c.cfg.delayed_ack or seq_sub(c.rcv_nxt, c.last_ack_sent) >= 2 * c.snd_mss:
        c.host.request_ack(c)
    elif c._deadline[Timer.DELACK] == INF:
        c.set_timer(Timer.DELACK, now + c.cfg.delayed_ack_timeout)


def _fin_received(c: Connection, now: float) -> None:
    """Eighth step: the peer's FIN, in order. ACK it at once and move on per state."""
    c.rcv_nxt = seq_add(c.rcv_nxt, 1)
    c.peer_fin = True
    c.host.emit_event(EndOfStream(c))
    state = c.state
    if state is S.FIN_WAIT_2:
        c.send_ack(now)  # now: the connection hands its 4-tuple to a TIME-WAIT record next
        c.host.enter_time_wait(c, now, "rcv FIN")
        return
    # The ACK goes out with whatever the caller's push() sends, or alone from Host.take().
    c.host.request_ack(c)
    if state is S.ESTABLISHED:
        c.set_state(S.CLOSE_WAIT, "rcv FIN", now)
    elif state is S.FIN_WAIT_1:
        # Our FIN is not yet acknowledged (else the ACK step moved us to FIN-WAIT-2): CLOSING.
        c.set_state(S.CLOSING, "rcv FIN", now)


def _bad_ack_in_syn_received(c: Connection, seg: Segment, now: float) -> None:
    """SYN-RECEIVED, an unacceptable ACK: <SEQ=SEG.ACK><CTL=RST> (§3.10.7.4, fifth step) - unless
    it returns a SYN cookie: a duplicated SYN can get a cookie SYN,ACK (backlog full) and a normal
    one (room again a moment later); the peer may complete either, and the cookie's connection
    then replaces this embryo, as Linux lets the listener check a cookie here."""
    if c.passive and c.host.cookie_instead(c, seg, now):
        return
    c.host.reply_rst(seg)


def _reset_received(c: Connection, now: float) -> None:
    state = c.state
    counters = c.host.counters
    if state is S.SYN_RECEIVED:
        counters.inc("AttemptFails")
        if c.passive:
            c.return_to_listen(now, "rcv RST")
        else:
            c.finish(CloseReason.REFUSED, "rcv RST", now)
        return
    if state in (S.ESTABLISHED, S.CLOSE_WAIT):
        counters.inc("EstabResets")
    c.finish(CloseReason.RESET, "rcv RST", now)


def _rtt_sample(c: Connection, seg: Segment, ack: int, now: float) -> None:
    """One RTT measurement per RFC 6298 §3 (Karn) or RFC 7323 §4 (timestamps)."""
    ts = seg.options.timestamp
    if c.ts_ok and ts is not None and ts[1]:
        elapsed = (c.tsval(now) - ts[1]) & MASK
        if elapsed < 1 << 30:
            c.rtt.sample(elapsed / 1000.0)
            c.cc.on_rtt_sample(elapsed / 1000.0, now)
            return
    rtt_seq = c._rtt_seq
    if rtt_seq is not None and seq_ge(ack, rtt_seq):
        c.rtt.sample(now - c._rtt_time)
        c.cc.on_rtt_sample(now - c._rtt_time, now)
        c._rtt_seq = None


def _process_ack(c: Connection, seg: Segment, ack: int, now: float) -> bool:
    """ACK processing of ESTABLISHED and the closing states. False once the connection is gone."""
    una = c.snd_una
    if c.sack_ok and seg.options.sack_blocks and una != c.snd_max:
        sack.update(c, seg.options.sack_blocks)
    if seq_gt(ack, una):
        _new_ack(c, seg, ack, now)
    elif (
        ack == una
        and seq_gt(c.snd_max, una)
        and not seg.payload
        and not seg.flags & (SYN | FIN)
        and (seg.window << c.snd_wscale) == c.snd_wnd
    ):
        _duplicate_ack(c, now)  # RFC 5681 §2's definition of a duplicate ACK
    # Window update, guarded against old segments by WL1/WL2 (§3.10.7.4).
    if seq_lt(c.snd_wl1, seg.seq) or (c.snd_wl1 == seg.seq and seq_le(c.snd_wl2, ack)):
        was_closed = c.snd_wnd == 0
        c.snd_wnd = seg.window << c.snd_wscale
        c.snd_wl1 = seg.seq
        c.snd_wl2 = ack
        if c.snd_wnd > c.max_snd_wnd:
            c.max_snd_wnd = c.snd_wnd
        if was_closed and c.snd_wnd:
            c.clear_timer(Timer.PERSIST)
    fin_seq = c.fin_seq
    if fin_seq is not None and seq_gt(ack, fin_seq):
        state = c.state
        if state is S.FIN_WAIT_1:
            c.set_state(S.FIN_WAIT_2, "rcv ACK of FIN", now)
            if c.orphan:
                c.set_timer(Timer.FIN_WAIT_2, now + c.cfg.fin_timeout)
        elif state is S.CLOSING:
            c.host.enter_time_wait(c, now, "rcv ACK of FIN")
            return False
        elif state is S.LAST_ACK:
            c.finish(CloseReason.NORMAL, "rcv ACK of FIN", now)
            return False
    return True


def _new_ack(c: Connection, seg: Segment, ack: int, now: float) -> None:
    acked = seq_sub(ack, c.snd_una)
    _rtt_sample(c, seg, ack, now)
    c.snd_una = ack
    if seq_lt(c.snd_nxt, ack):
        c.snd_nxt = ack  # an ACK beyond a go-back-N rewind
    c.send_buf.ack_to(ack)
    c.retries = 0
    if c.sacked:
        sack.prune(c)
    cc = c.cc
    if c.in_recovery:
        if seq_ge(ack, c.recover):
            c.in_recovery = False  # RFC 6582 §3.2 step 3 / RFC 6675 §5: full acknowledgment
            c.dupacks = 0
            cc.on_recovery_exit(now, seq_sub(c.snd_max, ack))
        elif c.sack_ok:
            if seq_lt(c.high_rxt, ack):
                c.high_rxt = ack
            sack.recovery_send(c, now)  # RFC 6675 §5 step C: the pipe decides, no NewReno deflation
        else:
            # Partial acknowledgment: resend the next hole, deflate by what was acked (step 3).
            c.retransmit_first(now)
            cc.cwnd = max(cc.cwnd - acked + (c.snd_mss if acked >= c.snd_mss else 0), c.snd_mss)
    else:
        c.dupacks = 0
        cc.on_ack(acked, now, seq_sub(c.snd_max, ack))
    if c.snd_una == c.snd_max:
        c.clear_timer(Timer.RTX)  # RFC 6298 §5.2
        c.first_unacked_time = None
    else:
        c.set_timer(Timer.RTX, now + c.rtt.rto)  # RFC 6298 §5.3
        c.first_unacked_time = now
    c.note_writable()


def _duplicate_ack(c: Connection, now: float) -> None:
    c.dupacks += 1
    cc = c.cc
    if c.in_recovery:
        if c.sack_ok:
            sack.recovery_send(c, now)  # the ACK's SACK blocks shrank the pipe
        else:
            cc.cwnd += c.snd_mss  # RFC 6582 §3.2 step 4: inflate for each further duplicate
    elif (c.dupacks == 3 or (c.sack_ok and sack.is_lost(c, c.snd_una))) and seq_ge(c.snd_una, c.recover):
        # Fast retransmit and recovery: RFC 6582 §3.2 steps 1-2, or with SACK RFC 6675 §5 (also
        # entered once the scoreboard shows SND.UNA lost, before the third duplicate).
        c.in_recovery = True
        c.recover = c.snd_max
        cc.on_loss(now, seq_sub(c.snd_max, c.snd_una))
        c.host.counters.inc("TCPFastRetrans")
        if c.sack_ok:
            cc.cwnd = min(cc.cwnd, max(cc.ssthresh, 2 * c.snd_mss))  # RFC 6675: cwnd = ssthresh, no inflation
            c.high_rxt = c.snd_una
            sack.recovery_send(c, now)
        else:
            c.retransmit_first(now)


def listen_arrives(c: Connection, seg: Segment, now: float) -> bool:
    """LISTEN (RFC 9293 §3.10.7.2) for a connection that is listening: RST is ignored, an ACK is
    answered with <SEQ=SEG.ACK><CTL=RST>, a SYN moves it to SYN-RECEIVED with a SYN,ACK.
    Returns whether a handshake started. SYN+FIN is dropped, as Linux does."""
    flags = seg.flags
    if flags & RST:
        return False
    if flags & ACK:
        c.host.reply_rst(seg)
        return False
    if not flags & SYN or flags & FIN:
        return False
    negotiate(c, seg, now)
    c.last_recv_time = now
    c.set_state(S.SYN_RECEIVED, "rcv SYN", now)
    c.host.counters.inc("PassiveOpens")
    c.send_syn(now)
    return True


def _syn_sent(c: Connection, seg: Segment, now: float) -> None:
    """RFC 9293 §3.10.7.3."""
    flags = seg.flags
    ack_ok = False
    if flags & ACK:
        if seq_le(seg.ack, c.iss) or seq_gt(seg.ack, c.snd_max):
            if not flags & RST:
                c.host.reply_rst(seg)  # <SEQ=SEG.ACK><CTL=RST>
            return
        ack_ok = True
    if flags & RST:
        if ack_ok:
            c.host.counters.inc("AttemptFails")
            c.finish(CloseReason.REFUSED, "rcv RST", now)
        return
    if not flags & SYN:
        return
    negotiate(c, seg, now)
    c.last_recv_time = now
    if ack_ok:
        _rtt_sample(c, seg, seg.ack, now)
        c.snd_una = seg.ack
        c.send_buf.ack_to(seg.ack)
        c.clear_timer(Timer.RTX)
        become_established(c, seg, now, "rcv SYN,ACK")
        if seg.payload:
            _accept_text(c, c.rcv_nxt, seg.payload, now)
        c.host.request_ack(c)  # carried by queued data if push() sends any
        c.push(now)
    else:
        # Simultaneous open: answer with SYN,ACK from our ISS (§3.10.7.3, fourth step).
        c.set_state(S.SYN_RECEIVED, "rcv SYN", now)
        c.send_syn(now)
