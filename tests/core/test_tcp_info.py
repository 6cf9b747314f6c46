"""TCP_INFO's byte and retransmission counters in `ConnectionHandle.info()` (what `ss -i` prints)."""

from __future__ import annotations

from stack.sim import Simulator
from stack.tcp.config import Config
from stack.tcp.events import Accepted
from stack.tcp.host import Host
from stack.wire.segment import Segment


def pair(hooks: list | None = None):  # type: ignore[no-untyped-def,type-arg]
    cfg = Config(secret=b"i" * 16, rto_min=0.05, rto_initial=0.2)
    client, server = Host("198.18.0.1", cfg), Host("198.18.0.2", cfg)
    sim = Simulator([client, server], hooks=hooks or [])
    server.listen(80)
    conn = client.connect("198.18.0.2", 80, sim.now)
    sim.run(0.1)
    peer = next(e.handle for e in sim.events_of(server) if isinstance(e, Accepted))
    return sim, conn, peer


def test_bytes_sent_acked_received() -> None:
    sim, conn, peer = pair()
    data = bytes(range(256)) * 100  # 25600 bytes, several segments
    assert conn.send(data, sim.now) == len(data)
    sim.run(1.0)
    assert peer.receive(sim.now) == data
    sent, got = conn.info(), peer.info()
    assert sent.bytes_sent == len(data) and sent.bytes_retrans == 0 and sent.total_retrans == 0
    assert sent.bytes_acked == len(data)  # after the handshake (Linux counts the SYN too)
    assert got.bytes_received == len(data) and got.bytes_sent == 0
    conn.close(sim.now)
    sim.run(0.5)
    assert conn.info().bytes_acked == len(data) + 1  # and the FIN


def test_retransmissions_are_counted() -> None:
    dropped: list[Segment] = []

    def lose_first_data(seg: Segment, now: float) -> list[tuple[Segment, float]]:
        if seg.payload and not dropped:
            dropped.append(seg)
            return []
        return [(seg, 0.0)]

    sim, conn, peer = pair([lose_first_data])
    conn.send(b"x" * 1000, sim.now)
    sim.run(2.0)
    assert peer.receive(sim.now) == b"x" * 1000
    info = conn.info()
    assert info.total_retrans >= 1 and info.bytes_retrans >= 1000
    assert info.bytes_sent == 1000 + info.bytes_retrans
    assert peer.info().bytes_received == 1000
