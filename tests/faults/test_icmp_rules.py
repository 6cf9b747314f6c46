"""Fault rules for ICMP (`proto=icmp`): parsed and written back, refused where they would read or
write TCP, applied to ICMP datagrams only, and TCP rules never touching ICMP."""

from __future__ import annotations

import pytest

from stack.faults import FaultEngine, FaultRuleError, parse_rule
from stack.wire import ACK, Segment, build_packet
from stack.wire.icmp import ICMP_ECHO_REQUEST, IcmpMessage, build_icmp

PING = build_icmp(IcmpMessage(4, "198.18.0.1", "198.18.0.2", ICMP_ECHO_REQUEST, 0, 1, 1, body=b"x" * 20))
SEG = Segment("198.18.0.1", "198.18.0.2", 1234, 80, 1, 2, ACK, 1000, payload=b"data")


@pytest.mark.parametrize("text", [
    "drop in proto=icmp nth=1",
    "delay out proto=icmp 50ms jitter=10ms",
    "dup in proto=icmp copies=2",
    "corrupt in proto=icmp p=0.5 seed=3",
    "truncate out proto=icmp len=24",
])
def test_icmp_rules_round_trip(text: str) -> None:
    rule = parse_rule(text)
    assert rule.proto == "icmp"
    assert parse_rule(rule.text) == rule


@pytest.mark.parametrize(("text", "column", "words"), [
    ("drop in proto=udp", 15, "proto must be tcp or icmp"),
    ("rewrite in proto=icmp window=0", 12, "acts on TCP segments"),
    ("reorder in proto=icmp", 12, "acts on TCP segments"),
    ("drop in proto=icmp flags=S", 9, "cannot match on TCP fields (flags)"),
    ("drop in port=80 proto=icmp state=ESTABLISHED", 17, "(port, states)"),
])
def test_icmp_rules_that_would_read_tcp_are_refused_with_a_column(text: str, column: int, words: str) -> None:
    with pytest.raises(FaultRuleError) as err:
        parse_rule(text)
    assert err.value.column == column and words in err.value.reason, str(err.value)


def test_icmp_rules_act_on_icmp_only_and_tcp_rules_never_on_icmp() -> None:
    # A pipeline, as for TCP: the dropped second datagram never reaches the dup rule, whose 2nd is the 3rd.
    engine = FaultEngine("drop in proto=icmp nth=2\ndup in proto=icmp nth=2 copies=2\ndrop in p=1.0")
    assert [len(engine.cross_icmp("in", PING, 0.0)) for _ in range(3)] == [1, 0, 3]
    assert engine.cross("in", SEG, build_packet(SEG), 0.0) == []  # the plain drop: TCP only
    assert engine.counters["FaultDrop"] == 2 and engine.counters["FaultDup"] == 1
    assert engine.cross_icmp("out", PING, 0.0)[0].packet == PING  # rules of the other direction


def test_delay_and_truncate_an_icmp_datagram() -> None:
    engine = FaultEngine("delay out proto=icmp 20ms\ntruncate out proto=icmp len=24")
    (crossing,) = engine.cross_icmp("out", PING, 1.0)
    assert crossing.delay == pytest.approx(0.02) and crossing.packet == PING[:24]
    assert crossing.faults == ("delay", "truncate")
