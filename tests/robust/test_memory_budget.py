"""The host's memory budget (Linux `tcp_mem`, `Config.memory_limits`): pressure, then drops.

A peer with many connections that sends and never lets the application read (or never reads what
it is sent) must not exhaust the process. Every byte queued on any connection is charged to the
host's `MemoryPool`: above `pressure` the host enters memory pressure once (`TCPMemoryPressures`)
and receive windows stop growing; above `high` connections may queue no more than a minimum
(received data beyond it is dropped, `TCPRcvQDrop`/`TCPOFODrop`; the application may queue
`SNDBUF_MIN` to send), and an orphan still holding data to send is reset (`TCPAbortOnMemory`).
When every connection is gone, the account is back at zero.
"""

from __future__ import annotations

from typing import Any

from stack.tcp.budget import RMEM_MIN
from stack.tcp.buffers import SNDBUF_MIN
from stack.tcp.config import Config
from stack.tcp.handle import ConnectionHandle
from stack.tcp.sender import send_ack
from stack.tcp.seq import seq_sub
from stack.tcp.states import State
from stack.wire.segment import Segment
from tests.scenarios.pair import PORT, Pair

S = State
KIB = 1024
LIMITS = (256 * KIB, 512 * KIB, 1024 * KIB)


def pair() -> Pair:
    """Client `a` unbounded; server `b` with a 1 MiB hard limit."""
    return Pair(config_a=Config(secret=b"a" * 16), config_b=Config(secret=b"b" * 16, memory_limits=LIMITS))


def connect_many(p: Pair, n: int) -> list[tuple[ConnectionHandle, ConnectionHandle]]:
    pairs: list[Any] = [p.connect() for _ in range(n)]  # handles (Pair.connect's annotation predates them)
    return pairs


def test_pressure_is_entered_once_windows_stop_growing_and_it_ends_below_low() -> None:
    p = pair()
    conns = connect_many(p, 12)
    pool = p.b.memory
    for client, _server in conns:  # 12 x 64 KiB, never read: 768 KiB, past `pressure`
        client.send(b"p" * 64 * KIB, p.now)
    p.link.run(2.0)
    assert pool.under_pressure and pool.allocated > LIMITS[1]
    assert p.b.counters["TCPMemoryPressures"] == 1
    # Under pressure the window's right edge stays where it is when the application reads: the
    # room is capped at 4 segments (Linux: rcv_ssthresh <= 4 * advmss), less than already offered.
    _, server = conns[0]
    tcb = p.b.tcb(server)
    edge = tcb.rcv_adv
    assert server.receive(p.now) and pool.under_pressure
    send_ack(tcb, p.b.context(p.now))
    assert tcb.rcv_adv == edge
    # Reading everything brings the account below `low`: pressure ends, the window grows again.
    for _, s in conns:
        s.receive(p.now)
    assert not pool.under_pressure and pool.allocated == 0
    send_ack(tcb, p.b.context(p.now))
    assert seq_sub(tcb.rcv_adv, edge) > 63 * KIB  # by the 64 KiB read (to the scale's granularity)
    assert p.b.counters["TCPMemoryPressures"] == 1


def test_a_many_connection_peer_cannot_queue_past_the_hard_limit() -> None:
    p = pair()
    conns = connect_many(p, 40)
    for client, _ in conns:  # 40 x 256 KiB offered = 10 MiB against a 1 MiB limit
        client.send(b"m" * 256 * KIB, p.now)
    p.link.run(5.0)
    pool = p.b.memory
    # Past `high` a connection may only reach RMEM_MIN (plus the segment that crosses it).
    assert pool.allocated <= LIMITS[2] + len(conns) * (RMEM_MIN + 64 * KIB)
    assert p.b.counters["TCPRcvQDrop"] > 0
    # Nothing is lost: as the application reads, the dropped data comes again.
    got = {id(s): 0 for _, s in conns}
    for _ in range(400):
        for _, s in conns:
            got[id(s)] += len(s.receive(p.now))
        if all(v == 256 * KIB for v in got.values()):
            break
        p.link.run(0.5)
    assert all(v == 256 * KIB for v in got.values())
    assert pool.allocated == 0


def test_over_the_limit_sends_are_held_to_the_minimum_and_orphans_with_data_are_reset() -> None:
    blackholed: set[int] = set()  # server ports whose segments to the client are lost

    def blackhole(seg: Segment, now: float) -> list[tuple[Segment, float]]:
        return [] if seg.src_port == PORT and seg.dst_port in blackholed else [(seg, 0.0)]

    p = Pair(config_a=Config(secret=b"a" * 16), config_b=Config(secret=b"b" * 16, memory_limits=LIMITS),
             hooks=[blackhole])
    (c1, filler), (_, other), (c3, holder) = connect_many(p, 3)
    blackholed.add(c3.four_tuple[1])
    assert holder.send(b"h" * 64 * KIB, p.now) == 64 * KIB  # before the limit: all of it, never acked
    c1.send(b"f" * 1100 * KIB, p.now)  # unread by the server: the host goes past `high`
    p.link.run(2.0)
    assert p.b.memory.exhausted and filler.recv_queue_len > LIMITS[2] - 64 * KIB
    # Past the limit the application may queue only a little to send, so that it makes progress.
    assert other.send(b"s" * 64 * KIB, p.now) == SNDBUF_MIN
    assert other.send(b"s", p.now) == 0
    other.close(p.now)  # it holds no more than the minimum: a normal close (FIN)
    assert other.state is S.FIN_WAIT_1 and p.b.counters["TCPAbortOnMemory"] == 0
    # An orphan that would keep 64 KiB queued is reset instead (Linux tcp_out_of_memory).
    holder.close(p.now)
    assert holder.state is S.CLOSED and p.b.counters["TCPAbortOnMemory"] == 1
    # When everything is gone, so is every byte of the account.
    for handle in p.b.handles():
        handle.abort(p.now)
    assert not p.b.connections and p.b.memory.allocated == 0
