"""SYN cookies that cannot be forged (RFC 4987 §3.6; Linux net/ipv4/syncookies.c for the choices).

A listener whose SYN backlog is full answers with a cookie SYN,ACK and keeps nothing. The ACK that
returns the cookie must authenticate every field the cookie carries (time counter, MSS index, and
the window scale and SACK-permitted bits hidden in our TSval), and is looked at only while cookies
were sent recently: otherwise an ACK to a listener is just answered with a RST.
"""

from __future__ import annotations

import pytest

from stack.tcp.config import Config
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.tcp.syncookie import PERIOD, TS_BITS, TS_MASK, VALID, CookieInfo, check_cookie, make_cookie
from stack.wire.segment import ACK, RST, SYN, Segment, TcpOptions

S = State
LOCAL, REMOTE, PORT = "198.18.0.2", "198.18.0.1", 80
IRS = 70_000


def flooded_host(**changes: object) -> Host:
    """A host whose listener has no SYN backlog at all: every SYN is answered with a cookie."""
    host = Host(LOCAL, Config(secret=b"c" * 16, syn_backlog=0).with_changes(**changes))
    host.listen(PORT)
    return host


def cookie_synack(host: Host, now: float, options: TcpOptions, sport: int = 40000) -> Segment:
    host.on_segment(Segment(REMOTE, LOCAL, sport, PORT, IRS, 0, SYN, 65535, 0, options), now)
    (synack,) = host.take(now).segments
    assert synack.flags == SYN | ACK and host.counters["SyncookiesSent"] >= 1
    return synack


def cookie_ack(host: Host, now: float, cookie: int, options: TcpOptions | None = None, sport: int = 40000,
               payload: bytes = b"") -> list[Segment]:
    host.on_segment(Segment(REMOTE, LOCAL, sport, PORT, IRS + 1, (cookie + 1) % 2**32, ACK, 1000, 0,
                            options or TcpOptions(), payload), now)
    return host.take(now).segments


def test_flipping_the_mss_bits_of_a_genuine_cookie_is_rejected() -> None:
    """Bits 24-26 index the MSS table: a cookie made for MSS 536 must not verify as MSS 8960."""
    host = flooded_host(timestamps=False)
    synack = cookie_synack(host, 1.0, TcpOptions(mss=536))
    forged = synack.seq | (7 << 24)
    assert forged != synack.seq
    out = cookie_ack(host, 1.5, forged)
    assert not host.connections, "a cookie with forged MSS bits made a connection"
    assert [s.flags & RST for s in out] == [RST]
    assert host.counters["SyncookiesFailed"] == 1 and host.counters["SyncookiesRecv"] == 0
    # The genuine cookie still works, and carries MSS 536.
    cookie_ack(host, 1.6, synack.seq)
    (conn,) = host.connections.values()
    assert conn.state is S.ESTABLISHED and conn.snd_mss == 536


SECRET = b"k" * 16
TUPLE = (LOCAL, PORT, REMOTE, 40000)


def _genuine(ts_clock: int | None = 123_456_789) -> tuple[int, int | None]:
    return make_cookie(SECRET, TUPLE, IRS, 1460, 100.0, wscale=7, sack=True, ts_clock=ts_clock)


def test_a_genuine_cookie_carries_mss_window_scale_and_sack() -> None:
    cookie, tsval = _genuine()
    assert tsval is not None
    assert check_cookie(SECRET, TUPLE, IRS, cookie, 100.0, tsval) == CookieInfo(1460, 7, True, True)
    # Without timestamps only the MSS survives, and no TSval is made.
    plain, no_ts = _genuine(None)
    assert no_ts is None
    assert check_cookie(SECRET, TUPLE, IRS, plain, 100.0) == CookieInfo(1460, None, False, False)


@pytest.mark.parametrize("bit", range(32))
def test_every_bit_of_the_cookie_is_authenticated(bit: int) -> None:
    """The time counter (31-27), the MSS index (26-24) and the hash (23-0): flip any one, it fails."""
    cookie, tsval = _genuine()
    assert check_cookie(SECRET, TUPLE, IRS, cookie ^ (1 << bit), 100.0, tsval) is None


@pytest.mark.parametrize("bit", range(TS_BITS))
def test_every_option_bit_in_the_timestamp_is_authenticated(bit: int) -> None:
    """Window shift (3-0), SACK (4) and the spare bit (5) of the echoed TSval: flip any one, it fails."""
    cookie, tsval = _genuine()
    assert tsval is not None
    assert check_cookie(SECRET, TUPLE, IRS, cookie, 100.0, tsval ^ (1 << bit)) is None


def test_the_cookie_is_bound_to_its_syn_its_peer_its_secret_and_its_time() -> None:
    cookie, tsval = _genuine()
    assert check_cookie(SECRET, TUPLE, IRS + 1, cookie, 100.0, tsval) is None  # another peer ISN
    assert check_cookie(SECRET, (LOCAL, PORT, REMOTE, 40001), IRS, cookie, 100.0, tsval) is None
    assert check_cookie(SECRET, (LOCAL, PORT, "198.18.0.3", 40000), IRS, cookie, 100.0, tsval) is None
    assert check_cookie(b"x" * 16, TUPLE, IRS, cookie, 100.0, tsval) is None
    assert check_cookie(SECRET, TUPLE, IRS, cookie, 100.0, None) is None  # timestamps dropped on the way
    plain, _ = _genuine(None)
    assert check_cookie(SECRET, TUPLE, IRS, plain, 100.0, tsval) is None  # timestamps added on the way
    assert check_cookie(SECRET, TUPLE, IRS, cookie, 100.0 + PERIOD, tsval) is not None  # one period later
    assert check_cookie(SECRET, TUPLE, IRS, cookie, 100.0 + 2 * PERIOD, tsval) is None  # too old


def test_the_cookie_tsval_never_runs_ahead_of_the_connection_clock() -> None:
    """The connection made later sends TSvals from the same clock: they must not go backwards."""
    for clock in (0, 5, 63, 64, 1000, 2**32 - 1, 2**32 - 64, 123_456_789):
        _, tsval = _genuine(clock)
        assert tsval is not None and tsval & TS_MASK == 7 | (1 << 4)
        assert 0 <= (clock - tsval) % 2**32 < 2 * (1 << TS_BITS)


def test_tampered_option_bits_are_rejected_by_the_listener() -> None:
    host = flooded_host()
    synack = cookie_synack(host, 1.0, TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(555, 0)))
    tsval = synack.options.timestamp[0] if synack.options.timestamp else None
    assert tsval is not None and synack.options.sack_permitted and synack.options.wscale is not None
    out = cookie_ack(host, 1.5, synack.seq, TcpOptions(timestamp=(556, tsval ^ 0x0F)))  # window shift 7 -> 8
    assert not host.connections and [s.flags & RST for s in out] == [RST]
    assert host.counters["SyncookiesFailed"] == 1


def test_a_cookie_ack_without_recent_cookies_is_not_accepted() -> None:
    """Two hosts share a secret; only the one that sent cookies recently accepts the returning ACK."""
    sender, other = flooded_host(timestamps=False), flooded_host(timestamps=False)
    synack = cookie_synack(sender, 1.0, TcpOptions(mss=1460))
    out = cookie_ack(other, 1.5, synack.seq)  # genuine for `other`'s secret too, but it sent none
    assert not other.connections and [s.flags & RST for s in out] == [RST]
    assert other.counters["SyncookiesRecv"] == other.counters["SyncookiesFailed"] == 0
    cookie_ack(sender, 1.5, synack.seq)
    assert sender.counters["SyncookiesRecv"] == 1 and len(sender.connections) == 1


def test_cookies_stop_being_checked_once_the_flood_is_over() -> None:
    host = flooded_host(timestamps=False)
    cookie_synack(host, 1.0, TcpOptions(mss=1460))
    # Long after the last cookie, a cookie made now (as a blind attacker might guess one) is ignored.
    later = 1.0 + VALID + 1.0
    guess, _ = make_cookie(b"c" * 16, (LOCAL, PORT, REMOTE, 40002), IRS, 1460, later)
    out = cookie_ack(host, later, guess, sport=40002)
    assert not host.connections and [s.flags & RST for s in out] == [RST]
    assert host.counters["SyncookiesRecv"] == host.counters["SyncookiesFailed"] == 0


def test_a_connection_made_from_a_cookie_with_timestamps_has_window_scale_and_sack() -> None:
    """Under a flood (no SYN backlog at all), a default client still gets a scaled window and SACK,
    and moves a megabyte through a lossy link, losses reported with SACK blocks."""
    from tests.scenarios.pair import B_ADDR, Pair
    from tests.scenarios.pair import PORT as PAIR_PORT

    lost: set[int] = set()
    sacks: list[tuple[tuple[int, int], ...]] = []

    def lose_some(seg: Segment, now: float) -> list[tuple[Segment, float]]:
        if seg.options.sack_blocks:
            sacks.append(seg.options.sack_blocks)
        if seg.payload and seg.dst_addr == B_ADDR and len(lost) < 5 and seg.seq % 7 == 0 and seg.seq not in lost:
            lost.add(seg.seq)
            return []
        return [(seg, 0.0)]

    p = Pair(Config(secret=b"f" * 16, syn_backlog=0), hooks=[lose_some])
    client = p.a.connect(B_ADDR, PAIR_PORT, p.now)
    p.run_until(lambda: client.state is S.ESTABLISHED)
    p.link.run(0.01)
    assert p.b.counters["SyncookiesRecv"] == 1
    (server,) = (c for c in p.b.connections.values() if c.four_tuple[3] == client.four_tuple[1])
    mine = p.a.tcb(client)
    assert server.ts_ok and server.sack_ok and server.wscale_ok and mine.wscale_ok and mine.sack_ok
    assert server.snd_wscale == mine.rcv_wscale > 0 and mine.snd_wscale == server.rcv_wscale > 0
    data = bytes(range(256)) * 4096  # 1 MiB
    sent, got = 0, bytearray()
    while len(got) < len(data) and p.now < 60:
        sent += client.send(data[sent:], p.now) if sent < len(data) else 0
        p.link.run(0.01)
        assert server.handle is not None
        got += server.handle.receive(p.now)
    assert bytes(got) == data
    assert mine.max_snd_wnd > 65535  # the server's window really was scaled
    assert lost and sacks and p.a.counters["TCPFastRetrans"] >= 1  # losses were SACKed and repaired
