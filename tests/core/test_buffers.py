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


def test_send_buffer_keeps_bytes_writes_as_they_are_and_copies_mutable_ones() -> None:
    buf = SendBuffer(1 << 20, 0xFFFF_FF00)  # sequence numbers wrap inside the buffer
    write = b"w" * 65_000
    assert buf.append(write) == 65_000
    assert buf.slice(0xFFFF_FF00, 65_000) is write  # the whole write is the segment: no copy
    mutable = bytearray(b"m" * 1000)
    assert buf.append(mutable) == 1000
    mutable[:] = b"x" * 1000  # the application reuses its buffer: what we queued is unchanged
    assert buf.slice((0xFFFF_FF00 + 65_000) & 0xFFFFFFFF, 1000) == b"m" * 1000
    assert buf.append(memoryview(b"0123456789")[2:7]) == 5
    # A segment across three writes, and its end marked as a push.
    seq = (0xFFFF_FF00 + 64_990) & 0xFFFFFFFF
    assert buf.slice(seq, 1015) == b"w" * 10 + b"m" * 1000 + b"23456"
    assert buf.push_in(seq, 1015)
    assert len(buf) == 66_005 and buf.end_seq() == (0xFFFF_FF00 + 66_005) & 0xFFFFFFFF


def test_send_buffer_acknowledges_piece_by_piece_and_stays_right_after_compaction() -> None:
    buf = SendBuffer(1 << 20, 1)
    stream = b"".join(bytes([i % 251]) * (1 + i % 7) for i in range(2000))
    at = 0
    for i in range(2000):
        size = 1 + i % 7
        assert buf.append(stream[at : at + size]) == size
        at += size
    acked = 0
    for step in (3, 1, 500, 2, 4000, 77, 1):  # inside pieces, across many, one byte
        assert buf.ack_to(1 + acked + step) == step
        acked += step
        assert len(buf) == len(stream) - acked
        for offset, n in ((0, 1), (0, 50), (5, 300), (len(buf) - 9, 9)):
            assert buf.slice(1 + acked + offset, n) == stream[acked + offset : acked + offset + n]
    assert buf.ack_to(1 + len(stream)) == len(stream) - acked
    assert len(buf) == 0 and buf.free == 1 << 20
    assert buf.append(b"again") == 5 and buf.slice(1 + len(stream), 5) == b"again"
