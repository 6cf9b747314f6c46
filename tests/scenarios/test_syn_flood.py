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
            host.take(p.now)  # the SYN-ACKs go nowhere: the sources are spoofed
    host.take(p.now)
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
    assert accepted.state is S.ESTABLISHED
    # Window scaling and SACK rode in the cookie's TSval: both ends agree on them.
    mine = late.info()
    assert accepted.ts_ok and accepted.sack_ok and mine.sack and mine.timestamps
    assert accepted.wscale_ok and mine.snd_wscale > 0
    assert (accepted.snd_wscale, accepted.rcv_wscale) == (mine.rcv_wscale, mine.snd_wscale)
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
    out = host.take(p.now).segments
    assert [s.flags for s in out] == [0x04] and not host.connections  # RST, no connection


def test_ack_of_a_cookie_replaces_an_embryo_made_by_a_duplicate_syn() -> None:
    """A duplicated SYN may be answered once by a cookie (backlog full) and once normally (room
    again): the client completes the cookie, and its connection replaces the half-open one."""
    from tests.scenarios.pair import A_ADDR

    p = Pair(Config(msl=1.0, syn_backlog=1, secret=b"f" * 16))
    host = p.b
    syn_x = Segment("198.18.9.9", B_ADDR, 1111, PORT, 500, 0, SYN, 65535, 0, TcpOptions(mss=1460))
    host.on_segment(syn_x, p.now)  # X's embryo fills the backlog
    syn_y = Segment(A_ADDR, B_ADDR, 2222, PORT, 9000, 0, SYN, 65535, 0, TcpOptions(mss=1460))
    host.on_segment(syn_y, p.now)
    cookie = host.take(p.now).segments[-1]
    assert host.counters["SyncookiesSent"] == 1
    x = host.connections[(B_ADDR, PORT, "198.18.9.9", 1111)]
    host.on_segment(Segment("198.18.9.9", B_ADDR, 1111, PORT, 501, (x.iss + 1) % 2**32, ACK, 65535), p.now)
    host.on_segment(syn_y, p.now)  # Y's duplicate SYN: room now, a normal embryo
    embryo = host.connections[(B_ADDR, PORT, A_ADDR, 2222)]
    assert embryo.state is S.SYN_RECEIVED and embryo.iss != cookie.seq
    host.on_segment(Segment(A_ADDR, B_ADDR, 2222, PORT, 9001, (cookie.seq + 1) % 2**32, ACK, 65535,
                            0, TcpOptions(), b"hello"), p.now)
    conn = host.connections[(B_ADDR, PORT, A_ADDR, 2222)]
    assert conn is not embryo and conn.state is S.ESTABLISHED and conn.iss == cookie.seq
    assert conn.handle is not None and conn.handle.receive(p.now) == b"hello"
    assert not any(s.flags & 0x04 for s in host.take(p.now).segments)  # no RST
