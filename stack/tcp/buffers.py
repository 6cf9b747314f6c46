"""Send and receive buffers of a connection.

The send buffer holds every byte from SND.UNA on (sent-but-unacknowledged, then not-yet-sent), so a
retransmission is a slice. The receive queue holds in-order data the application has not read yet
and out-of-order blocks waiting for a gap to fill (RFC 9293 §3.10.7.4 SHLD-31), from which the SACK
blocks of RFC 2018 are derived. Both keep data in the pieces it came in (a write, a segment), so
queueing, acknowledging and reading move no bytes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import TYPE_CHECKING

from stack.tcp.ofo import OutOfOrderQueue
from stack.tcp.seq import seq_add, seq_lt, seq_sub

if TYPE_CHECKING:
    from stack.tcp.budget import MemoryPool

SNDBUF_MIN = 4608  # what a send buffer may always hold (Linux SOCK_MIN_SNDBUF)


class SendBuffer:
    """Bytes from SND.UNA on, and where each write ended (its push mark). With a `MemoryPool`,
    the bytes are charged to it; while the pool is over its hard limit a buffer takes no more than
    `SNDBUF_MIN` (Linux: writes wait for memory, but a socket may always queue a little, so that
    every connection can make progress).

    The bytes are kept as the writes brought them, one piece per write, like Linux's skb queue:
    a `bytes` write is kept as that very object (it cannot change under us), so queueing a 1 MB
    write copies nothing and acknowledging drops whole pieces; a segment inside one piece is one
    slice of it. Anything mutable (bytearray, memoryview) is copied when written."""

    __slots__ = ("_acked", "_head", "_len", "_marks", "_pieces", "_starts", "capacity", "pool", "seq")

    def __init__(self, capacity: int, seq: int, pool: MemoryPool | None = None) -> None:
        self.capacity = capacity
        self.seq = seq  # sequence number of the first unacknowledged byte (SND.UNA)
        self.pool = pool
        # Where each write ended, as offsets in the byte stream (bytes written before it plus its
        # own length: no wrap-around), oldest first; dropped once acknowledged. Linux marks the
        # last segment of every write with PSH (tcp_push); so does the sender, from these. Made at
        # the first write: an idle connection keeps no deque.
        self._marks: deque[int] | None = None
        self._acked = 0  # stream offset of SND.UNA
        self._len = 0  # bytes from SND.UNA on
        # The pieces from index `_head` on, and the stream offset each starts at (the first may
        # start before SND.UNA: partly acknowledged). Made at the first write, as the marks.
        self._pieces: list[bytes] | None = None
        self._starts: list[int] | None = None
        self._head = 0

    def __len__(self) -> int:
        return self._len

    @property
    def free(self) -> int:
        room = self.capacity - self._len
        if self.pool is not None and self.pool.exhausted:
            room = min(room, SNDBUF_MIN - self._len)
        return max(0, room)

    def append(self, payload: bytes | bytearray | memoryview, segment: int = 0, half_window: int = 0) -> int:
        """Queue as much of `payload` as fits; returns how many bytes were taken.

        The write's end is a push mark. With `segment` and `half_window` (half the peer's largest
        window), so is every `segment`-sized piece of it that ends more than `half_window` bytes
        after the previous mark: Linux's forced_push in tcp_sendmsg, which lets a receiver with a
        small window deliver a long write early."""
        take = min(len(payload), self.free)
        if take:
            start = self._acked + self._len
            piece = payload if type(payload) is bytes and take == len(payload) else bytes(payload[:take])
            pieces = self._pieces
            if pieces is None:
                self._pieces = [piece]
                self._starts = [start]
            else:
                pieces.append(piece)
                self._starts.append(start)  # type: ignore[union-attr]  # made with the pieces
            self._len += take
            marks = self._marks
            if marks is None:
                marks = self._marks = deque()
            end = start + take
            if segment > 0 and half_window > 0:
                last = marks[-1] if marks else self._acked
                at = start + segment
                while at < end:
                    if at - last > half_window:
                        marks.append(at)
                        last = at
                    at += segment
            marks.append(end)
            if self.pool is not None:
                self.pool.charge(take)
        return take

    def slice(self, seq: int, n: int) -> bytes:
        """`n` bytes starting at sequence number `seq` (which must lie inside the buffer)."""
        pieces = self._pieces
        starts = self._starts
        if pieces is None or starts is None or n <= 0:
            return b""  # e.g. a FIN retransmitted alone
        at = self._acked + seq_sub(seq, self.seq)  # stream offset
        n = min(n, self._acked + self._len - at)  # as a slice of the bytes: never past the end
        if n <= 0:
            return b""
        i = bisect_right(starts, at, self._head) - 1
        piece = pieces[i]
        offset = at - starts[i]
        if offset + n <= len(piece):
            # Inside one write (every segment of a bulk write): one slice, or the write itself.
            return piece if n == len(piece) else piece[offset : offset + n]
        parts = [piece[offset:]]
        need = n - len(parts[0])
        while need > 0:
            i += 1
            piece = pieces[i]
            parts.append(piece[:need] if need < len(piece) else piece)
            need -= len(parts[-1])
        return b"".join(parts)

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
        n = min(max(seq_sub(ack, self.seq), 0), self._len)
        if n:
            self.seq = seq_add(self.seq, n)
            self._acked += n
            self._len -= n
            acked = self._acked
            pieces = self._pieces
            starts = self._starts
            assert pieces is not None and starts is not None
            head = self._head
            last = len(pieces)
            while head < last and starts[head] + len(pieces[head]) <= acked:
                pieces[head] = b""  # its bytes are freed now, the list shrinks below
                head += 1
            if head == last:
                self._pieces = self._starts = None  # all acknowledged: an idle connection keeps no list
                head = 0
            elif head > 32 and head * 2 > last:
                del pieces[:head], starts[:head]
                head = 0
            self._head = head
            marks = self._marks
            while marks and marks[0] <= acked:
                marks.popleft()
            if marks is not None and not marks:
                self._marks = None
            if self.pool is not None:
                self.pool.charge(-n)
        return n

    def release(self) -> None:
        """The connection is gone: give its memory back to the pool."""
        if self.pool is not None:
            if self._len:  # most connections end with nothing queued: no account to settle
                self.pool.charge(-self._len)
            self.pool = None

    def end_seq(self) -> int:
        return seq_add(self.seq, self._len)


class ReceiveQueue:
    """In-order unread data, plus the out-of-order queue (`stack.tcp.ofo`) once a gap opens.

    With a `MemoryPool` (the host's, Linux `tcp_mem`), every byte queued is charged to it and
    every byte read or dropped is given back; `release` settles the account when the connection
    is gone. Idle, the queue holds no containers at all: they are made when data arrives."""

    __slots__ = ("_chunks", "fin_seq", "ooo", "ooo_bytes", "pool", "ready_len")

    def __init__(self, pool: MemoryPool | None = None) -> None:
        # In-order unread data as the segments brought it: appending a 64 KB segment costs no copy,
        # and a read of everything that came as one segment returns that very object.
        self._chunks: deque[bytes] | None = None
        self.ready_len = 0
        self.ooo: OutOfOrderQueue | None = None  # None (false) while nothing is out of order
        self.ooo_bytes = 0  # payload held out of order (it takes room in the window)
        self.fin_seq: int | None = None  # where the peer's FIN sits, once seen (possibly ahead of a gap)
        self.pool = pool

    @property
    def ooo_mem(self) -> int:
        """Memory the out-of-order queue is charged for (payload and bookkeeping)."""
        return self.ooo.mem if self.ooo is not None else 0

    @property
    def mem(self) -> int:
        """Memory of the whole receive side (Linux sk_rmem_alloc): unread data plus out of order."""
        return self.ready_len + (self.ooo.mem if self.ooo is not None else 0)

    def insert_ooo(self, rcv_nxt: int, seq: int, payload: bytes) -> None:
        """Keep a segment that starts beyond RCV.NXT, merging it with the blocks it touches."""
        ooo = self.ooo
        if ooo is None:
            ooo = self.ooo = OutOfOrderQueue(rcv_nxt)
        grown = ooo.insert(seq, payload)
        self.ooo_bytes = ooo.nbytes
        if self.pool is not None:
            self.pool.charge(grown)

    def prune_ooo(self, floor: int) -> int:
        """Drop the highest out-of-order block if it starts at or above `floor` (Linux
        tcp_prune_ofo_queue drops from the top); returns the memory freed, 0 if none was dropped."""
        ooo = self.ooo
        if ooo is None or seq_lt(ooo.last_start(), floor):
            return 0
        freed = ooo.pop_last()
        self.ooo_bytes = ooo.nbytes
        if not ooo:
            self.ooo = None
        if self.pool is not None:
            self.pool.charge(-freed)
        return freed

    def pull_contiguous(self, rcv_nxt: int) -> int:
        """Move out-of-order data that now touches RCV.NXT into the in-order data; returns the new RCV.NXT."""
        ooo = self.ooo
        if ooo is None:
            return rcv_nxt
        before = ooo.mem
        chunks, rcv_nxt = ooo.pull(rcv_nxt)
        self.ooo_bytes = ooo.nbytes
        if self.pool is not None:
            self.pool.charge(ooo.mem - before)
        if not ooo:
            self.ooo = None
        for chunk in chunks:
            self.add(chunk)
        return rcv_nxt

    def release(self) -> None:
        """The connection is gone: give its memory back to the pool (data stays readable)."""
        if self.pool is not None:
            mem = self.mem
            if mem:
                self.pool.charge(-mem)
            self.pool = None

    def add(self, data: bytes) -> None:
        """In-order data for the application."""
        if data:
            if self._chunks is None:
                self._chunks = deque()
            self._chunks.append(data)
            self.ready_len += len(data)
            if self.pool is not None:
                self.pool.charge(len(data))

    def take_chunks(self, join_below: int = 16384) -> list[bytes]:
        """All in-order data, as the segments brought it: a segment of `join_below` bytes or more
        is handed on as the very object that arrived (a 64 KB GSO segment is not copied again),
        a run of smaller ones is joined into one piece (one call for many small segments)."""
        chunks = self._chunks
        if chunks is None:
            return []
        self._chunks = None
        pieces: list[bytes] = []
        run: list[bytes] = []
        for chunk in chunks:
            if len(chunk) < join_below:
                run.append(chunk)
                continue
            if run:
                pieces.append(_joined(run))
                run = []
            pieces.append(chunk if type(chunk) is bytes else bytes(chunk))
        if run:
            pieces.append(_joined(run))
        if self.pool is not None:
            self.pool.charge(-self.ready_len)
        self.ready_len = 0
        return pieces

    def take(self, max_bytes: int = -1) -> bytes:
        """Up to `max_bytes` of in-order data (all of it when negative), oldest first."""
        chunks = self._chunks
        if chunks is None:
            return b""
        if max_bytes < 0 or max_bytes >= self.ready_len:
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            self._chunks = None  # an idle connection keeps no deque
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
        if self.pool is not None:
            self.pool.charge(-len(data))
        return bytes(data) if type(data) is not bytes else data

    def sack_blocks(self, limit: int) -> tuple[tuple[int, int], ...]:
        """SACK blocks (RFC 2018 §4): the most recently changed block first, then the others."""
        return self.ooo.sack_blocks(limit) if self.ooo is not None else ()


def _joined(parts: list[bytes]) -> bytes:
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data if type(data) is bytes else bytes(data)
