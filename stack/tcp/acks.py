"""The sender's half of the fifth step of SEGMENT ARRIVES (RFC 9293 §3.10.7.4): the peer's ACK.

An acceptable ACK moves SND.UNA, frees the send buffer, gives an RTT sample, restarts or stops the
retransmission timer (RFC 6298 §5) and lets congestion control grow the window; duplicate ACKs
and partial ones go to loss recovery; the window fields update under the WL1/WL2 guard. The state
changes an ACK of our FIN causes are SEGMENT ARRIVES' business (stack.tcp.arrival).
"""

from __future__ import annotations

from stack.tcp.context import Context
from stack.tcp.events import Writable
from stack.tcp.sender import schedule_loss_probe
from stack.tcp.seq import HALF, MASK, seq_ge, seq_lt
from stack.tcp.tcb import Tcb, Timer
from stack.wire.segment import FIN, SYN, Segment


def rtt_sample(c: Tcb, seg: Segment, ack: int, ctx: Context) -> None:
    """One RTT measurement per RFC 6298 §3 (Karn) or RFC 7323 §4 (timestamps)."""
    now = ctx.now
    ts = seg.options.timestamp
    if c.ts_ok and ts is not None and ts[1]:
        elapsed = (int(now * 1000.0) + c.ts_offset - ts[1]) & MASK  # Tcb.tsval(now) - TSecr
        if elapsed < 1 << 30:
            c.rtt.sample(elapsed / 1000.0)
            c.cc.on_rtt_sample(elapsed / 1000.0, now)
            return
    rtt_seq = c.rtt_seq
    if rtt_seq is not None and seq_ge(ack, rtt_seq):
        c.rtt.sample(now - c.rtt_time)
        c.cc.on_rtt_sample(now - c.rtt_time, now)
        c.rtt_seq = None


def on_ack(c: Tcb, seg: Segment, ack: int, ctx: Context) -> None:
    """An acceptable ACK (already checked against SND.MAX and RFC 5961 §5) in a synchronized state."""
    una = c.snd_una
    c.probes_out = 0  # the peer answers (Linux resets icsk_probes_out on every ACK)
    blocks = seg.options.sack_blocks
    if blocks and una != c.snd_max:
        c.recovery.on_sack_blocks(c, blocks)
    # stack.tcp.seq's comparisons written out (every ACK comes here): `advance` is SEG.ACK - SND.UNA.
    advance = (ack - una) & MASK
    if 0 < advance < HALF:
        _new_ack(c, seg, ack, advance, ctx)
    elif (
        advance == 0
        and 0 < ((c.snd_max - una) & MASK) < HALF
        and not seg.payload
        and not seg.flags & (SYN | FIN)
        and (seg.window << c.snd_wscale) == c.snd_wnd
    ):
        c.recovery.on_duplicate_ack(c, ctx)  # RFC 5681 §2's definition of a duplicate ACK
    # Window update, guarded against old segments by WL1/WL2 (§3.10.7.4): WL1 < SEG.SEQ, or
    # WL1 = SEG.SEQ and WL2 =< SEG.ACK.
    wl1 = c.snd_wl1
    seq = seg.seq
    if 0 < ((seq - wl1) & MASK) < HALF or (wl1 == seq and ((ack - c.snd_wl2) & MASK) < HALF):
        was_closed = c.snd_wnd == 0
        c.snd_wnd = seg.window << c.snd_wscale
        c.snd_wl1 = seg.seq
        c.snd_wl2 = ack
        if c.snd_wnd > c.max_snd_wnd:
            c.max_snd_wnd = c.snd_wnd
        if was_closed and c.snd_wnd:
            c.clear_timer(Timer.PERSIST, ctx)
            c.probes_start = None


def _new_ack(c: Tcb, seg: Segment, ack: int, acked: int, ctx: Context) -> None:
    c.bytes_acked += acked
    rtt_sample(c, seg, ack, ctx)
    c.snd_una = ack
    if seq_lt(c.snd_nxt, ack):
        c.snd_nxt = ack  # an ACK beyond a go-back-N rewind
    c.send_buf.ack_to(ack)
    c.retries = 0
    c.probes_start = None
    c.soft_error = None  # something got through: forget the last ICMP error (Linux tcp_ack)
    if c.tlp_high_seq is not None and seq_ge(ack, c.tlp_high_seq):
        c.tlp_high_seq = None  # the probe's round is over: another may follow
    c.recovery.on_new_ack(c, acked, ctx)
    if c.snd_una == c.snd_max:
        c.clear_timer(Timer.RTX, ctx)  # RFC 6298 §5.2
        c.clear_timer(Timer.LOSS_PROBE, ctx)
    else:
        c.set_timer(Timer.RTX, ctx.now + c.rtt.rto, ctx)  # RFC 6298 §5.3
        schedule_loss_probe(c, ctx)
    c.retrans_stamp = None
    if c.want_writable and c.send_buf.free > 0 and c.handle is not None:
        c.want_writable = False
        ctx.events.append(Writable(c.handle))
