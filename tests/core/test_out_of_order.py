"""The out-of-order queue under a SegmentSmack-style flood (CVE-2018-5390), and its correctness.

* a model-based property: any mix of overlapping, touching and distant segments, and of in-order
  data that pulls blocks out, leaves exactly the bytes a byte-by-byte model holds, in sorted,
  disjoint, coalesced blocks, with exact accounting and truthful SACK blocks, across the wrap;
* the flood: 30,000 one-byte segments at every other sequence number into one ESTABLISHED
  connection on the virtual clock. The work per segment (lines of the stack's Python executed for
  the segment and its ACK, counted with a tracer: no timings) is the same at 30,000 queued blocks as
  at the first; the queue's memory, accounted and measured, stays under the connection's bound;
* the budget: past `recv_memory` higher blocks are pruned (never below the new segment, never
  what was SACKed and is still kept) or the segment is dropped, counted as Linux counts it; in-order
  data makes the out-of-order queue give way.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.budget import recv_memory
from stack.tcp.config import Config
from stack.tcp.connection import Connection
from stack.tcp.host import Host
from stack.tcp.ofo import BLOCK_COST, CHUNK_COST, OutOfOrderQueue
from stack.tcp.seq import MASK, seq_add, seq_sub
from stack.wire.segment import ACK, SYN, Segment, TcpOptions

STACK_DIR = str(Path(__file__).resolve().parents[2] / "stack")
LOCAL, REMOTE, PORT, RPORT = "198.18.0.2", "198.18.0.1", 80, 40000
IRS = 5000


# ---------------------------------------------------------------------------------------------- model
def check_invariants(q: OutOfOrderQueue, rcv_nxt: int, model: dict[int, int]) -> None:
    """`model`: offset from rcv_nxt -> byte, for every byte the queue should hold."""
    assert len(q.starts) == len(q.ends) == len(q.chunks)
    got: dict[int, int] = {}
    for k, (s, e, chunks) in enumerate(zip(q.starts, q.ends, q.chunks, strict=True)):
        assert s < e and sum(map(len, chunks)) == e - s and all(chunks)
        if k:
            assert q.ends[k - 1] < s, "blocks must neither overlap nor touch"
        data = b"".join(chunks)
        for n, byte in enumerate(data):
            got[seq_sub(seq_add(q.base, s + n), rcv_nxt)] = byte
    assert got == model
    assert q.nbytes == len(model)
    assert q.nchunks == sum(map(len, q.chunks))
    assert q.mem == q.nbytes + BLOCK_COST * len(q.starts) + CHUNK_COST * q.nchunks
    # SACK blocks: at most 4, each within one block of the queue (never more than is held).
    assert len(q.sack) <= 4
    for a, b in q.sack:
        assert any(s <= a < b <= e for s, e in zip(q.starts, q.ends, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([0, 1000, MASK - 50, MASK - 3000]),
    ops=st.lists(st.tuples(st.integers(1, 400), st.integers(1, 60), st.integers(0, 9)), min_size=1, max_size=80),
)
def test_queue_matches_a_byte_model_through_inserts_pulls_and_the_wrap(
    start: int, ops: list[tuple[int, int, int]]
) -> None:
    rcv_nxt = start
    q = OutOfOrderQueue(rcv_nxt)
    model: dict[int, int] = {}
    for offset, length, kind in ops:
        if kind == 0:
            # In-order data of `length` bytes arrives: RCV.NXT moves, then the queue's blocks follow.
            rcv_nxt = seq_add(rcv_nxt, length)
            model = {k - length: v for k, v in model.items() if k >= length}
            chunks, new_nxt = q.pull(rcv_nxt)
            pulled = b"".join(chunks)
            moved = seq_sub(new_nxt, rcv_nxt)
            assert moved == len(pulled)
            for n, byte in enumerate(pulled):
                assert model.pop(n) == byte
            model = {k - moved: v for k, v in model.items()}
            assert 0 not in model
            rcv_nxt = new_nxt
        else:
            payload = bytes((offset + n + kind) & 0xFF for n in range(length))
            q.insert(seq_add(rcv_nxt, offset), payload)
            for n, byte in enumerate(payload):
                model.setdefault(offset + n, byte)  # bytes already held are kept
            s = seq_sub(seq_add(rcv_nxt, offset), q.base)
            first = q.sack[0]
            assert first[0] <= s and s + length <= first[1], "the newest segment's block comes first"
        check_invariants(q, rcv_nxt, model)


def test_sack_blocks_newest_first_and_swallowed_ones_forgotten() -> None:
    q = OutOfOrderQueue(0)
    for seq in (10, 30, 50, 70, 90):
        q.insert(seq, b"x" * 5)
    assert q.sack_blocks(4) == ((90, 95), (70, 75), (50, 55), (30, 35))
    q.insert(35, b"y" * 15)  # joins 30..35 and 50..55
    assert q.sack_blocks(4) == ((30, 55), (90, 95), (70, 75))
    chunks, nxt = q.pull(10)
    assert b"".join(chunks) == b"x" * 5 and nxt == 15
    assert q.sack_blocks(3) == ((30, 55), (90, 95), (70, 75))
    assert q.pop_last() and q.sack_blocks(3) == ((30, 55), (70, 75))


# ---------------------------------------------------------------------------------------------- the flood
def established(config: Config) -> tuple[Host, Connection, int]:
    """An ESTABLISHED server connection (SACK on), driven by hand; returns (host, conn, our ISS + 1)."""
    host = Host(LOCAL, config)
    host.record_state_changes = False
    host.listen(PORT)
    host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS, 0, SYN, 65535, 0,
                            TcpOptions(mss=1460, wscale=7, sack_permitted=True)), 0.0)
    synack = host.take(host.ctx.now).segments[0]
    host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 1, synack.seq + 1, ACK, 65535), 0.0)
    host.take(host.ctx.now)
    return host, host.connections[(LOCAL, PORT, REMOTE, RPORT)], synack.seq + 1


def read(conn: Connection, now: float) -> bytes:
    assert conn.handle is not None
    return conn.handle.receive(now)


class LineCounter:
    """Counts the lines of the stack's own Python code executed while active (a tracer, not a clock)."""

    def __init__(self) -> None:
        self.lines = 0

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if not frame.f_code.co_filename.startswith(STACK_DIR):
            return None
        if event == "line":
            self.lines += 1
        return self._trace

    def __enter__(self) -> LineCounter:
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)


def flood(host: Host, ack: int, first: int, count: int, t0: float) -> None:
    for i in range(first, first + count):
        host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 2 + 2 * i, ack, ACK, 65535, 0, TcpOptions(),
                                b"x"), t0 + 0.001 * i)
        out = host.take(host.ctx.now).segments
        assert out and out[0].options.sack_blocks  # each is answered at once, with SACK blocks


def test_a_30000_segment_flood_costs_the_same_per_segment_and_stays_under_its_bound() -> None:
    host, conn, ack = established(Config(secret=b"o" * 16))
    sample = 300
    with LineCounter() as early:
        flood(host, ack, 0, sample, 1.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    flood(host, ack, sample, 30_000 - 2 * sample, 1.0)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    with LineCounter() as late:
        flood(host, ack, 30_000 - sample, sample, 1.0)
    recv = conn.recv
    assert recv.ooo is not None and len(recv.ooo) == 30_000  # every segment kept: within the budget
    assert host.counters["TCPOFOQueue"] == 30_000 and host.counters["TCPOFODrop"] == 0
    # Flat: the work for a segment (and its ACK) at 30,000 blocks is that at the first 300.
    per_early, per_late = early.lines / sample, late.lines / sample
    assert per_late <= per_early * 1.05 + 2, (per_early, per_late)
    # Bounded: what the queue is charged for stays under the limit, and really is what it uses.
    assert recv.mem <= recv_memory(conn)
    assert grown <= recv.ooo_mem
    assert host.memory.allocated == recv.mem


def test_past_the_budget_the_flood_is_dropped_and_counted() -> None:
    """With a 64 KiB window (128 KiB of receive memory), the flood fills the budget and the rest
    is dropped: the new segment is always the highest, so there is nothing above it to prune."""
    host, conn, ack = established(Config(secret=b"o" * 16, recv_buffer=64 << 10))
    flood(host, ack, 0, 200, 1.0)
    for i in range(200, 20_000):
        host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 2 + 2 * i, ack, ACK, 65535, 0, TcpOptions(),
                                b"x"), 1.0 + 0.001 * i)
        host.take(host.ctx.now)
        assert conn.recv.mem <= recv_memory(conn) == 128 << 10
    c = host.counters
    kept = len(conn.recv.ooo or ())
    assert 0 < kept < 20_000 and c["TCPOFOQueue"] == kept
    assert c["TCPOFODrop"] == 20_000 - kept == c["PruneCalled"] and c["OfoPruned"] == 0
    # The first gap fills: the block after it is delivered with it.
    host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 1, ack, ACK, 65535, 0, TcpOptions(), b"y"), 30.0)
    host.take(host.ctx.now)
    assert read(conn, 30.0) == b"yx" and len(conn.recv.ooo or ()) == kept - 1
    # One segment covering every other gap: the queue empties, and all memory is given back.
    rest = b"y" * (2 * kept)
    host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 3, ack, ACK, 65535, 0, TcpOptions(), rest), 31.0)
    host.take(host.ctx.now)
    assert read(conn, 31.0) == rest
    assert conn.recv.ooo is None and conn.recv.mem == 0 == host.memory.allocated


def test_a_lower_segment_prunes_the_highest_blocks_first() -> None:
    host, conn, ack = established(Config(secret=b"o" * 16, recv_buffer=64 << 10))
    recv = conn.recv
    # Fill the budget with 10-byte blocks in the upper half of the 64 KiB window.
    for i in range(2000):
        host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 30_001 + 20 * i, ack, ACK, 65535, 0,
                                TcpOptions(), b"h" * 10), 1.0)
        host.take(host.ctx.now)
        if host.counters["TCPOFODrop"]:
            break
    assert host.counters["TCPOFODrop"] == 1 and recv.ooo is not None
    highest = recv.ooo.last_start()
    blocks = len(recv.ooo)
    # A segment below all of them makes room by dropping from the top (Linux tcp_prune_ofo_queue).
    host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, IRS + 1001, ack, ACK, 65535, 0, TcpOptions(), b"l" * 1000),
                    2.0)
    (dup,) = host.take(host.ctx.now).segments
    c = host.counters
    assert c["OfoPruned"] == 1 and c["PruneCalled"] == 2
    assert recv.ooo.starts[0] == seq_sub(IRS + 1001, recv.ooo.base)  # the low segment is queued
    assert seq_sub(recv.ooo.last_start(), highest) < 0 and len(recv.ooo) < blocks + 1
    assert recv.mem <= recv_memory(conn)
    held = list(zip(recv.ooo.starts, recv.ooo.ends, strict=True))
    for left, right in dup.options.sack_blocks:  # no SACK block reports data that was dropped
        a, b = seq_sub(left, recv.ooo.base), seq_sub(right, recv.ooo.base)
        assert any(s <= a < b <= e for s, e in held)


def test_in_order_data_makes_the_out_of_order_queue_give_way() -> None:
    """1-byte blocks fill the budget, then the application lets in-order data pile up: the blocks
    are pruned for it instead of the in-order data being dropped."""
    host, conn, ack = established(Config(secret=b"o" * 16, recv_buffer=64 << 10, recv_memory=96 << 10))
    base = IRS + 1 + 40_000
    for i in range(2000):
        host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, base + 2 * i, ack, ACK, 65535, 0, TcpOptions(), b"z"),
                        1.0)
        host.take(host.ctx.now)
        if host.counters["TCPOFODrop"]:
            break
    assert host.counters["TCPOFODrop"] == 1
    seq = IRS + 1
    for _ in range(27):  # 27 x 1000 bytes in order, unread, within the window
        host.on_segment(Segment(REMOTE, LOCAL, RPORT, PORT, seq, ack, ACK, 65535, 0, TcpOptions(), b"d" * 1000), 2.0)
        host.take(host.ctx.now)
        seq += 1000
    c = host.counters
    assert conn.recv.ready_len == 27_000 and c["TCPRcvQDrop"] == 0
    assert c["OfoPruned"] >= 1 and conn.recv.mem <= recv_memory(conn)
