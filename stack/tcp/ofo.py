"""The out-of-order queue: data beyond RCV.NXT waiting for a gap to fill (RFC 9293 §3.10.7.4 SHLD-31).

Data is kept in blocks: maximal runs of contiguous bytes, sorted, never overlapping and never
touching (a segment that touches or overlaps a block is merged with it). A peer that sends one
byte at every other sequence number (the SegmentSmack class, CVE-2018-5390) makes one block per
segment, so nothing here may cost time in proportion to the number of blocks: an insert finds
its neighbours by bisection over the sorted block starts and touches only the blocks it merges
with, and the SACK blocks come from a short list of recently changed blocks (RFC 2018 §4), kept
as Linux keeps `selective_acks`, not from a walk over the queue.

Positions are offsets from `base`, a sequence number at or below RCV.NXT, so that plain integer
order is sequence order (RFC 9293 §3.4: sequence numbers wrap). The queue is rebased when RCV.NXT
has moved far from it. Each block holds its bytes as a list of chunks, as the segments brought
them; small neighbouring chunks are joined (as Linux collapses small buffers), so a flood of tiny
adjacent segments neither copies a growing block nor keeps one object per byte.

The memory a block costs is counted (`mem`: payload plus a fixed cost per block and per chunk,
what Linux calls truesize), so that the connection can hold the queue to a budget and prune it
from the highest sequence numbers down (`pop_last`), as Linux's tcp_prune_ofo_queue does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from stack.tcp.seq import seq_add, seq_sub

# What a block and a chunk cost in CPython beyond their payload, rounded up: a block is two int
# objects and three list slots plus its chunk list; a chunk is a bytes object's header and a slot.
BLOCK_COST = 192
CHUNK_COST = 64
COLLAPSE = 2048  # chunks smaller than this are joined with a new neighbouring piece
SACK_KEPT = 4  # recently changed blocks remembered for SACK (RFC 2018 §4: at most 4 fit)
REBASE = 1 << 30  # RCV.NXT this far above `base`: renumber the offsets


class OutOfOrderQueue:
    __slots__ = ("base", "chunks", "ends", "mem", "nbytes", "nchunks", "sack", "starts")

    def __init__(self, base: int) -> None:
        self.base = base
        self.starts: list[int] = []  # offset of each block's first byte, ascending
        self.ends: list[int] = []  # offset just past each block's last byte, ascending
        self.chunks: list[list[bytes]] = []  # each block's bytes
        self.nbytes = 0  # payload held
        self.nchunks = 0
        self.mem = 0  # payload plus BLOCK_COST per block and CHUNK_COST per chunk
        self.sack: list[tuple[int, int]] = []  # offsets of recently changed blocks, newest first

    def __len__(self) -> int:
        return len(self.starts)

    def _account(self, payload: int, chunks: int, blocks: int) -> None:
        self.nbytes += payload
        self.nchunks += chunks
        self.mem += payload + chunks * CHUNK_COST + blocks * BLOCK_COST

    def insert(self, seq: int, payload: bytes) -> int:
        """Queue a segment starting at `seq` (beyond RCV.NXT), merging it with every block it
        touches. Bytes already queued are kept where the segment overlaps them (a correct peer
        sends the same bytes again). Returns how much `mem` grew."""
        if type(payload) is not bytes:
            payload = bytes(payload)
        before = self.mem
        s = seq_sub(seq, self.base)
        e = s + len(payload)
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, s)  # first block ending at or after s: it may touch or overlap
        j = bisect_right(starts, e, i)  # blocks [i, j) start at or before e: they all touch
        if i == j:
            starts.insert(i, s)
            ends.insert(i, e)
            self.chunks.insert(i, [payload])
            self._account(len(payload), 1, 1)
            self._remember(s, e)
            return self.mem - before
        merged = self.chunks[i]
        first, last = starts[i], ends[j - 1]
        if s < first:
            self._prepend(merged, payload[: first - s])
        for k in range(i + 1, j):  # fill each gap from the segment, then take the next block's chunks
            gap_start, gap_end = ends[k - 1], starts[k]
            self._append(merged, payload[gap_start - s : gap_end - s])
            merged.extend(self.chunks[k])
        if e > last:
            self._append(merged, payload[last - s :])
        new_start, new_end = min(first, s), max(last, e)
        if j - i > 1:
            self._account(0, 0, -(j - i - 1))
            starts[i:j] = [new_start]
            ends[i:j] = [new_end]
            self.chunks[i:j] = [merged]
        else:
            starts[i], ends[i] = new_start, new_end
        self._remember(new_start, new_end)
        return self.mem - before

    def _append(self, chunks: list[bytes], piece: bytes) -> None:
        if not piece:
            return
        if len(chunks[-1]) + len(piece) <= COLLAPSE:
            chunks[-1] = chunks[-1] + piece
            self._account(len(piece), 0, 0)
        else:
            chunks.append(piece)
            self._account(len(piece), 1, 0)

    def _prepend(self, chunks: list[bytes], piece: bytes) -> None:
        if len(chunks[0]) + len(piece) <= COLLAPSE:
            chunks[0] = piece + chunks[0]
            self._account(len(piece), 0, 0)
        else:
            chunks.insert(0, piece)
            self._account(len(piece), 1, 0)

    def _remember(self, start: int, end: int) -> None:
        """The block [start, end) just changed: it becomes the first SACK block, and the blocks it
        swallowed are forgotten (RFC 2018 §4)."""
        sack = [(a, b) for a, b in self.sack if not (start <= a and b <= end)]
        sack.insert(0, (start, end))
        del sack[SACK_KEPT:]
        self.sack = sack

    def pull(self, rcv_nxt: int) -> tuple[list[bytes], int]:
        """Take the data that now starts at or before RCV.NXT: (chunks, in order and trimmed, and
        the new RCV.NXT). Blocks wholly below RCV.NXT are dropped."""
        r = seq_sub(rcv_nxt, self.base)
        starts, ends = self.starts, self.ends
        k = bisect_right(starts, r)
        if k == 0:
            return [], rcv_nxt
        out: list[bytes] = []
        freed_bytes = sum(ends[n] - starts[n] for n in range(k)) if k > 1 else ends[0] - starts[0]
        freed_chunks = sum(len(self.chunks[n]) for n in range(k))
        if ends[k - 1] > r:
            # The last of them reaches past RCV.NXT: its bytes from RCV.NXT on are in order now.
            skip = r - starts[k - 1]
            for chunk in self.chunks[k - 1]:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                out.append(chunk[skip:] if skip else chunk)
                skip = 0
            r = ends[k - 1]
        del starts[:k]
        del ends[:k]
        del self.chunks[:k]
        self._account(-freed_bytes, -freed_chunks, -k)
        self.sack = [(a, b) for a, b in self.sack if b > r]
        if r > REBASE:
            self._rebase(r)
        return out, seq_add(self.base, r)

    def _rebase(self, r: int) -> None:
        self.base = seq_add(self.base, r)
        self.starts = [s - r for s in self.starts]
        self.ends = [e - r for e in self.ends]
        self.sack = [(a - r, b - r) for a, b in self.sack]

    def last_start(self) -> int:
        """The sequence number where the highest block starts (the queue must not be empty)."""
        return seq_add(self.base, self.starts[-1])

    def pop_last(self) -> int:
        """Drop the highest block (pruning: Linux drops from the top); returns the `mem` freed."""
        start, end, chunks = self.starts.pop(), self.ends.pop(), self.chunks.pop()
        before = self.mem
        self._account(-(end - start), -len(chunks), -1)
        self.sack = [(a, b) for a, b in self.sack if a < start]
        return before - self.mem

    def sack_blocks(self, limit: int) -> tuple[tuple[int, int], ...]:
        """Up to `limit` SACK blocks as sequence numbers, the most recently changed first."""
        base = self.base
        return tuple((seq_add(base, a), seq_add(base, b)) for a, b in self.sack[:limit])
