"""The sender's SACK scoreboard and loss recovery (RFC 6675, on top of RFC 2018 SACK blocks).

The scoreboard is a sorted list of SACKed ranges above SND.UNA. From it follow IsLost (a hole is
lost once more than (DupThresh - 1) * SMSS bytes, or DupThresh separate blocks, are SACKed above
it), the pipe (bytes believed in flight: neither SACKed nor lost, plus lost bytes already
retransmitted) and NextSeg (the first lost hole not yet retransmitted). During recovery the sender
keeps cwnd - pipe >= SMSS full: holes first, then new data (RFC 6675 §5, steps C.1-C.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp.seq import seq_add, seq_le, seq_lt, seq_sub

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

DUP_THRESH = 3


def update(c: Connection, blocks: tuple[tuple[int, int], ...]) -> bool:
    """Merge the SACK blocks of one ACK into the scoreboard. Whether anything new was SACKed."""
    una, high = c.snd_una, c.snd_max
    board = c.sacked
    before = sacked_bytes(c)
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
        c.sacked = merged
    return sacked_bytes(c) > before


def prune(c: Connection) -> None:
    """Drop what the cumulative ACK now covers."""
    una = c.snd_una
    board = [b for b in c.sacked if seq_lt(una, b[1])]
    for b in board:
        if seq_lt(b[0], una):
            b[0] = una
    c.sacked = board


def sacked_bytes(c: Connection) -> int:
    return sum(seq_sub(end, start) for start, end in c.sacked)


def lost_below(c: Connection) -> int:
    """The sequence number below which every unSACKed byte counts as lost (SND.UNA: none)."""
    limit = c.snd_una
    above = 0
    for count, (start, end) in enumerate(reversed(c.sacked), 1):
        above += seq_sub(end, start)
        if above > (DUP_THRESH - 1) * c.snd_mss or count >= DUP_THRESH:
            limit = start
            break
    return limit


def is_lost(c: Connection, seq: int) -> bool:
    return seq_lt(seq, lost_below(c))


def pipe(c: Connection) -> int:
    """RFC 6675 SetPipe: unSACKed bytes not deemed lost, plus lost ones already retransmitted."""
    lost = lost_below(c)
    high_rxt = c.high_rxt
    total = 0
    for a, b in _holes(c):
        # The part of the hole above the loss limit is still in flight ...
        if seq_lt(lost, b):
            total += seq_sub(b, lost if seq_lt(a, lost) else a)
        # ... and of the lost part, what we retransmitted is in flight again.
        lost_end = lost if seq_lt(lost, b) else b
        rxt_end = high_rxt if seq_lt(high_rxt, lost_end) else lost_end
        if seq_lt(a, rxt_end):
            total += seq_sub(rxt_end, a)
    return total


def next_lost(c: Connection) -> tuple[int, int] | None:
    """NextSeg rule (1): the first lost hole byte above HighRxt, and how much of it to resend."""
    lost = lost_below(c)
    for a, b in _holes(c):
        start = c.high_rxt if seq_lt(a, c.high_rxt) else a
        end = b if seq_lt(b, lost) else lost
        if seq_lt(start, end):
            return start, min(seq_sub(end, start), c.snd_mss)
    return None


def _holes(c: Connection) -> list[tuple[int, int]]:
    """The unSACKed ranges between SND.UNA and SND.MAX (the FIN excluded: it is not data)."""
    top = c.send_buf.end_seq() if c.fin_seq is not None else c.snd_max
    holes = []
    at = c.snd_una
    for start, end in c.sacked:
        if seq_lt(at, start):
            holes.append((at, start))
        if seq_lt(at, end):
            at = end
    if seq_lt(at, top):
        holes.append((at, top))
    return holes


def recovery_send(c: Connection, now: float) -> None:
    """Fill cwnd - pipe with lost holes first, then new data (RFC 6675 §5 steps C.1-C.5)."""
    mss = c.snd_mss
    while c.cc.cwnd - pipe(c) >= mss:
        hole = next_lost(c)
        if hole is None:
            break
        seq, n = hole
        c.retransmit(seq, n, now)
        c.high_rxt = seq_add(seq, n)
    c.push(now)  # new data as the pipe allows (push limits itself by the pipe during recovery)
