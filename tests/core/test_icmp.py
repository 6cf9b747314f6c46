"""ICMP and ICMPv6 in the core (stack.tcp.icmp, Host.on_icmp): echo with its rate limit, soft
errors (RFC 1122 §4.2.3.9, RFC 5461), path MTU discovery (RFC 1191, RFC 8201) and the checks that
keep a blind attacker out (RFC 5927 §5.1)."""

from __future__ import annotations

import pytest

from stack.tcp.events import Closed, CloseReason
from stack.tcp.icmp import MIN_PMTU_V4, path_mtu, reduce_mtu
from stack.tcp.states import State
from stack.wire import ACK, SYN, Segment, TcpOptions, build_packet
from stack.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REQUEST,
    ICMP_FRAG_NEEDED,
    ICMP_PARAMETER_PROBLEM,
    ICMP_SOURCE_QUENCH,
    ICMP_TIME_EXCEEDED,
    ICMPV6_DEST_UNREACH,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG,
    IcmpMessage,
    Quote,
    build_icmp,
    parse_datagram,
)

from .harness import IRS, ISS, LOCAL, LPORT, REMOTE, RPORT, Harness, plain_config

S = State
R = CloseReason


def echo(dst: str = LOCAL, seq: int = 1) -> IcmpMessage:
    return IcmpMessage(4, REMOTE, dst, ICMP_ECHO_REQUEST, 0, 77, seq, body=b"abc")


def error(kind: int, code: int, seq: int, *, mtu: int = 0, lport: int = LPORT) -> IcmpMessage:
    """An error from a router about a segment we sent: it quotes our addresses, ports and `seq`."""
    quoted = build_packet(Segment(LOCAL, REMOTE, lport, RPORT, seq, 0, ACK, 1000))[:28]
    msg = parse_datagram(build_icmp(IcmpMessage(4, "198.18.5.1", LOCAL, kind, code, mtu=mtu, body=quoted)))
    assert isinstance(msg, IcmpMessage) and msg.quote == Quote(LOCAL, REMOTE, 6, lport, RPORT, seq)
    return msg


def with_mss(h: Harness, mss: int = 1460) -> Harness:
    """ESTABLISHED (passive) with a peer that announced `mss`."""
    h.listen()
    h.recv(SYN, IRS, options=TcpOptions(mss=mss))
    handle = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    assert handle is not None
    h.conn = handle
    h.recv(ACK, IRS + 1, ISS + 1)
    assert h.c.state is S.ESTABLISHED and h.c.snd_mss == min(mss, 1460)
    return h


def closed_reason(h: Harness) -> CloseReason:
    reasons = [e.reason for e in h.events if isinstance(e, Closed)]
    assert len(reasons) == 1, h.events
    return reasons[0]


# ---------------------------------------------------------------------------------------------- echo
def test_echo_request_gets_a_reply() -> None:
    h = Harness()
    reply = h.host.on_icmp(echo(), 1.0)
    assert reply == IcmpMessage(4, LOCAL, REMOTE, 0, 0, 77, 1, body=b"abc")
    stats = h.host.stats()
    assert (stats["IcmpInMsgs"], stats["IcmpInEchos"], stats["IcmpOutMsgs"], stats["IcmpOutEchoReps"]) == (1, 1, 1, 1)
    assert stats["IcmpMsgInType8"] == 1 and stats["IcmpMsgOutType0"] == 1


def test_echo6_request_gets_a_reply() -> None:
    h = Harness()
    h.host.addresses = (LOCAL, "2001:2::2")
    reply = h.host.on_icmp(IcmpMessage(6, "2001:2::1", "2001:2::2", ICMPV6_ECHO_REQUEST, 0, 5, 6, body=b"x"), 1.0)
    assert reply == IcmpMessage(6, "2001:2::2", "2001:2::1", 129, 0, 5, 6, body=b"x")
    stats = h.host.stats()
    assert (stats["Icmp6InEchos"], stats["Icmp6OutEchoReplies"], stats["Icmp6InMsgs"]) == (1, 1, 1)


def test_echo_to_another_address_or_switched_off_is_not_answered() -> None:
    assert Harness().host.on_icmp(echo(dst="198.18.0.9"), 1.0) is None
    assert Harness(plain_config(icmp_echo=False)).host.on_icmp(echo(), 1.0) is None


def test_echo_replies_are_rate_limited_by_a_token_bucket() -> None:
    h = Harness(plain_config(icmp_msgs_per_sec=100, icmp_msgs_burst=10))
    answered = sum(h.host.on_icmp(echo(seq=i), 1.0) is not None for i in range(30))
    assert answered == 10  # the burst, all at one instant
    assert h.host.stats()["IcmpOutRateLimitGlobal"] == 20
    assert h.host.on_icmp(echo(), 1.005) is None  # half a token
    assert h.host.on_icmp(echo(), 1.011) is not None  # 1.1 tokens since: one more
    answered = sum(h.host.on_icmp(echo(seq=i), 3.0) is not None for i in range(30))
    assert answered == 10  # refilled to the burst, never beyond


# ---------------------------------------------------------------------------------------------- soft errors
@pytest.mark.parametrize(("kind", "code", "reason"), [
    (ICMP_DEST_UNREACH, 3, R.REFUSED),
    (ICMP_DEST_UNREACH, 1, R.HOST_UNREACHABLE),
    (ICMP_DEST_UNREACH, 0, R.NET_UNREACHABLE),
    (ICMP_DEST_UNREACH, 2, R.PROTOCOL_UNREACHABLE),
    (ICMP_DEST_UNREACH, 13, R.HOST_UNREACHABLE),  # administratively prohibited (RFC 1812)
    (ICMP_TIME_EXCEEDED, 0, R.HOST_UNREACHABLE),
    (ICMP_PARAMETER_PROBLEM, 0, R.PROTOCOL_ERROR),
])
def test_unreachable_in_syn_sent_is_soft_and_reported_when_connect_gives_up(kind: int, code: int,
                                                                           reason: CloseReason) -> None:
    h = Harness(plain_config(syn_retries=2)).syn_sent()
    assert h.host.on_icmp(error(kind, code, ISS), h.now) is None
    assert h.c.state is S.SYN_SENT  # RFC 1122 §4.2.3.9: not a reason to abort
    assert h.take() == []
    sent = h.advance(30.0)
    assert [s.flags for s in sent] == [SYN, SYN]  # it kept trying
    assert closed_reason(h) is reason


def test_unreachable_in_syn_received_keeps_the_embryo() -> None:
    h = Harness().syn_received()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, 1, ISS), h.now)
    assert h.c.state is S.SYN_RECEIVED and h.c.soft_error is R.HOST_UNREACHABLE
    h.recv(ACK, IRS + 1, ISS + 1)
    assert h.c.state is S.ESTABLISHED


@pytest.mark.parametrize("code", range(16))
def test_no_unreachable_code_resets_a_synchronized_connection(code: int) -> None:
    h = Harness().established()
    h.conn.send(b"x" * 100, h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, code, ISS + 1, mtu=1000), h.now)
    assert h.c.state is S.ESTABLISHED
    assert not any(s.flags & 0x04 for s in h.take())  # no RST
    assert not any(isinstance(e, Closed) for e in h.events)


def test_soft_error_is_what_a_timed_out_connection_reports() -> None:
    h = Harness(plain_config(retries=2)).established()
    h.conn.send(b"data", h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, 1, ISS + 1), h.now)
    h.advance(600.0)
    assert closed_reason(h) is R.HOST_UNREACHABLE


def test_new_data_acknowledged_clears_the_soft_error() -> None:
    h = Harness(plain_config(retries=2)).established()
    h.conn.send(b"data", h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, 1, ISS + 1), h.now)
    assert h.c.soft_error is R.HOST_UNREACHABLE
    h.recv(ACK, IRS + 1, ISS + 5)
    assert h.c.soft_error is None
    h.conn.send(b"more", h.now)  # type: ignore[union-attr]
    h.take()
    h.advance(600.0)
    assert closed_reason(h) is R.TIMED_OUT


def test_source_quench_and_unknown_codes_do_nothing() -> None:
    h = Harness().established()
    h.conn.send(b"x", h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_SOURCE_QUENCH, 0, ISS + 1), h.now)
    h.host.on_icmp(error(ICMP_DEST_UNREACH, 99, ISS + 1), h.now)
    assert h.c.soft_error is None


# ---------------------------------------------------------------------------------------------- blind attacks
def test_error_quoting_a_seq_outside_the_flight_is_dropped_and_counted() -> None:
    h = with_mss(Harness())
    h.conn.send(b"x" * 3000, h.now)  # type: ignore[union-attr]
    h.take()
    for seq in (ISS, ISS + 3001, ISS + 100000, (ISS - 1) & 0xFFFFFFFF):  # acked, unsent, far, before ISS
        h.host.on_icmp(error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, seq, mtu=600), h.now)
        h.host.on_icmp(error(ICMP_DEST_UNREACH, 1, seq), h.now)
    assert h.host.stats()["OutOfWindowIcmps"] == 8
    assert h.c.snd_mss == 1460 and h.c.soft_error is None
    assert h.take() == []


def test_error_about_no_connection_counts_as_an_input_error() -> None:
    h = Harness().established()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, 3, ISS + 1, lport=81), h.now)
    assert h.host.stats()["IcmpInErrors"] == 1
    assert h.c.state is S.ESTABLISHED


def test_error_about_a_time_wait_record_is_ignored_quietly() -> None:
    h = Harness().time_wait()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, 3, ISS + 2), h.now)
    stats = h.host.stats()
    assert stats["IcmpInErrors"] == 0 and stats["IcmpInDestUnreachs"] == 1


def test_malformed_icmp_counts_in_the_icmp_section_not_tcp() -> None:
    h = Harness()
    h.host.on_malformed("bad_icmp_checksum", 4)
    h.host.on_malformed("icmp_truncated", 6)
    stats = h.host.stats()
    assert (stats["IcmpInErrors"], stats["IcmpInCsumErrors"], stats["Icmp6InErrors"]) == (1, 1, 1)
    assert stats["InErrs"] == 0 and stats["InMalformed.bad_icmp_checksum"] == 1


# ---------------------------------------------------------------------------------------------- PMTU
def test_frag_needed_lowers_the_mss_and_resends_the_flight_at_the_new_size() -> None:
    h = with_mss(Harness())
    h.conn.send(b"y" * 4000, h.now)  # type: ignore[union-attr]
    first = h.take()
    assert [len(s.payload) for s in first] == [1460, 1460, 1080]
    cwnd = h.c.cc.cwnd
    h.host.on_icmp(error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ISS + 1, mtu=1000), h.now)
    again = h.take()
    assert h.c.snd_mss == 960
    assert [len(s.payload) for s in again] == [960, 960, 960, 960, 160]
    assert [s.seq for s in again] == [ISS + 1 + i * 960 for i in range(5)]
    assert h.c.cc.cwnd == cwnd  # not congestion: no window cut (Linux tcp_simple_retransmit)
    assert h.host.stats()["PMTUReductions"] == 1
    h.recv(ACK, IRS + 1, ISS + 4001)
    assert h.c.snd_una == ISS + 4001


def test_frag_needed_for_a_larger_mtu_changes_nothing() -> None:
    h = with_mss(Harness(), 1000)
    h.conn.send(b"y" * 100, h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ISS + 1, mtu=1400), h.now)
    assert h.c.snd_mss == 1000 and h.take() == []


@pytest.mark.parametrize("mtu", [0, 68, 100, 551])
def test_a_tiny_mtu_cannot_push_the_mss_below_linux_minimum(mtu: int) -> None:
    h = with_mss(Harness())
    h.conn.send(b"y" * 100, h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ISS + 1, mtu=mtu), h.now)
    assert h.c.snd_mss == MIN_PMTU_V4 - 40


def test_timestamps_take_their_room_from_the_new_mss() -> None:
    h = with_mss(Harness(plain_config(timestamps=True)))
    h.c.ts_ok = True
    h.conn.send(b"y" * 100, h.now)  # type: ignore[union-attr]
    h.take()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ISS + 1, mtu=1280), h.now)
    assert h.c.snd_mss == 1280 - 40 - 12


def test_packet_too_big_below_1280_is_ignored_and_1280_is_taken() -> None:
    ptb = IcmpMessage(6, "2001:2::9", "2001:2::2", ICMPV6_PACKET_TOO_BIG, 0, mtu=1000)
    assert path_mtu(ptb) == -1
    assert path_mtu(IcmpMessage(6, "2001:2::9", "2001:2::2", ICMPV6_PACKET_TOO_BIG, 0, mtu=1280)) == 1280
    assert path_mtu(IcmpMessage(6, "2001:2::9", "2001:2::2", ICMPV6_DEST_UNREACH, 4)) is None
    h = with_mss(Harness())
    h.conn.send(b"y" * 100, h.now)  # type: ignore[union-attr]
    h.take()
    reduce_mtu(h.c, -1, 6, h.host.context(h.now))
    assert h.c.snd_mss == 1460
    reduce_mtu(h.c, 1280, 6, h.host.context(h.now))
    assert h.c.snd_mss == 1280 - 60  # IPv6's 40-octet header


def test_frag_needed_during_the_handshake_is_ignored() -> None:
    h = Harness().syn_sent()
    h.host.on_icmp(error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ISS, mtu=600), h.now)
    assert h.c.state is S.SYN_SENT and h.c.soft_error is None
