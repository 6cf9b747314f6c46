"""The send buffer's slices and the receive queue's hand-over: what the bulk paths rely on to copy
a 64 KB segment as few times as possible, with the bytes and the memory accounting unchanged."""

from __future__ import annotations

from stack.tcp.budget import MemoryPool
from stack.tcp.buffers import ReceiveQueue, SendBuffer
from stack.tcp.counters import Counters


def test_slice_small_and_large_give_the_bytes_and_leave_the_buffer_resizable() -> None:
    buf = SendBuffer(1 << 20, 1000)
    stream = bytes(range(256)) * 1024  # 256 KiB
    assert buf.append(stream) == len(stream)
    for offset, n in ((0, 100), (5, 1448), (7, 65_483), (100_000, 8192)):
        piece = buf.slice(1000 + offset, n)
        assert type(piece) is bytes and piece == stream[offset : offset + n]
    # No view of the buffer outlives a slice: acknowledging (a resize) still works.
    assert buf.ack_to(1000 + 70_000) == 70_000
    assert buf.slice(1000 + 70_000, 65_483) == stream[70_000 : 70_000 + 65_483]
    assert buf.append(b"more") == 4


def test_take_chunks_hands_large_segments_on_as_they_came_and_joins_small_runs() -> None:
    pool = MemoryPool((1 << 30, 1 << 31, 1 << 32), Counters())
    queue = ReceiveQueue(pool)
    large1, large2 = b"a" * 65_000, b"b" * 20_000
    small = [b"x" * 100, b"y" * 200, b"z" * 300]
    for piece in (small[0], small[1], large1, small[2], large2):
        queue.add(piece)
    assert pool.allocated == queue.ready_len == 100 + 200 + 65_000 + 300 + 20_000
    pieces = queue.take_chunks()
    assert pieces == [b"x" * 100 + b"y" * 200, large1, b"z" * 300, large2]
    assert pieces[1] is large1 and pieces[3] is large2  # not copied
    assert all(type(p) is bytes for p in pieces)
    assert queue.ready_len == 0 and pool.allocated == 0
    assert queue.take_chunks() == [] and queue.take() == b""


def test_take_chunks_is_take_in_pieces() -> None:
    a, b = ReceiveQueue(), ReceiveQueue()
    data = [bytes([i]) * n for i, n in enumerate((10, 70_000, 16_384, 16_383, 1, 30_000))]
    for piece in data:
        a.add(piece)
        b.add(piece)
    assert b"".join(a.take_chunks()) == b.take() == b"".join(data)
