"""SYN flood: 100,000 SYNs from spoofed sources. Memory stays bounded (the backlog holds 256
embryos, the rest get stateless SYN cookies, RFC 4987 §3.6), an established connection keeps
working, and a legitimate client still gets in through a cookie."""

from __future__ import annotations

import random

from stack.tcp.config import Config
from stack.tcp.states import State
from stack.wire.segment import ACK, SYN, Segment, TcpOptions
from tests.scenarios.pair import B_ADDR, PORT, Pair

S = State


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_syn_flood_is_absorbed_by_the_backlog_and_cookies() -> None:
    p = Pair(Config(msl=1.0, secret=b"f" * 16))
    client, server = p.connect()
    flood = random.Random(7)
    host = p.b
    host.record_state_changes = False
    before = rss()
    for i in range(100_000):
        src = f"198.{18 + (i & 1)}.{flood.randrange(256)}.{flood.randrange(1, 255)}"
        syn = Segment(src, B_ADDR, flood.randrange(1024, 65536), PORT, flood.getrandbits(32), 0, SYN, 65535,
                      0, TcpOptions(mss=1460))
        host.on_segment(syn, p.now)
        if i % 1000 == 0:
            host.take()  # the SYN-ACKs go nowhere: the sources are spoofed
    host.take()
    grown = rss() - before
    assert len(host.connections) <= 256 + 1  # the backlog, plus the real connection
    assert host.counters["SyncookiesSent"] >= 100_000 - 256
    assert grown < 64 * 1024 * 1024, f"memory grew by {grown} bytes"
    # The established connection still carries data both ways.
    client.send(b"still here", p.now)
    p.link.run(0.1)
    assert server.receive(p.now) == b"still here"
    # A legitimate client arrives while the backlog is full: its handshake completes via a cookie.
    late = p.a.connect(B_ADDR, PORT, p.now)
    p.run_until(lambda: late.state is S.ESTABLISHED)
    p.link.run(0.1)
    assert host.counters["SyncookiesRecv"] == 1
    accepted = host.connections[(B_ADDR, PORT, late.four_tuple[0], late.four_tuple[1])]
    assert accepted.state is S.ESTABLISHED and not accepted.ts_ok  # only the MSS survives a cookie
    late.send(b"via cookie", p.now)
    p.link.run(0.1)
    assert accepted.receive(p.now) == b"via cookie"
    # The embryos of the flood time out (SYN-ACK retries) and the table drains.
    p.link.run(200.0)
    assert len(host.connections) == 2


def test_forged_cookie_ack_is_reset() -> None:
    p = Pair(Config(msl=1.0, syn_backlog=0, secret=b"f" * 16))
    host = p.b
    forged = Segment("198.18.7.7", B_ADDR, 5555, PORT, 1000, 123456, ACK, 65535)
    host.on_segment(forged, p.now)
    out = host.take().segments
    assert [s.flags for s in out] == [0x04] and not host.connections  # RST, no connection
