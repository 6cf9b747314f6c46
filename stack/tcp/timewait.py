"""TIME-WAIT as a compact record, not a full TCB (the Linux `tcp_minisocks.c` model).

A connection that reaches TIME-WAIT hands its table slot to a `TimeWait` holding only what
TIME-WAIT needs: the sequence numbers to ACK a retransmitted FIN, TS.Recent for PAWS and RFC 6191,
and its 2MSL timer. `process` is the counterpart of Linux's `tcp_timewait_state_process`.
"""

from __future__ import annotations

from enum import Enum

from stack.tcp.config import Config, FourTuple
from stack.tcp.seq import seq_gt, seq_lt
from stack.wire.segment import ACK, FIN, RST, SYN, Segment, TcpOptions

PAWS_MSL = 60.0  # Linux TCP_PAWS_MSL: after this long TS.Recent no longer rejects an RST


class TwAction(Enum):
    NONE = 0  # absorbed (timer possibly restarted)
    ACK = 1  # answer with <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
    KILL = 2  # an exact RST ended TIME-WAIT (RFC 9293; rfc1337 off)
    REOPEN = 3  # a new SYN may take this 4-tuple (RFC 6191 / RFC 9293 MAY-2)


class TimeWait:
    __slots__ = (
        "armed",
        "cid",
        "deadline",
        "entered",
        "four_tuple",
        "handle",
        "last_oow_ack",
        "rcv_nxt",
        "snd_nxt",
        "ts_offset",
        "ts_recent",
        "ts_recent_time",
        "window",
    )

    def __init__(
        self,
        four_tuple: FourTuple,
        cid: int,
        snd_nxt: int,
        rcv_nxt: int,
        window: int,
        ts_recent: int | None,
        ts_recent_time: float,
        ts_offset: int,
        now: float,
        deadline: float,
    ) -> None:
        self.four_tuple = four_tuple
        self.cid = cid
        self.snd_nxt = snd_nxt
        self.rcv_nxt = rcv_nxt
        self.window = window
        self.ts_recent = ts_recent  # None when timestamps were not negotiated
        self.ts_recent_time = ts_recent_time
        self.ts_offset = ts_offset
        self.entered = now
        self.deadline = deadline
        self.armed = deadline
        self.handle = -1
        self.last_oow_ack = -1e18

    @property
    def ts_ok(self) -> bool:
        return self.ts_recent is not None

    def tsval(self, now: float) -> int:
        return (int(now * 1000.0) + self.ts_offset) & 0xFFFFFFFF

    def process(self, seg: Segment, now: float, cfg: Config) -> TwAction:
        """What TIME-WAIT does with one segment (closing-rules.md, TIME-WAIT row)."""
        flags = seg.flags
        ts = seg.options.timestamp if self.ts_recent is not None else None
        paws_reject = False
        if ts is not None and self.ts_recent is not None and seq_lt(ts[0], self.ts_recent):
            # RFC 7323 §5.3; an RST is exempt once TS.Recent is stale (Linux tcp_paws_reject).
            paws_reject = not (flags & RST and now - self.ts_recent_time >= PAWS_MSL)
        seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)

        if not paws_reject and seg.seq == self.rcv_nxt and (seg_len == 0 or flags & RST):
            # In-window: only an RST or a bare ACK can be here.
            if flags & RST:
                if not cfg.rfc1337:
                    return TwAction.KILL
            else:
                self.restart(now, cfg)
            if ts is not None:
                self.ts_recent, self.ts_recent_time = ts[0], now
            return TwAction.NONE

        if flags & SYN and not flags & (RST | ACK) and not paws_reject and cfg.syn_reopen_time_wait:
            newer_ts = ts is not None and self.ts_recent is not None and seq_gt(ts[0], self.ts_recent)
            if seq_gt(seg.seq, self.rcv_nxt) or newer_ts:
                return TwAction.REOPEN

        if flags & RST:
            return TwAction.NONE  # a RST that does not match exactly is ignored, as Linux does
        if paws_reject or flags & ACK:
            self.restart(now, cfg)  # e.g. a retransmitted FIN: restart 2MSL (RFC 9293 §3.10.7.4)
        # Pure ACKs and SYNs are answered at most once per interval so two TIME-WAITs cannot
        # ping-pong; a segment carrying FIN or data always is (Linux tcp_oow_rate_limited).
        if seg.payload or flags & FIN:
            return TwAction.ACK
        if now - self.last_oow_ack < cfg.challenge_ack_interval:
            return TwAction.NONE
        self.last_oow_ack = now
        return TwAction.ACK

    def restart(self, now: float, cfg: Config) -> None:
        self.deadline = now + cfg.time_wait_duration

    def reopen_isn(self) -> int:
        """The ISN for a connection that takes over this 4-tuple: SND.NXT + 65535 + 2, as Linux picks."""
        isn = (self.snd_nxt + 65535 + 2) & 0xFFFFFFFF
        return isn or 1

    def ack_segment(self, now: float) -> Segment:
        la, lp, ra, rp = self.four_tuple
        ts = self.ts_recent
        opts = TcpOptions(timestamp=(self.tsval(now), ts)) if ts is not None else TcpOptions()
        return Segment(la, ra, lp, rp, self.snd_nxt, self.rcv_nxt, ACK, self.window, 0, opts, b"")
