"""IPv6 in the core: the same connections over 4-tuples of IPv6 addresses, the MSS from MTU - 60,
RFC 9293's default MSS of 1220, SYN cookies, and compact TIME-WAIT records for IPv6 peers."""

from __future__ import annotations

import errno

import pytest

from stack.faults.engine import FaultEngine
from stack.sim import Simulator
from stack.tcp.config import Config, default_peer_mss
from stack.tcp.events import Accepted, Connected
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.tcp.timewait import TimeWait, TimeWaitTable
from stack.wire.segment import ACK, SYN, Segment, TcpOptions

S = State
CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "2001:2::1", "2001:2::2"
CFG = Config(secret=b"v" * 16, msl=1.0)


def dual_stack(config: Config = CFG) -> tuple[Host, Host, Simulator]:
    client = Host((CLIENT4, CLIENT6), config)
    server = Host((SERVER4, SERVER6), config)
    # An empty fault engine makes the simulator carry packet bytes: every segment goes through
    # build_packet and parse_packet, so the IPv6 wire format is exercised too.
    return client, server, Simulator([client, server], faults=FaultEngine([]), stack_host=server)


def test_a_connection_over_ipv6_end_to_end() -> None:
    client, server, sim = dual_stack()
    sim.capture = []
    server.listen(80)
    handle = client.connect(SERVER6, 80, sim.now)
    assert handle.local_address[0] == CLIENT6  # the local address of the remote's family
    sim.run(0.1)
    assert any(isinstance(e, Connected) for e in sim.events_of(client))
    accepted = next(e.handle for e in sim.events_of(server) if isinstance(e, Accepted))
    assert accepted.four_tuple == (SERVER6, 80, CLIENT6, handle.local_address[1])
    handle.send(b"x" * 100_000, sim.now)
    received = bytearray()
    sim.run_until(lambda: bool(received.extend(accepted.receive(sim.now)) or len(received) == 100_000), 30)
    assert received == b"x" * 100_000
    seen = [seg for _, seg in sim.capture]
    syn = next(seg for seg in seen if seg.flags == SYN)
    assert (syn.src_addr, syn.dst_addr) == (CLIENT6, SERVER6)
    assert syn.options.mss == CFG.mtu - 60 == 1440  # RFC 9293 §3.7.1: 40 octets of IPv6, 20 of TCP
    # With timestamps every segment carries 12 octets of options: the data segments are 1428.
    assert max(len(seg.payload) for seg in seen) == 1440 - 12
    assert server.tcb(accepted).snd_mss == client.tcb(handle).snd_mss == 1428
    # The server closes first: its TIME-WAIT record is an IPv6 one, and it expires after 2MSL.
    accepted.close(sim.now)
    sim.run(0.1)
    handle.close(sim.now)
    sim.run(0.5)
    assert accepted.state is S.TIME_WAIT and accepted.four_tuple in server.time_wait
    assert list(server.time_wait) == [accepted.four_tuple]
    sim.run(2.5)
    assert len(server.time_wait) == 0 and accepted.state is S.CLOSED
    assert server.counters["InErrs"] == 0 and client.counters["InErrs"] == 0


def test_both_families_at_once_on_one_listener() -> None:
    client, server, sim = dual_stack()
    server.listen(80)
    a = client.connect(SERVER4, 80, sim.now)
    b = client.connect(SERVER6, 80, sim.now)
    sim.run(0.1)
    assert a.state is b.state is S.ESTABLISHED
    assert (a.local_address[0], b.local_address[0]) == (CLIENT4, CLIENT6)
    mss = {h.four_tuple[0]: client.tcb(h).snd_mss for h in (a, b)}
    assert mss == {CLIENT4: 1460 - 12, CLIENT6: 1440 - 12}


def test_mss_per_family_and_the_default_without_an_option() -> None:
    cfg = Config(mtu=9000)
    assert (cfg.mss, cfg.mss_for(SERVER4), cfg.mss_for(SERVER6)) == (8960, 8960, 8940)
    assert (default_peer_mss(SERVER4), default_peer_mss(SERVER6)) == (536, 1220)
    # A SYN without an MSS option: RFC 9293 MUST-15 assumes 1220 over IPv6 (536 over IPv4).
    server = Host(SERVER6, Config(secret=b"k" * 16, timestamps=False))
    server.listen(80)
    server.on_segment(Segment(CLIENT6, SERVER6, 40000, 80, 5000, 0, SYN, 65535), 0.0)
    synack = server.take(0.0).segments[0]
    assert synack.options.mss == 1440
    server.on_segment(Segment(CLIENT6, SERVER6, 40000, 80, 5001, synack.seq + 1, ACK, 65535), 0.0)
    accepted = next(e.handle for e in server.take(0.0).events if isinstance(e, Accepted))
    assert server.tcb(accepted).snd_mss == 1220


def test_connect_needs_an_address_of_the_remote_family() -> None:
    v4_only = Host(SERVER4, CFG)
    with pytest.raises(OSError) as err:
        v4_only.connect(CLIENT6, 80, 0.0)
    assert err.value.errno == errno.ENETUNREACH
    v6_only = Host(SERVER6, CFG)
    with pytest.raises(OSError):
        v6_only.connect(CLIENT4, 80, 0.0)
    assert v6_only.connect(CLIENT6, 80, 0.0).local_address[0] == SERVER6


def test_syn_cookies_over_ipv6() -> None:
    cfg = Config(secret=b"c" * 16, syn_backlog=1, msl=1.0)
    client, server, sim = dual_stack(cfg)
    server.listen(80, backlog=1)
    handles = [client.connect(SERVER6, 80, sim.now) for _ in range(5)]
    sim.run(0.5)
    assert all(h.state is S.ESTABLISHED for h in handles)
    assert server.counters["SyncookiesSent"] >= 1 and server.counters["SyncookiesRecv"] >= 1
    assert server.counters["SyncookiesFailed"] == 0
    accepted = [e.handle for e in sim.events_of(server) if isinstance(e, Accepted)]
    assert len(accepted) == 5 and all(h.four_tuple[0] == SERVER6 for h in accepted)
    # The MSS came back from the cookie's table: the peer offered 1440, the largest entry not above.
    assert {server.tcb(h).snd_mss for h in accepted} == {1440 - 12}


def _record(four_tuple: tuple[str, int, str, int], deadline: float) -> TimeWait:
    return TimeWait(four_tuple, 1, 2, 1000, 7, 0.0, 99, 0.0, deadline)


def test_time_wait_table_holds_ipv6_and_ipv4_records_side_by_side() -> None:
    table = TimeWaitTable(0.001, 0.0)
    keys6 = [(SERVER6, 80, f"2001:2::{i % 7 + 10:x}", 1000 + i) for i in range(50)]
    keys4 = [(SERVER4, 80, f"198.18.0.{i % 7 + 10}", 1000 + i) for i in range(50)]
    for i, key in enumerate(keys6 + keys4):
        table.add(_record(key, 10.0 + i % 50))
    assert len(table) == 100 and set(table) == set(keys6 + keys4)
    assert all(key in table and table[key].four_tuple == key for key in keys6 + keys4)
    assert (SERVER6, 80, "2001:2::99", 1000) not in table  # an address with no record at all
    assert table.get((SERVER6, 80, "2001:2::10", 1001)) is None  # an address known, another port
    # Seven distinct IPv6 clients: seven numbers, however many records.
    ids = table._remote_ids[SERVER6]
    assert len(ids.ids) == 7
    for key in keys6[:25]:
        table.remove(table[key])
    assert len(table) == 75 and not any(key in table for key in keys6[:25])
    done = table.expire(100.0)
    assert len(done) == 75 and len(table) == 0
    assert ids.ids == {} and len(ids.free) == len(ids.addrs) == 7  # every number back for reuse
    table.add(_record((SERVER6, 80, "2001:2::abcd", 5), 200.0))
    assert list(table) == [(SERVER6, 80, "2001:2::abcd", 5)] and len(ids.addrs) == 7


def test_time_wait_records_restart_and_rearm_for_ipv6() -> None:
    table = TimeWaitTable(0.001, 0.0)
    key = (SERVER6, 80, CLIENT6, 40000)
    tw = _record(key, 10.0)
    table.add(tw)
    tw.deadline = 20.0
    table.store(tw)
    assert table.expire(15.0) == [] and key in table  # re-armed at its new deadline
    assert [t.four_tuple for t in table.expire(25.0)] == [key]
    assert key not in table


def test_ipv6_segments_to_a_closed_port_get_a_rst_from_the_right_address() -> None:
    host = Host((SERVER4, SERVER6), CFG)
    host.on_segment(Segment(CLIENT6, SERVER6, 40000, 81, 5000, 0, SYN, 1000, 0, TcpOptions()), 0.0)
    rst = host.take(0.0).segments[0]
    assert (rst.src_addr, rst.dst_addr, rst.ack) == (SERVER6, CLIENT6, 5001)
