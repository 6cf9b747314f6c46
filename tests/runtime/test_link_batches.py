"""TUN queue I/O without a device: a SOCK_SEQPACKET socket pair keeps packet boundaries as a TUN fd
does, so read_batch's bounds and write_batch's gathered packets can be checked anywhere."""

from __future__ import annotations

import os
import socket

from stack.link.tun import READ_BATCH_BYTES, TunQueue


def _queue_pair() -> tuple[TunQueue, socket.socket]:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    for s in (ours, kernel):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    queue = TunQueue(os.dup(ours.fileno()), 0, name=None, netns="none", offload=True)
    ours.close()
    return queue, kernel


def test_read_batch_stops_at_its_byte_bound_and_leaves_the_rest_for_the_next() -> None:
    queue, kernel = _queue_pair()
    try:
        big = [bytes([i]) * 60_000 for i in range(10)]
        for packet in big:
            kernel.send(packet)
        first = queue.read_batch(256)
        # Whole packets only, and no more once the bound is reached.
        assert first == big[: len(first)]
        assert sum(map(len, first[:-1])) < READ_BATCH_BYTES <= sum(map(len, first))
        rest: list[bytes] = []
        while len(first) + len(rest) < len(big):
            more = queue.read_batch(256)
            assert more
            rest += more
        assert first + rest == big
        assert queue.read_batch() == []
        # Small packets: the packet count bounds the batch.
        for i in range(300):
            kernel.send(i.to_bytes(2, "big") * 50)
        assert len(queue.read_batch(256)) == 256
        assert len(queue.read_batch(256)) == 44
        assert queue.stats.rx_packets == 310
    finally:
        queue.close()
        kernel.close()


def test_write_batch_sends_a_tuple_of_parts_as_one_packet() -> None:
    queue, kernel = _queue_pair()
    try:
        parts = (b"\x01" * 10, b"\x02" * 52, b"\x03" * 64_000)
        assert queue.write_batch([b"plain", parts, b"last"]) == 3
        assert [kernel.recv(1 << 17) for _ in range(3)] == [b"plain", b"".join(parts), b"last"]
        assert queue.stats.tx_packets == 3
        assert queue.stats.tx_bytes == 5 + sum(map(len, parts)) + 4
    finally:
        queue.close()
        kernel.close()
