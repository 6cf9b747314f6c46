"""Initial sequence numbers (RFC 6528): ISN = M + F(4-tuple, secret), M a 4 µs clock.

Observed from the outside only: the SEQ of the SYN a connect() sends, or of the SYN,ACK a listener
answers with.
"""

from __future__ import annotations

import itertools
import math

from stack.tcp.config import Config
from stack.tcp.host import Host
from stack.tcp.seq import MASK, seq_gt, seq_sub
from stack.wire.segment import ACK, SYN, Segment, TcpOptions

LOCAL, REMOTE, RPORT = "198.18.0.2", "198.18.0.1", 80
TICKS_PER_SECOND = 250_000  # RFC 9293 §3.4.1 / RFC 6528: the clock M ticks every 4 µs


def syn_isn(host: Host, lport: int, now: float, remote: str = REMOTE, rport: int = RPORT) -> int:
    """Connect from `lport`, read the SEQ of the SYN on the wire, abort (RST: no TIME-WAIT)."""
    conn = host.connect(remote, rport, now, local_port=lport)
    (syn,) = [s for s in host.take(now).segments if s.flags & SYN]
    conn.abort(now)
    host.take(now)
    return syn.seq


def synack_isn(host: Host, sport: int, now: float) -> int:
    host.on_segment(Segment(REMOTE, LOCAL, sport, RPORT, 12345, 0, SYN, 65535, 0, TcpOptions(mss=1460)), now)
    (synack,) = host.take(now).segments
    assert synack.flags == SYN | ACK
    return synack.seq


def test_different_secrets_give_different_isns_for_the_same_tuple_and_time() -> None:
    # secret=None: each host draws its own random key (os.urandom)
    a, b = Host(LOCAL), Host(LOCAL)
    pairs = [(syn_isn(a, port, 1.0), syn_isn(b, port, 1.0)) for port in range(40000, 40050)]
    assert all(x != y for x, y in pairs)
    # the same for passive opens: two listeners answer the same SYN with unrelated ISNs
    a.listen(RPORT)
    b.listen(RPORT)
    assert synack_isn(a, 5555, 2.0) != synack_isn(b, 5555, 2.0)
    # and the difference between the two hosts is not a constant offset
    assert len({seq_sub(x, y) for x, y in pairs}) == len(pairs)


def test_same_secret_same_isn_other_secret_other_isn() -> None:
    one, same, other = (Host(LOCAL, Config(secret=k)) for k in (b"k" * 16, b"k" * 16, b"K" * 16))
    assert syn_isn(one, 40000, 3.0) == syn_isn(same, 40000, 3.0)
    assert syn_isn(one, 40001, 3.0) != syn_isn(other, 40001, 3.0)


def test_consecutive_connections_on_one_tuple_advance_with_the_4us_clock() -> None:
    host = Host(LOCAL, Config(secret=b"s" * 16))
    now = 10.0
    prev = syn_isn(host, 40000, now)
    gaps = [0.000004, 0.00001, 0.001, 0.5, 1.0, 7.0, 60.0, 3600.0] * 5
    for gap in gaps:
        t = now + gap
        isn = syn_isn(host, 40000, t)
        ticks = int(t * TICKS_PER_SECOND) - int(now * TICKS_PER_SECOND)
        assert (isn - prev) & MASK == ticks & MASK, (gap, ticks)
        assert seq_gt(isn, prev)  # monotone: a new incarnation starts above the old one
        prev, now = isn, t
    # within one 4 µs tick the ISN does not move; it never goes backwards
    assert syn_isn(host, 40000, now + 0.000001) == prev


def test_the_clock_wraps_through_the_whole_sequence_space() -> None:
    """M runs through 2**32 in 4.77 hours (2**32 * 4 µs) and wraps, as RFC 9293 §3.4.1 says."""
    host = Host(LOCAL, Config(secret=b"w" * 16))
    period = (1 << 32) / TICKS_PER_SECOND
    assert syn_isn(host, 40000, 100.0) == syn_isn(host, 40000, 100.0 + period)


def _chi_square(values: list[int], buckets: int, shift: int) -> float:
    counts = [0] * buckets
    for v in values:
        counts[(v >> shift) % buckets] += 1
    expected = len(values) / buckets
    return sum((c - expected) ** 2 / expected for c in counts)


def _isns_over_ports(host: Host, n: int) -> list[int]:
    return [syn_isn(host, port, 5.0) for port in range(20000, 20000 + n)]


def test_isns_across_ports_look_uniform_with_no_simple_relation() -> None:
    n, buckets = 4096, 64
    limit = (buckets - 1) + 6 * math.sqrt(2 * (buckets - 1))  # chi-square, 63 dof: mean 63, sd 11.2
    for secret in (b"u" * 16, None):  # a fixed key (reproducible) and a random one
        host = Host(LOCAL, Config(secret=secret))
        isns = _isns_over_ports(host, n)
        assert len(set(isns)) == n
        # the top, middle and low bits are each spread evenly over 64 buckets
        for shift in (26, 13, 0):
            assert _chi_square(isns, buckets, shift) < limit, shift
        # every bit is set about half the time (5 sigma)
        for bit in range(32):
            ones = sum(v >> bit & 1 for v in isns)
            assert abs(ones - n / 2) < 5 * math.sqrt(n) / 2, bit
        # no simple relation between neighbouring ports: differences and XORs are all different ...
        diffs = [seq_sub(b, a) for a, b in itertools.pairwise(isns)]
        xors = [isn ^ port for isn, port in zip(isns, range(20000, 20000 + n), strict=True)]
        assert len(set(diffs)) > 0.99 * len(diffs) and len(set(xors)) > 0.99 * n
        # ... and the ISN does not follow the port (correlation ~ 0)
        assert abs(_correlation(list(range(n)), isns)) < 0.1
        assert abs(_correlation(isns[:-1], isns[1:])) < 0.1


def test_isns_differ_across_remote_addresses() -> None:
    host = Host(LOCAL, Config(secret=b"r" * 16))
    isns = {syn_isn(host, 40000, 1.0, remote=f"198.18.1.{i}") for i in range(1, 201)}
    assert len(isns) == 200


def test_timestamps_reveal_no_uptime() -> None:
    """RFC 7323 §7.1: a per-4-tuple random TSval offset, so two connections' clocks differ."""
    host = Host(LOCAL, Config(secret=b"t" * 16))
    tsvals = set()
    for port in range(40000, 40020):
        conn = host.connect(REMOTE, RPORT, 1.0, local_port=port)
        (syn,) = host.take(1.0).segments
        assert syn.options.timestamp is not None
        tsvals.add(syn.options.timestamp[0])
        conn.abort(1.0)
        host.take(1.0)
    assert len(tsvals) == 20


def _correlation(xs: list[int], ys: list[int]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / math.sqrt(vx * vy)
