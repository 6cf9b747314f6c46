"""SACK-based loss recovery (RFC 6675, on top of RFC 2018 SACK blocks).

The scoreboard is a sorted list of SACKed ranges above SND.UNA. From it follow IsLost (a hole is
lost once more than (DupThresh - 1) * SMSS bytes, or DupThresh separate blocks, are SACKed above
it), the pipe (bytes believed in flight: neither SACKed nor lost, plus lost bytes already
retransmitted) and NextSeg (the first lost hole not yet retransmitted). During recovery the sender
keeps cwnd - pipe >= SMSS full: holes first, then new data (RFC 6675 §5, steps C.1-C.5).
"""

from __future__ import annotations

from stack.tcp.context import Context
from stack.tcp.recovery.base import DUP_THRESH, LossRecovery
from stack.tcp.sender import push, retransmit
from stack.tcp.seq import seq_add, seq_le, seq_lt, seq_sub
from stack.tcp.tcb import Tcb


class SackRecovery(LossRecovery):
    __slots__ = ("high_rxt", "sacked")

    name = "sack"

    def __init__(self, iss: int) -> None:
        super().__init__(iss)
        self.sacked: list[list[int]] = []  # the scoreboard: SACKed ranges above SND.UNA
        self.high_rxt = iss  # RFC 6675 HighRxt: the highest sequence number retransmitted in recovery

    # ---- the scoreboard
    def on_sack_blocks(self, c: Tcb, blocks: tuple[tuple[int, int], ...]) -> None:
        una, high = c.snd_una, c.snd_max
        board = self.sacked
        for start, end in blocks:
            # Ignore blocks that are stale (below SND.UNA: D-SACK) or beyond what we sent (bogus).
            if not (seq_lt(start, end) and seq_lt(una, end) and seq_le(end, high)):
                continue
            if seq_lt(start, una):
                start = una
            board.append([start, end])
        if len(board) > 1:
            board.sort(key=lambda b: seq_sub(b[0], una))
            merged = [board[0]]
            for start, end in board[1:]:
                last = merged[-1]
                if seq_le(start, last[1]):
                    if seq_lt(last[1], end):
                        last[1] = end
                else:
                    merged.append([start, end])
            self.sacked = merged

    def on_new_ack(self, c: Tcb, acked: int, ctx: Context) -> None:
        if self.sacked:
            self._prune(c.snd_una)
        super().on_new_ack(c, acked, ctx)

    def on_timeout(self) -> None:
        super().on_timeout()
        self.sacked = []  # RFC 2018 §8: after a timeout the SACKed bits are not relied on

    def _prune(self, una: int) -> None:
        """Drop what the cumulative ACK now covers."""
        board = [b for b in self.sacked if seq_lt(una, b[1])]
        for b in board:
            if seq_lt(b[0], una):
                b[0] = una
        self.sacked = board

    def sacked_bytes(self) -> int:
        return sum(seq_sub(end, start) for start, end in self.sacked)

    def lost_below(self, c: Tcb) -> int:
        """The sequence number below which every unSACKed byte counts as lost (SND.UNA: none)."""
        limit = c.snd_una
        above = 0
        for count, (start, end) in enumerate(reversed(self.sacked), 1):
            above += seq_sub(end, start)
            if above > (DUP_THRESH - 1) * c.snd_mss or count >= DUP_THRESH:
                limit = start
                break
        return limit

    def is_lost(self, c: Tcb, seq: int) -> bool:
        return seq_lt(seq, self.lost_below(c))

    def pipe(self, c: Tcb) -> int:
        """RFC 6675 SetPipe: unSACKed bytes not deemed lost, plus lost ones already retransmitted."""
        lost = self.lost_below(c)
        high_rxt = self.high_rxt
        total = 0
        for a, b in self._holes(c):
            # The part of the hole above the loss limit is still in flight ...
            if seq_lt(lost, b):
                total += seq_sub(b, lost if seq_lt(a, lost) else a)
            # ... and of the lost part, what we retransmitted is in flight again.
            lost_end = lost if seq_lt(lost, b) else b
            rxt_end = high_rxt if seq_lt(high_rxt, lost_end) else lost_end
            if seq_lt(a, rxt_end):
                total += seq_sub(rxt_end, a)
        return total

    def next_lost(self, c: Tcb) -> tuple[int, int] | None:
        """NextSeg rule (1): the first lost hole byte above HighRxt, and how much of it to resend."""
        lost = self.lost_below(c)
        for a, b in self._holes(c):
            start = self.high_rxt if seq_lt(a, self.high_rxt) else a
            end = b if seq_lt(b, lost) else lost
            if seq_lt(start, end):
                return start, min(seq_sub(end, start), c.snd_mss)
        return None

    def _holes(self, c: Tcb) -> list[tuple[int, int]]:
        """The unSACKed ranges between SND.UNA and SND.MAX (the FIN excluded: it is not data)."""
        top = c.send_buf.end_seq() if c.fin_seq is not None else c.snd_max
        holes = []
        at = c.snd_una
        for start, end in self.sacked:
            if seq_lt(at, start):
                holes.append((at, start))
            if seq_lt(at, end):
                at = end
        if seq_lt(at, top):
            holes.append((at, top))
        return holes

    # ---- the recovery episode
    def _lost_early(self, c: Tcb) -> bool:
        # RFC 6675 §5: recovery also starts once the scoreboard shows SND.UNA lost.
        return self.is_lost(c, c.snd_una)

    def _enter(self, c: Tcb, ctx: Context) -> None:
        c.cc.limit_to_ssthresh()  # cwnd = ssthresh, no NewReno inflation
        # Step (4.3): the first segment presumed lost goes out now, whatever the pipe says;
        # HighRxt marks it retransmitted. Then step C fills what cwnd - pipe allows.
        una = c.snd_una
        n = min(c.snd_mss, max(0, seq_sub(c.send_buf.end_seq(), una)))
        retransmit(c, una, n, ctx)
        self.high_rxt = seq_add(una, n)
        self._send(c, ctx)

    def _partial_ack(self, c: Tcb, acked: int, ctx: Context) -> None:
        if seq_lt(self.high_rxt, c.snd_una):
            self.high_rxt = c.snd_una
        self._send(c, ctx)  # step C: the pipe decides, no NewReno deflation

    def _further_duplicate(self, c: Tcb, ctx: Context) -> None:
        self._send(c, ctx)  # the ACK's SACK blocks shrank the pipe

    def _send(self, c: Tcb, ctx: Context) -> None:
        """Fill cwnd - pipe with lost holes first, then new data (RFC 6675 §5 steps C.1-C.5)."""
        mss = c.snd_mss
        while c.cc.cwnd - self.pipe(c) >= mss:
            hole = self.next_lost(c)
            if hole is None:
                break
            seq, n = hole
            retransmit(c, seq, n, ctx)
            self.high_rxt = seq_add(seq, n)
        push(c, ctx)  # new data as the pipe allows (push limits itself by the pipe during recovery)
