"""The sender: every segment a connection puts on the wire (gVisor's snd.go, the output half).

`push` sends what the windows, Nagle and sender SWS avoidance allow, then our FIN; `retransmit`
resends from the send buffer without moving SND.NXT; `emit` fills in the ACK fields, the window and
the options and hands the segment to the context. What to resend after a loss is decided by
`stack.tcp.recovery`; how fast to send by `stack.tcp.congestion`.
"""

from __future__ import annotations

from stack.tcp.context import Context
from stack.tcp.events import CloseReason
from stack.tcp.outcome import Finished
from stack.tcp.seq import HALF, MASK, MOD, seq_add, seq_gt, seq_lt, seq_sub
from stack.tcp.states import SENDING_STATES, State
from stack.tcp.tcb import INF, Tcb, Timer
from stack.wire.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions

S = State
_NO_OPTIONS = TcpOptions()


def emit(c: Tcb, flags: int, seq: int, payload: bytes, ctx: Context, options: TcpOptions | None = None) -> None:
    """Put one segment on the context's output, ACK fields, window and options filled in."""
    la, lp, ra, rp = c.four_tuple
    if options is None:
        options = _options(c, flags, ctx.now)
    window = 0
    ack = 0
    if flags & SYN:
        # Windows in SYNs are never scaled (RFC 7323 §2.2).
        window = min(c.window_free(), 65535)
        c.rcv_adv = seq_add(c.rcv_nxt, window)
    if flags & ACK:
        ack = c.rcv_nxt
        if not flags & SYN:
            window = c.advertise()
        c.last_ack_sent = ack
        if c.quick_acks:
            c.quick_acks -= 1  # Linux tcp_event_ack_sent: every ACK sent counts against quick-ACK mode
        if ctx.ack_pending:
            ctx.ack_pending.pop(c, None)  # this segment carries the ACK that was asked for
        if c.deadlines[Timer.DELACK] != INF:
            c.clear_timer(Timer.DELACK, ctx)
    ctx.transmit(Segment(la, ra, lp, rp, seq, ack, flags, window, 0, options, payload))


def _options(c: Tcb, flags: int, now: float) -> TcpOptions:
    if flags & SYN:
        return _syn_options(c, now)
    ts_ok = c.ts_ok
    if not ts_ok and not c.sack_ok:
        return _NO_OPTIONS
    # Tcb.tsval, inline: this runs for every segment sent.
    timestamp = ((int(now * 1000.0) + c.ts_offset) & MASK, c.ts_recent) if ts_ok else None
    blocks: tuple[tuple[int, int], ...] = ()
    if c.sack_ok and flags & ACK and c.recv.ooo:
        blocks = c.recv.sack_blocks(3 if ts_ok else 4)
    return TcpOptions(None, None, False, blocks, timestamp)


def _syn_options(c: Tcb, now: float) -> TcpOptions:
    cfg = c.cfg
    # In a SYN-ACK we only echo what the peer's SYN offered (RFC 7323 §1.3, RFC 2018 §2).
    answering = c.state is S.SYN_RECEIVED
    wscale = c.rcv_wscale if (cfg.window_scaling and (not answering or c.wscale_ok)) else None
    sack = cfg.sack and (not answering or c.sack_ok)
    ts: tuple[int, int] | None = None
    if cfg.timestamps and (not answering or c.ts_ok):
        ts = (c.tsval(now), c.ts_recent if answering else 0)
    return TcpOptions(mss=cfg.mss_for(c.four_tuple[0]), wscale=wscale, sack_permitted=sack, timestamp=ts)


def send_ack(c: Tcb, ctx: Context) -> None:
    """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with SND.NXT the highest sequence number sent: after
    a go-back-N rewind a lower SEQ would fall below the peer's RCV.NXT, making the ACK
    unacceptable there and its acknowledgment ignored (both ends can livelock that way)."""
    emit(c, ACK, c.snd_max, b"", ctx)


def send_probe(c: Tcb, ctx: Context) -> None:
    """A zero-window or keepalive probe: an ACK carrying SEQ = SND.UNA - 1, which the peer must
    answer (RFC 9293 §3.8.4 allows no data; Linux's form for both probes)."""
    emit(c, ACK, seq_add(c.snd_una, -1), b"", ctx)


def challenge_ack(c: Tcb, ctx: Context) -> None:
    """RFC 5961 §3.2/§4.2 challenge ACK, at most one per `challenge_ack_interval` (§7)."""
    counters = ctx.counters
    if ctx.now - c.challenge_time < c.cfg.challenge_ack_interval:
        counters.inc("TCPACKSkippedChallenge")
        return
    c.challenge_time = ctx.now
    counters.inc("TCPChallengeACK")
    send_ack(c, ctx)


def reset(c: Tcb, reason: CloseReason, cause: str, ctx: Context) -> Finished:
    """Send <SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK> (Linux sets ACK) and drop the connection.
    SND.NXT is the highest sent (`snd_max`), as in `send_ack`. Data the application wrote just
    before goes first, as with a kernel socket, where write() has sent it already."""
    if ctx.push_pending.pop(c, 0) is None:
        push(c, ctx)
    emit(c, RST | ACK, c.snd_max, b"", ctx)
    return c.finish(reason, cause, ctx)


def push(c: Tcb, ctx: Context) -> None:
    """Send what the windows, Nagle (RFC 9293 §3.7.4) and sender SWS avoidance (§3.8.6.2.1)
    allow, then our FIN once every byte before it has been sent."""
    if c.state not in SENDING_STATES:
        return
    buf = c.send_buf
    # Unsent bytes: the buffer's length less SND.NXT - its first sequence number (seq_sub written
    # out, here and in the loop: push runs for every segment received and every write).
    sent = (c.snd_nxt - buf.seq) & MASK
    if len(buf) - (sent - MOD if sent > HALF else sent) <= 0 and not c.fin_queued:
        return  # nothing unsent, no FIN to send: nothing below would act (most calls end here)
    mss = c.send_mss()
    size = max(mss, ctx.tso_size) if mss == c.snd_mss else mss  # TSO: the link splits large segments
    recovery = c.recovery
    cwnd = c.cc.cwnd
    if not recovery.in_recovery and recovery.dupacks:
        # Limited Transmit (RFC 3042, RFC 5681 §3.2): one new segment for each of the first two
        # duplicate ACKs, beyond cwnd, so a small flight can still produce a third one.
        cwnd += min(recovery.dupacks, 2) * mss
    sent_any = False
    while True:
        snd_nxt = c.snd_nxt
        sent = (snd_nxt - buf.seq) & MASK
        avail = len(buf) - (sent - MOD if sent > HALF else sent)
        if avail <= 0:
            if avail == 0 and c.fin_queued:
                _send_data(c, b"", FIN, ctx)  # a bare FIN goes out even into a closed window
                sent_any = True
            break
        # In recovery the loss-recovery algorithm says what is in flight (RFC 6675 §5: the pipe).
        if recovery.in_recovery:
            flight = recovery.pipe(c)
        else:
            flight = (snd_nxt - c.snd_una) & MASK
            if flight > HALF:
                flight -= MOD
        snd_wnd = c.snd_wnd
        usable = (snd_wnd if snd_wnd < cwnd else cwnd) - flight
        n = avail if avail < size else size
        if usable < n:
            n = usable
        if n <= 0:
            break
        last = n == avail
        if n < mss:
            if not last:
                if n < c.max_snd_wnd // 2:
                    break  # a window-limited runt: wait for the window to open further
            elif (c.cfg.nagle and seq_gt(c.snd_sml, c.snd_una) and not seq_gt(c.snd_sml, c.snd_nxt)
                  and not c.fin_queued):
                # Nagle, Minshall's variant as Linux (tcp_minshall_check): a small segment waits
                # while an earlier small one is unacknowledged, not behind full-sized ones.
                break
        _send_data(c, buf.slice(c.snd_nxt, n), FIN if last and c.fin_queued else 0, ctx)
        sent_any = True
    if sent_any:
        schedule_loss_probe(c, ctx)
    elif (
        c.snd_nxt == c.snd_una
        and c.unsent() > 0
        and c.deadlines[Timer.PERSIST] == INF
        and c.snd_wnd < c.snd_mss
    ):
        # Nothing in flight and the window keeps data back: probe it (RFC 9293 §3.8.6.1).
        c.set_timer(Timer.PERSIST, ctx.now + c.rtt.rto, ctx)


def _send_data(c: Tcb, payload: bytes, extra_flags: int, ctx: Context) -> None:
    seq = c.snd_nxt
    flags = ACK | extra_flags
    if payload and c.send_buf.push_in(seq, len(payload)):
        flags |= PSH  # the segment ends a write (Linux tcp_push)
    n = len(payload) + (1 if extra_flags & FIN else 0)
    end = seq_add(seq, n)
    if 0 < len(payload) < c.snd_mss:
        c.snd_sml = end  # Linux tcp_minshall_update
    if extra_flags & FIN:
        c.fin_seq = seq_add(seq, len(payload))
    now = ctx.now
    c.bytes_sent += len(payload)
    if seq_lt(seq, c.snd_max):
        ctx.counters.inc("RetransSegs")
        c.bytes_retrans += len(payload)
        c.total_retrans += 1
    else:
        if c.rtt_seq is None and not c.ts_ok:
            c.rtt_seq, c.rtt_time = end, now  # time this one (RFC 6298 §3, Karn)
        last = c.last_data_time
        if payload and last is not None and now - last < c.cfg.delayed_ack_timeout:
            c.pingpong = True  # an answer right after data arrived: interactive (Linux pingpong)
    emit(c, flags, seq, payload, ctx)
    c.snd_nxt = end
    if seq_gt(end, c.snd_max):
        c.snd_max = end
    if c.deadlines[Timer.RTX] == INF:
        c.set_timer(Timer.RTX, now + c.rtt.rto, ctx)


def send_new_segment(c: Tcb, ctx: Context) -> bool:
    """One segment of unsent data, as far as the peer's window allows, whatever cwnd says (what
    a tail loss probe sends first). Whether one went out."""
    buf = c.send_buf
    avail = len(buf) - seq_sub(c.snd_nxt, buf.seq)
    n = min(avail, c.snd_mss, c.snd_wnd - seq_sub(c.snd_nxt, c.snd_una))
    if n <= 0:
        return False
    _send_data(c, buf.slice(c.snd_nxt, n), FIN if n == avail and c.fin_queued else 0, ctx)
    return True


TLP_MIN_EXTRA = 0.002  # Linux TCP_TIMEOUT_MIN (2 jiffies at HZ=1000) added to 2*SRTT


def schedule_loss_probe(c: Tcb, ctx: Context) -> None:
    """Arm the tail loss probe (RFC 8985 §7.2) as Linux's tcp_schedule_loss_probe does: with SACK,
    an RTT sample, data in flight and no loss being repaired, PTO = 2*SRTT (plus rto_min when one
    segment is out, for the peer's delayed ACK), never later than the RTO."""
    if not c.sack_ok or c.tlp_high_seq is not None or not c.cfg.tail_loss_probe:
        return
    recovery = c.recovery
    srtt = c.rtt.srtt
    flight = seq_sub(c.snd_max, c.snd_una)
    # Only in Linux's "Open" state: no loss being repaired, neither by recovery nor after an RTO.
    if recovery.in_recovery or recovery.dupacks or c.retries or srtt is None or flight <= 0:
        return
    pto = 2.0 * srtt + (c.rtt.rto_min if flight <= c.snd_mss else TLP_MIN_EXTRA)
    now = ctx.now
    rto_at = c.deadlines[Timer.RTX]
    if rto_at != INF and rto_at - now < pto:
        pto = rto_at - now
    c.set_timer(Timer.LOSS_PROBE, now + pto, ctx)


def retransmit_first(c: Tcb, ctx: Context) -> None:
    """Resend one segment from SND.UNA (fast retransmit, partial ACK) without moving SND.NXT."""
    retransmit(c, c.snd_una, min(c.snd_mss, max(0, seq_sub(c.send_buf.end_seq(), c.snd_una))), ctx)


def retransmit(c: Tcb, seq: int, n: int, ctx: Context) -> None:
    """Resend `n` bytes from `seq` (and our FIN if they end where it sits), SND.NXT untouched."""
    flags = ACK
    if c.fin_seq is not None and seq_add(seq, n) == c.fin_seq:
        flags |= FIN
    if n == 0 and not flags & FIN:
        return
    if n and c.send_buf.push_in(seq, n):
        flags |= PSH  # as when it was first sent
    ctx.counters.inc("RetransSegs")
    c.bytes_sent += n
    c.bytes_retrans += n
    c.total_retrans += 1
    c.rtt_seq = None  # Karn
    emit(c, flags, seq, c.send_buf.slice(seq, n), ctx)


def send_syn(c: Tcb, ctx: Context) -> None:
    """(Re)send our SYN; a SYN-ACK once the peer's SYN is known (every state after SYN-SENT)."""
    flags = SYN | (0 if c.state is S.SYN_SENT else ACK)
    if c.syn_flags_sent == flags:  # not the SYN,ACK after our SYN in a simultaneous open
        ctx.counters.inc("RetransSegs")
        ctx.counters.inc("TCPSynRetrans")
        c.total_retrans += 1
        c.rtt_seq = None  # Karn: an answer to a retransmitted SYN times nothing
    elif not c.syn_flags_sent:
        # Time the handshake (Linux does, timestamps or not): the first RTO then follows the
        # path instead of RFC 6298's 1 s. Only our very first SYN or SYN,ACK (Karn).
        c.rtt_seq, c.rtt_time = seq_add(c.iss, 1), ctx.now
    else:
        c.rtt_seq = None  # a SYN,ACK after our SYN (simultaneous open): ambiguous
    c.syn_flags_sent = flags
    emit(c, flags, c.iss, b"", ctx)
    c.snd_nxt = c.snd_max = seq_add(c.iss, 1)
    c.set_timer(Timer.RTX, ctx.now + c.rtt.rto, ctx)


def rst_for(seg: Segment) -> Segment | None:
    """The reset that answers a segment nothing accepts (RFC 9293 §3.10.7.1): <SEQ=SEG.ACK><CTL=RST>
    if it had ACK, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. A RST is never answered."""
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
    return Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, 0, seq_add(seg.seq, seg.seg_len),
                   RST | ACK, 0)


def reply_rst(seg: Segment, ctx: Context) -> None:
    rst = rst_for(seg)
    if rst is not None:
        ctx.transmit(rst)
