"""Two hosts on the memory link with a fault engine: the teardown under loss, reordering,
duplication, corruption and injected RSTs. Host `b` is the server, `a` the client (as in
tests/scenarios/pair.py); `stack` says which one the engine's in/out directions are relative to."""

from __future__ import annotations

import itertools
import random

import pytest

from stack.faults import FaultEngine, FaultRule
from stack.sim import Simulator
from stack.tcp.config import Config
from stack.tcp.connection import Connection
from stack.tcp.events import Accepted, CloseReason, EndOfStream
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, RST, SYN, Segment
from tests.scenarios.pair import B_ADDR, PORT, Pair

S = State
CFG = Config(msl=2.0, secret=b"s" * 16)

Fault = tuple[float, str, str, Segment, str]


class FaultPair(Pair):
    """`Pair` whose link carries bytes through a `FaultEngine`, with every applied fault logged."""

    def __init__(self, rules: str | list[FaultRule], config: Config | None = None, *, stack: str = "b",
                 seed: int = 0) -> None:
        super().__init__(config or CFG)
        self.engine = FaultEngine(rules, seed=seed)
        self.stack = self.b if stack == "b" else self.a
        self.peer = self.a if stack == "b" else self.b
        self.link = Simulator([self.a, self.b], delay=0.001, faults=self.engine, stack_host=self.stack,
                               capture=[])
        self.faults: list[Fault] = []
        self.engine.listeners.append(lambda *f: self.faults.append(f))

    def applied(self, action: str) -> list[Fault]:
        return [f for f in self.faults if f[1] == action]

    def crossed(self, host: Host) -> list[tuple[float, Segment]]:
        """Segments from `host` that went on the wire (the link's capture)."""
        assert self.link.capture is not None
        return [(t, s) for t, s in self.link.capture if s.src_addr in host.addresses]


def close_client_first(p: Pair, client: Connection, server: Connection) -> None:
    client.close(p.now)
    p.run_until(lambda: server.state is S.CLOSE_WAIT, timeout=60)
    server.close(p.now)


def test_memory_link_defaults_to_the_last_host_as_the_stack() -> None:
    a, b = Host("198.18.0.1"), Host("198.18.0.2")
    link = Simulator([a, b], faults=FaultEngine([]))
    assert link.stack_host is b and link.faults is not None and link.faults.state_of is not None


def test_fault_free_engine_changes_nothing() -> None:
    p = FaultPair([])
    client, server = p.connect()
    client.send(b"hello", p.now)
    close_client_first(p, client, server)
    p.link.run()
    assert server.receive(p.now) == b"hello" and p.idle()
    assert p.a.counters["InErrs"] == p.b.counters["InErrs"] == 0


def test_1_lost_ack_in_time_wait_fin_retransmitted_reacked_and_2msl_restarted() -> None:
    p = FaultPair("drop out state=TIME-WAIT nth=1", stack="a")  # the client closes first: it holds TIME-WAIT
    client, server = p.connect()
    close_client_first(p, client, server)
    p.run_until(lambda: server.state is S.CLOSED, timeout=30)
    ((t_drop, _, direction, dropped, _),) = p.applied("drop")
    assert direction == "out" and dropped.flags == ACK and dropped.src_addr in p.a.addresses
    assert p.b.counters["RetransSegs"] >= 1 and server.close_reason is CloseReason.NORMAL
    # The stack ACKed twice from TIME-WAIT: the lost ACK and the one answering the retransmitted FIN.
    tw = next(iter(p.a.time_wait.values()))
    acks = [t for t, s in p.crossed(p.a) if s.flags == ACK and s.seq == tw.snd_nxt and s.ack == tw.rcv_nxt]
    assert len(acks) == 1 and acks[0] > t_drop  # the dropped one never crossed
    assert tw.deadline == pytest.approx(acks[0] - 0.001 + CFG.time_wait_duration, abs=0.01)  # restarted
    assert tw.deadline > tw.entered + CFG.time_wait_duration
    p.link.run()
    assert p.idle() and (S.LAST_ACK, S.CLOSED) in p.changes(p.b)


def test_2_peers_first_fin_lost_is_retransmitted_and_close_completes() -> None:
    p = FaultPair("drop in flags=F nth=1")  # the stack is the server; the client's FIN is lost once
    client, server = p.connect()
    client.close(p.now)
    p.run_until(lambda: server.state is S.CLOSE_WAIT, timeout=30)
    fins = [s for _, s in p.crossed(p.a) if s.flags & FIN]
    assert len(fins) == 1 and p.engine.counters["FaultDrop"] == 1 and p.a.counters["RetransSegs"] >= 1
    assert p.applied("drop")[0][3].seq == fins[0].seq  # the retransmission has the same seq
    server.close(p.now)
    p.link.run()
    assert p.idle() and client.close_reason is CloseReason.NORMAL and server.close_reason is CloseReason.NORMAL


def test_3a_stack_fin_lost_three_times_retransmitted_with_backoff() -> None:
    p = FaultPair("drop out flags=F first=3")
    client, server = p.connect()
    server.close(p.now)
    p.run_until(lambda: client.state is S.CLOSE_WAIT, timeout=60)
    drops = p.applied("drop")
    assert len(drops) == 3 and len({f[3].seq for f in drops}) == 1
    times = [f[0] for f in drops] + [next(t for t, s in p.crossed(p.b) if s.flags & FIN)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The first resend is a tail loss probe (RFC 8985, as Linux: 2*SRTT + rto_min for one segment
    # out); then the RTO, doubling each time.
    assert p.b.counters["TCPLossProbes"] == 1  # (at the RTO time here: PTO is never later)
    assert all(later == pytest.approx(2 * earlier, rel=0.05) for earlier, later in itertools.pairwise(gaps[1:]))
    client.close(p.now)
    p.link.run()
    assert p.idle() and server.close_reason is CloseReason.NORMAL


def test_3b_every_stack_fin_lost_gives_up_after_retries_silently() -> None:
    # The server closes fully: an orphan, whose retries are orphan_retries (Linux tcp_orphan_retries).
    p = FaultPair("drop out flags=F", Config(msl=2.0, orphan_retries=3, secret=b"s" * 16))
    client, server = p.connect()
    server.close(p.now)
    p.run_until(lambda: server.state is S.CLOSED, timeout=120)
    assert server.close_reason is CloseReason.TIMED_OUT
    drops = p.applied("drop")
    # The FIN, one tail loss probe, and 3 retransmissions by the RTO; then, as Linux, no RST.
    assert len(drops) == 1 + 1 + 3 and len({f[3].seq for f in drops}) == 1
    assert not [s for _, s in p.crossed(p.b) if s.flags & RST]
    assert p.b.counters["TCPAbortOnTimeout"] == 1
    # The peer learns when it next sends: the stack has no connection and answers with a RST.
    assert client.state is S.ESTABLISHED
    client.close(p.now)
    p.link.run()
    assert client.state is S.CLOSED and client.close_reason is CloseReason.RESET and p.idle()


def test_4_fin_overtakes_the_last_data_segment() -> None:
    # The stack (server) receives: hold the second data segment until one later segment (the FIN) passed.
    p = FaultPair("reorder in payload=yes nth=2 hold=1")
    client, server = p.connect()
    Host.tcb(client).cfg = Host.tcb(client).cfg.with_changes(nagle=False)
    client.send(b"a" * 1000, p.now)
    p.link.collect()  # on the wire now: each write its own segment (calls in one batch would coalesce)
    client.send(b"b" * 1000, p.now)
    p.link.collect()
    client.close(p.now)
    p.run_until(lambda: server.state is S.CLOSE_WAIT, timeout=30)
    order = [("FIN" if s.flags & FIN else len(s.payload)) for _, s in p.crossed(p.a) if s.payload or s.flags & FIN]
    assert order == [1000, "FIN", 1000]  # as delivered: the FIN overtook the last data
    assert [a for _, a, *_ in p.faults] == ["reorder", "release"]
    assert server.receive(p.now) == b"a" * 1000 + b"b" * 1000
    assert [e for e in p.events(p.b) if isinstance(e, EndOfStream)] == [EndOfStream(server)]
    server.close(p.now)
    p.link.run()
    assert p.idle()


def transfer(p: Pair, client: Connection, server: Connection, up: bytes, down: bytes, *,
             simultaneous: bool = False) -> tuple[bytes, bytes]:
    """Send `up` client->server and `down` back, then close both; what each side received. The
    client shuts down first and the server once the client's FIN is acknowledged, unless
    `simultaneous` (both at once, through CLOSING when the FINs cross)."""
    client.send(up, p.now)
    server.send(down, p.now)
    client.shutdown(p.now)
    if not simultaneous:
        p.run_until(lambda: client.state is S.FIN_WAIT_2 and server.state is S.CLOSE_WAIT, timeout=300)
    server.shutdown(p.now)
    p.run_until(lambda: client.state in (S.TIME_WAIT, S.CLOSED) and server.state in (S.TIME_WAIT, S.CLOSED),
                timeout=300)
    got_up, got_down = server.receive(p.now), client.receive(p.now)
    p.link.run()
    assert p.idle()
    return got_up, got_down


def test_5_duplicates_everywhere_no_byte_delivered_twice() -> None:
    p = FaultPair("dup in\ndup out copies=2")
    client, server = p.connect()
    up, down = random.Random(5).randbytes(100_000), random.Random(6).randbytes(60_000)
    assert transfer(p, client, server, up, down) == (up, down)
    assert p.engine.counters["FaultDup"] > 100
    assert client.close_reason is CloseReason.NORMAL and server.close_reason is CloseReason.NORMAL


def test_6_ten_percent_loss_both_ways_100_connections_of_100_kb() -> None:
    p = FaultPair("drop in p=0.1 seed=1\ndrop out p=0.1 seed=2", Config(msl=1.0, secret=b"s" * 16))
    clients = [p.a.connect(B_ADDR, PORT, p.now) for _ in range(100)]
    blobs = {c.four_tuple[1]: random.Random(i).randbytes(100_000) for i, c in enumerate(clients)}
    servers: dict[int, Connection] = {}
    received: dict[int, bytes] = {}
    seen = 0

    def serve() -> bool:
        """The server application: accept, and once a peer's FIN is in, read everything and close."""
        nonlocal seen
        events = p.events(p.b)
        for e in events[seen:]:
            if isinstance(e, Accepted):
                servers[e.handle.four_tuple[3]] = e.handle
        seen = len(events)
        for port, server in servers.items():
            if port not in received and server.state is S.CLOSE_WAIT:
                received[port] = server.receive(p.now)
                server.close(p.now)
        return len(received) == len(clients)

    p.run_until(lambda: all(c.state is S.ESTABLISHED for c in clients), timeout=120)  # (close in SYN-SENT aborts)
    for client in clients:
        port = client.four_tuple[1]
        assert client.send(blobs[port], p.now) == len(blobs[port])
        client.close(p.now)  # the FIN follows the data
    p.run_until(serve, timeout=600)
    p.link.run()
    assert received == blobs  # every byte, intact, on every connection
    assert p.idle() and not p.a.connections and not p.b.connections
    for client in clients:
        server = servers[client.four_tuple[1]]
        # (A Connection object that went through TIME-WAIT keeps saying so; the table entry is gone.)
        assert client.state in (S.TIME_WAIT, S.CLOSED) and server.state is S.CLOSED
        assert client.close_reason is CloseReason.NORMAL
        # A server can end with a RST when the client's TIME-WAIT expired before a late FIN
        # retransmission arrived; never with a timeout.
        assert server.close_reason in (CloseReason.NORMAL, CloseReason.RESET)
    dropped_in = p.engine.rule_counts["drop in p=0.1 seed=1"]
    dropped_out = p.engine.rule_counts["drop out p=0.1 seed=2"]
    assert 0.07 < dropped_in / (p.b.counters["InSegs"] + dropped_in) < 0.13
    assert 0.07 < dropped_out / (p.a.counters["InSegs"] + dropped_out) < 0.13
    assert p.a.counters["RetransSegs"] > 100


def test_6b_same_seed_same_faults() -> None:
    def run() -> list[tuple[float, str, str]]:
        p = FaultPair("drop in p=0.2 seed=9\ndup out p=0.1\ndelay out 1ms jitter=1ms", seed=3)
        client, server = p.connect()
        transfer(p, client, server, b"q" * 30_000, b"r" * 30_000)
        return [(t, a, d) for t, a, d, *_ in p.faults]

    first = run()
    assert first == run() and len(first) > 20


def test_7_corruption_counted_as_checksum_errors_and_repaired() -> None:
    p = FaultPair("corrupt in p=0.1 seed=3\ncorrupt out p=0.1 seed=4")
    client, server = p.connect()
    up, down = random.Random(7).randbytes(200_000), random.Random(8).randbytes(100_000)
    assert transfer(p, client, server, up, down) == (up, down)
    corrupt_in = p.engine.rule_counts["corrupt in p=0.1 seed=3"]
    corrupt_out = p.engine.rule_counts["corrupt out p=0.1 seed=4"]
    assert corrupt_in > 5 and corrupt_out > 5
    assert p.b.counters["InCsumErrors"] == corrupt_in and p.a.counters["InCsumErrors"] == corrupt_out
    assert p.b.counters["InMalformed.bad_tcp_checksum"] == corrupt_in == p.b.counters["InErrs"]
    assert p.a.counters["RetransSegs"] > 0


def test_7b_simultaneous_close_with_queued_data_under_corruption() -> None:
    # Found by this scenario: the server's ACK of everything is corrupted, then its retransmission
    # fills the gap before its FIN while the client (FIN-WAIT-1) still has 155 KB queued; moving
    # to CLOSING must still push that data (nothing in flight, so no timer would).
    p = FaultPair("corrupt in p=0.05 seed=3\ncorrupt out p=0.05 seed=4")
    client, server = p.connect()
    up, down = random.Random(7).randbytes(200_000), random.Random(8).randbytes(100_000)
    assert transfer(p, client, server, up, down, simultaneous=True) == (up, down)


def test_truncated_packets_are_dropped_as_malformed() -> None:
    p = FaultPair("truncate in payload=yes nth=1 cut=100")
    client, server = p.connect()
    assert transfer(p, client, server, b"t" * 5000, b"") == (b"t" * 5000, b"")
    assert p.b.counters["InMalformed.bad_total_length"] == 1 and p.b.counters["InCsumErrors"] == 0


def test_zero_window_rewrite_is_probed_through() -> None:
    p = FaultPair("rewrite out has=A payload=no window=0 first=3")  # the stack's first ACKs close the window
    client, server = p.connect()
    assert transfer(p, client, server, b"w" * 20_000, b"") == (b"w" * 20_000, b"")
    assert p.engine.counters["FaultRewrite"] == 3


@pytest.mark.parametrize("rfc1337", [False, True])
def test_8_rst_injected_into_time_wait(rfc1337: bool) -> None:
    cfg = Config(msl=2.0, rfc1337=rfc1337, secret=b"s" * 16)
    # The stack is the client, which closes first. An exact RST (SEQ = the FIN's SEQ + 1 = the
    # stack's RCV.NXT) follows the peer's FIN and arrives once that FIN put the stack in TIME-WAIT.
    # (state= is checked when the FIN leaves, when the stack may not have seen the peer's ACK yet.)
    p = FaultPair("inject in rst seq=+0 flags=F state=FIN-WAIT-1,FIN-WAIT-2", cfg, stack="a")
    client, server = p.connect()
    close_client_first(p, client, server)
    p.run_until(lambda: server.state is S.CLOSED, timeout=30)
    p.link.run(0.01)
    ((_, _, _, rst, _),) = p.applied("inject")
    assert rst.flags == RST
    key = client.four_tuple
    assert (key in p.a.time_wait) is rfc1337
    assert p.a.counters["TWKilled"] == (0 if rfc1337 else 1)
    changes = p.changes(p.a, key[1])
    assert changes[-2:] == [(S.FIN_WAIT_2, S.TIME_WAIT), (S.TIME_WAIT, S.CLOSED)] if not rfc1337 else True
    p.link.run()
    assert p.idle()


def test_injected_syn_reopens_time_wait_on_the_stack() -> None:
    # The server (stack) closes first; a SYN far ahead of RCV.NXT follows the peer's FIN, finds the
    # stack in TIME-WAIT and takes the 4-tuple over (RFC 6191).
    p = FaultPair("inject in syn seq=+100000 flags=F")
    client, server = p.connect()
    server.close(p.now)
    p.run_until(lambda: client.state is S.CLOSE_WAIT)
    client.close(p.now)
    p.run_until(lambda: client.state is S.CLOSED)
    p.link.run(0.01)
    assert p.b.counters["TCPTimeWaitReopen"] == 1
    assert [s.flags for s in (f[3] for f in p.applied("inject"))] == [SYN]
