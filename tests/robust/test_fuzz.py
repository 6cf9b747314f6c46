"""Fuzzing: malformed and hostile segments into a host holding a connection in every state.

The engine is tools/fuzz.py (`make fuzz` runs 1,000,000 segments); here a 20,000-segment run of it,
checked in detail, plus the counting of malformed input reason by reason and the table bounds.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from typing import Any

import pytest

from stack.sim import Simulator
from stack.tcp.config import Config
from stack.tcp.events import Accepted
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.wire import MalformedPacket, Reason, build_packet, parse_packet
from stack.wire.icmp import IcmpMessage, build_icmp, parse_datagram
from stack.wire.reasons import ICMP_REASONS
from stack.wire.segment import ACK, Segment
from tests.robust import load_tool

fuzz = load_tool("fuzz")
S = State

ALL_STATES = {s.value for s in State}
SEGMENTS = 20_000


@pytest.fixture(scope="module")
def report() -> Any:
    # 5 ms of virtual time per segment: 100 s, past 2MSL (60 s) and the SYN-ACK retries (63 s), so
    # the tables reach their steady state within the run.
    return fuzz.run_fuzz(SEGMENTS, seed=20_000, ms_per_segment=5.0)


def test_no_exception_escapes_and_every_check_holds(report: Any) -> None:
    assert report.exception_count == 0, report.exceptions
    assert report.problems() == [], report.format()


def test_every_state_is_under_fire(report: Any) -> None:
    hit = set(report.by_target) - {"(malformed)"}
    assert hit == ALL_STATES, f"states never targeted: {ALL_STATES - hit}"
    for state in ALL_STATES:
        assert report.by_target[state] >= 200, (state, report.by_target[state])
    # The fuzzer also drives connections out of their states: each slot was rebuilt.
    for state in fuzz.SLOT_STATES:
        assert report.rebuilds[state.value] >= 2, (state, report.rebuilds)


def test_every_malformed_packet_is_counted_by_its_reason(report: Any) -> None:
    counters = report.counters
    for reason in Reason:
        fed = report.malformed[reason.value]
        assert fed > 0, f"the mutations never produced {reason.value}"
        assert counters["InMalformed." + reason.value] == fed, reason
    total = sum(v for k, v in counters.items() if k.startswith("InMalformed."))
    assert total == report.malformed_fed() == report.outcomes[fuzz.OUTCOMES[0]]
    icmp = sum(report.malformed[r.value] for r in ICMP_REASONS)
    assert counters["InErrs"] == total - icmp  # a bad ICMP message is an ICMP input error, as in Linux
    assert counters["IcmpInErrors"] + counters["Icmp6InErrors"] >= icmp
    assert counters["IcmpInCsumErrors"] + counters["Icmp6InCsumErrors"] == report.malformed["bad_icmp_checksum"]
    assert counters["InCsumErrors"] == report.malformed[Reason.BAD_TCP_CHECKSUM.value]


def test_icmp_is_under_fire_and_changes_no_state(report: Any) -> None:
    assert report.icmp > 300 and report.icmp_state_changes == []
    assert report.outcomes["ICMP: echo answered"] > 0 and report.outcomes["ICMP: error taken (PMTU, soft error)"] > 0
    assert report.counters["OutOfWindowIcmps"] > 0


def test_outcomes_cover_every_kind_of_answer(report: Any) -> None:
    for outcome in ("state change", "challenge ACK", "challenge ACK suppressed (rate limit)", "RST sent",
                    "data/FIN accepted", "SYN-ACK sent", "ACK sent", "dropped silently"):
        assert report.outcomes[outcome] > 0, outcome
    assert sum(report.outcomes.values()) == SEGMENTS
    # SYN cookies answered the strangers' SYNs once the small backlog was full, and forged ACKs failed.
    assert report.counters["SyncookiesSent"] > 0 and report.counters["SyncookiesFailed"] > 0
    assert report.counters["SyncookiesRecv"] == 0


def test_survivor_still_works_and_everything_drains(report: Any) -> None:
    assert report.survivor_ok, report.survivor_detail
    assert report.drained_ok, report.drained_detail


def test_tables_stay_bounded(report: Any) -> None:
    """Every connection the fuzzer makes is held by the application's leftover list (capped, the
    oldest aborted) or is an embryo of the small listener (its backlog; beyond it, SYN cookies):
    survivor + the flooded connection + one connection per slot + leftovers + that backlog. TIME-WAIT
    records come only from those connections and expire after 2MSL; the 1,000,000-segment run stays
    at the same size."""
    assert 2 + len(fuzz.SLOT_STATES) + fuzz.LEFTOVER_CAP + fuzz.LISTEN_BACKLOG == fuzz.CONNECTION_BOUND
    assert report.max_connections <= fuzz.CONNECTION_BOUND, report.max_connections
    assert report.max_time_wait <= fuzz.TIME_WAIT_BOUND, report.max_time_wait
    assert report.max_connections > fuzz.LEFTOVER_CAP  # the bound is reached for real, not by a quiet run


def test_hostile_peers_the_flood_stays_within_its_budget_and_no_forged_cookie_passes(report: Any) -> None:
    """The out-of-order flood reached its connection's receive memory limit (blocks dropped at the
    top, pruned for lower ones) without passing it; every forged cookie ACK failed."""
    c = report.counters
    assert report.flood_segments > 500 and report.flood_max_blocks > 400
    assert 0 < report.flood_max_mem <= report.flood_limit
    assert c["TCPOFODrop"] > 0 and c["PruneCalled"] >= c["TCPOFODrop"] and c["OfoPruned"] > 0
    assert report.forged_cookies > 100 and report.forged_accepted == 0
    assert c["SyncookiesFailed"] >= report.forged_cookies  # each was checked, and failed (random ACKs fail too)


def test_same_seed_same_run() -> None:
    a = fuzz.run_fuzz(2_000, seed=7, check=False)
    b = fuzz.run_fuzz(2_000, seed=7, check=False)
    assert a.outcomes == b.outcomes and a.malformed == b.malformed and a.transitions == b.transitions
    assert a.counters == b.counters


def test_tool_prints_rate_outcomes_and_reasons() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        status = fuzz.main(["--segments", "3000", "--seed", "3"])
    text = out.getvalue()
    assert status == 0, text
    assert "segments/s" in text and "RESULT: ok" in text
    for reason in Reason:
        assert reason.value in text
    for outcome in fuzz.OUTCOMES:
        assert outcome in text


@pytest.mark.parametrize("reason", sorted(ICMP_REASONS), ids=str)
def test_each_icmp_reason_alone_is_counted(reason: Reason) -> None:
    """One hand-made ICMP datagram per reason, through the fuzzer's ICMP path."""
    quoted = build_packet(Segment("198.18.0.2", "198.18.0.1", 80, 1234, 1, 2, ACK, 1000, 0))[:28]
    msg = IcmpMessage(4, "198.18.0.1", "198.18.0.2", 3, 1, body=quoted)
    pkt = bytearray(build_icmp(msg))
    if reason is Reason.ICMP_TRUNCATED:
        del pkt[24:]
    elif reason is Reason.BAD_ICMP_CHECKSUM:
        pkt[-1] ^= 1
    elif reason is Reason.ICMP_QUOTE_TRUNCATED:
        del pkt[-1]
    else:
        pkt[28] = 0x44  # the quoted IHL
    pkt[2:4] = len(pkt).to_bytes(2, "big")
    if reason is not Reason.BAD_ICMP_CHECKSUM:
        fuzz.fix_icmp_checksums(pkt)
    host = Host("198.18.0.2")
    with pytest.raises(MalformedPacket) as err:
        parse_datagram(bytes(pkt))
    assert err.value.reason is reason
    host.on_malformed(err.value.reason.value, 4)
    assert host.counters["InMalformed." + reason.value] == 1
    assert (host.counters["IcmpInErrors"], host.counters["InErrs"]) == (1, 0)


@pytest.mark.parametrize("reason", sorted(set(Reason) - ICMP_REASONS), ids=str)
def test_each_reason_alone_is_counted(reason: Reason) -> None:
    """One hand-made packet per reason, through the same path as the fuzzer: parse, then count."""
    seg = Segment("198.18.0.1", "198.18.0.2", 1234, 80, 1, 2, ACK, 1000, 0)
    pkt = bytearray(build_packet(seg))
    bad = {
        Reason.TRUNCATED: lambda p: p[:19],
        Reason.NOT_IPV4: lambda p: bytes([0x75]) + p[1:],
        Reason.BAD_IHL: lambda p: bytes([0x44]) + p[1:],
        Reason.BAD_IP_CHECKSUM: lambda p: p[:10] + bytes([p[10] ^ 1]) + p[11:],
        Reason.FRAGMENT: lambda p: _fixed(p[:6] + b"\x20\x00" + p[8:]),
        Reason.NOT_TCP: lambda p: _fixed(p[:9] + b"\x11" + p[10:]),
        Reason.BAD_TOTAL_LENGTH: lambda p: _fixed(p[:2] + b"\x01\x00" + p[4:]),
        Reason.TCP_TRUNCATED: lambda p: _fixed(p[:2] + b"\x00\x1e" + p[4:]),
        Reason.BAD_DATA_OFFSET: lambda p: _fixed(p[:32] + b"\x40" + p[33:]),
        Reason.BAD_TCP_CHECKSUM: lambda p: p[:36] + bytes([p[36] ^ 1]) + p[37:],
        Reason.BAD_OPTION_LENGTH: lambda p: _fixed(p[:2] + b"\x00\x2c" + p[4:32] + b"\x60" + p[33:] + b"\x08\x01\0\0"),
        **_IPV6_BAD,
    }[reason](bytes(pkt))
    host = Host("198.18.0.2")
    with pytest.raises(MalformedPacket) as err:
        parse_packet(bad)
    assert err.value.reason is reason
    host.on_malformed(err.value.reason.value)
    assert host.counters["InMalformed." + reason.value] == 1
    assert host.counters["InErrs"] == 1


def _fixed(p: bytes) -> bytes:
    pkt = bytearray(p)
    fuzz.fix_checksums(pkt)
    return bytes(pkt)


_PKT6 = build_packet(Segment("2001:2::1", "2001:2::2", 1234, 80, 1, 2, ACK, 1000, 0))


def _chain6(*kinds: int) -> bytes:
    """_PKT6 with 8-octet extension headers of these kinds in front of TCP."""
    frames = b"".join(bytes((nxt, 0)) + bytes(6) for nxt in (*kinds[1:], 6))
    return _PKT6[:4] + (len(_PKT6) - 40 + len(frames)).to_bytes(2, "big") + bytes((kinds[0],)) + _PKT6[7:40] \
        + frames + _PKT6[40:]


# The reasons only IPv6 has, each made from an IPv6 packet (RFC 8200 §4 extension headers).
_IPV6_BAD = {
    Reason.BAD_PAYLOAD_LENGTH: lambda p: _PKT6[:4] + b"\x01\x00" + _PKT6[6:],
    Reason.EXT_HEADER_OVERRUN: lambda p: _chain6(60)[:41] + b"\xff" + _chain6(60)[42:],  # 2 KiB claimed
    Reason.EXT_HEADER_LOOP: lambda p: _chain6(60, 60, 60),
    Reason.HOP_BY_HOP_NOT_FIRST: lambda p: _chain6(60, 0),
}


# ---------------------------------------------------------------------------------------------- core bugs
def test_syn_backlog_counts_only_half_open_connections() -> None:
    """RFC 9293 §3.10.1 / Linux: the SYN backlog bounds half-open (SYN-RECEIVED) connections. After
    two handshakes complete on a backlog-2 listener, a third SYN must still get a regular SYN-ACK
    (with its window scale, SACK and timestamps), not a SYN cookie."""
    client, server = Host("198.18.0.1", Config(secret=b"c" * 16)), Host("198.18.0.2", Config(secret=b"s" * 16))
    link = Simulator([client, server])
    listener = server.listen(80, backlog=2)
    first = [client.connect("198.18.0.2", 80, link.now) for _ in range(2)]
    link.run(0.1)
    assert all(c.state is S.ESTABLISHED for c in first)
    third = client.connect("198.18.0.2", 80, link.now)
    link.run(0.1)
    assert third.state is S.ESTABLISHED
    assert server.counters["ListenOverflows"] == 0 and server.counters["SyncookiesSent"] == 0
    assert len(listener.embryos) == 0


def test_closing_a_listener_leaves_accepted_connections_alone() -> None:
    """RFC 9293 §3.10.4 (CLOSE in LISTEN deletes that TCB only); Linux: close() of a listening socket
    resets only connections not yet accepted. An accepted, ESTABLISHED connection survives."""
    client, server = Host("198.18.0.1", Config(secret=b"c" * 16)), Host("198.18.0.2", Config(secret=b"s" * 16))
    link = Simulator([client, server])
    listener = server.listen(80)
    conn = client.connect("198.18.0.2", 80, link.now)
    link.run(0.1)
    accepted = [e.handle for e in link.events_of(server) if isinstance(e, Accepted)]
    assert len(accepted) == 1 and accepted[0].state is S.ESTABLISHED
    listener.close(link.now)
    link.run(0.1)
    assert accepted[0].state is S.ESTABLISHED and conn.state is S.ESTABLISHED


# ---------------------------------------------------------------------------------------------- the soak tool
def test_soak_tool_short_run() -> None:
    """tools/soak.py (`make soak`, 10 minutes) in a few seconds: churn with loss, duplication,
    reordering and corruption, then every table empty, no timer, no Connection alive, RSS at baseline."""
    soak = load_tool("soak")
    out = io.StringIO()
    with redirect_stdout(out):
        status = soak.main(["--seconds", "4", "--seed", "2"])
    text = out.getvalue()
    assert status == 0, text
    assert "RESULT: ok" in text and "Connection objects alive=0" in text
