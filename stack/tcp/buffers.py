"""Send and receive buffers of a connection.

The send buffer holds every byte from SND.UNA on (sent-but-unacknowledged, then not-yet-sent), so a
retransmission is a slice. The receive queue holds in-order data the application has not read yet
and out-of-order blocks waiting for a gap to fill (RFC 9293 §3.10.7.4 SHLD-31), from which the SACK
blocks of RFC 2018 are derived. CPython's bytearray drops a prefix without moving the rest, so
acknowledging or reading is cheap.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

from stack.tcp.seq import seq_add, seq_sub


class SendBuffer:
    """Every byte from SND.UNA on, and where each write ended (its push mark)."""

    __slots__ = ("_acked", "_marks", "capacity", "data", "seq")

    def __init__(self, capacity: int, seq: int) -> None:
        self.capacity = capacity
        self.data = bytearray()
        self.seq = seq  # sequence number of data[0]
        # Where each write ended, as offsets in the byte stream (bytes written before it plus its
        # own length: no wrap-around), oldest first; dropped once acknowledged. Linux marks the
        # last segment of every write with PSH (tcp_push); so does the sender, from these.
        self._marks: deque[int] = deque()
        self._acked = 0  # stream offset of data[0]

    def __len__(self) -> int:
        return len(self.data)

    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self.data))

    def append(self, payload: bytes | bytearray | memoryview) -> int:
        """Queue as much of `payload` as fits; returns how many bytes were taken."""
        take = min(len(payload), self.free)
        if take:
            self.data += payload[:take] if take < len(payload) else payload
            self._marks.append(self._acked + len(self.data))
        return take

    def slice(self, seq: int, n: int) -> bytes:
        """`n` bytes starting at sequence number `seq` (which must lie inside the buffer)."""
        offset = seq_sub(seq, self.seq)
        return bytes(self.data[offset : offset + n])

    def push_in(self, seq: int, n: int) -> bool:
        """Whether the `n` bytes from `seq` contain the end of a write (the segment gets PSH)."""
        start = self._acked + seq_sub(seq, self.seq)
        marks = self._marks
        if not marks or marks[-1] <= start:
            return False
        i = bisect_right(marks, start)
        return marks[i] <= start + n

    def ack_to(self, ack: int) -> int:
        """Drop the bytes acknowledged by `ack`; returns how many were dropped."""
        n = min(max(seq_sub(ack, self.seq), 0), len(self.data))
        if n:
            del self.data[:n]
            self.seq = seq_add(self.seq, n)
            self._acked += n
            marks = self._marks
            while marks and marks[0] <= self._acked:
                marks.popleft()
        return n

    def end_seq(self) -> int:
        return seq_add(self.seq, len(self.data))


class ReceiveQueue:
    """In-order unread data plus out-of-order blocks keyed by their first sequence number."""

    __slots__ = ("_chunks", "fin_seq", "ooo", "ooo_bytes", "ready_len", "recent")

    def __init__(self) -> None:
        # In-order unread data as the segments brought it: appending a 64 KB segment costs no copy,
        # and a read of everything that came as one segment returns that very object.
        self._chunks: deque[bytes] = deque()
        self.ready_len = 0
        # Out-of-order blocks as [start_seq, bytes], kept sorted by offset from RCV.NXT, non-overlapping.
        self.ooo: list[tuple[int, bytes]] = []
        self.ooo_bytes = 0
        self.fin_seq: int | None = None  # where the peer's FIN sits, once seen (possibly ahead of a gap)
        self.recent: int | None = None  # start of the block most recently extended (first SACK block)

    def insert_ooo(self, rcv_nxt: int, seq: int, payload: bytes) -> None:
        """Keep a segment that starts beyond RCV.NXT, merging it with overlapping or adjacent blocks."""
        start = seq_sub(seq, rcv_nxt)
        end = start + len(payload)
        merged_start, merged_end = start, end
        pieces: list[tuple[int, bytes]] = []
        keep: list[tuple[int, bytes]] = []
        for block_seq, block in self.ooo:
            b_start = seq_sub(block_seq, rcv_nxt)
            b_end = b_start + len(block)
            if b_end < merged_start or b_start > merged_end:
                keep.append((block_seq, block))
            else:
                pieces.append((b_start, block))
                merged_start = min(merged_start, b_start)
                merged_end = max(merged_end, b_end)
        buf = bytearray(merged_end - merged_start)
        for b_start, block in pieces:
            buf[b_start - merged_start : b_start - merged_start + len(block)] = block
        # The new segment's bytes win where they overlap (identical in any correct peer).
        buf[start - merged_start : end - merged_start] = payload
        new_seq = seq_add(rcv_nxt, merged_start)
        keep.append((new_seq, bytes(buf)))
        keep.sort(key=lambda item: seq_sub(item[0], rcv_nxt))
        self.ooo = keep
        self.ooo_bytes = sum(len(b) for _, b in keep)
        self.recent = new_seq

    def pull_contiguous(self, rcv_nxt: int) -> int:
        """Move out-of-order blocks that now touch RCV.NXT into `ready`; returns the new RCV.NXT."""
        while self.ooo:
            block_seq, block = self.ooo[0]
            offset = seq_sub(block_seq, rcv_nxt)
            if offset > 0:
                break
            self.ooo.pop(0)
            self.ooo_bytes -= len(block)
            fresh = block[-offset:] if offset < 0 else block
            if offset < 0 and -offset >= len(block):
                continue
            self.add(fresh)
            rcv_nxt = seq_add(rcv_nxt, len(fresh))
        if not self.ooo:
            self.recent = None
        return rcv_nxt

    def add(self, data: bytes) -> None:
        """In-order data for the application."""
        if data:
            self._chunks.append(data)
            self.ready_len += len(data)

    def take(self, max_bytes: int = -1) -> bytes:
        """Up to `max_bytes` of in-order data (all of it when negative), oldest first."""
        chunks = self._chunks
        if max_bytes < 0 or max_bytes >= self.ready_len:
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            parts: list[bytes] = []
            want = max_bytes
            while want:
                head = chunks[0]
                if len(head) <= want:
                    parts.append(chunks.popleft())
                    want -= len(head)
                else:
                    parts.append(head[:want])
                    chunks[0] = head[want:]
                    want = 0
            data = b"".join(parts)
        self.ready_len -= len(data)
        return bytes(data) if type(data) is not bytes else data

    def sack_blocks(self, limit: int) -> tuple[tuple[int, int], ...]:
        """SACK blocks (RFC 2018 §4): the most recently changed block first, then the others."""
        if not self.ooo:
            return ()
        blocks = [(s, seq_add(s, len(b))) for s, b in self.ooo]
        blocks.sort(key=lambda blk: blk[0] != self.recent)
        return tuple(blocks[:limit])
