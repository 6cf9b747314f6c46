"""Two stacks, one virtual clock: the closes of issue 3, end to end."""

from __future__ import annotations

import pytest

from stack.tcp.config import Config
from stack.tcp.events import Closed, CloseReason, EndOfStream
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, RST, Segment
from tests.scenarios.pair import A_ADDR, B_ADDR, Pair, drop_matching

S = State
CFG = Config(msl=5.0, secret=b"s" * 16)


def test_four_way_close_client_first() -> None:
    p = Pair(CFG)
    client, server = p.connect()
    client.close(p.now)
    p.run_until(lambda: server.state is S.CLOSE_WAIT)
    server.close(p.now)
    p.run_until(lambda: server.state is S.CLOSED)
    assert client.state is S.TIME_WAIT and len(p.a.time_wait) == 1
    p.link.run()
    assert p.idle()
    port = client.four_tuple[1]
    assert p.changes(p.a, port) == [
        (S.CLOSED, S.SYN_SENT), (S.SYN_SENT, S.ESTABLISHED), (S.ESTABLISHED, S.FIN_WAIT_1),
        (S.FIN_WAIT_1, S.FIN_WAIT_2), (S.FIN_WAIT_2, S.TIME_WAIT), (S.TIME_WAIT, S.CLOSED)]
    assert p.changes(p.b, port) == [
        (S.LISTEN, S.SYN_RECEIVED), (S.SYN_RECEIVED, S.ESTABLISHED), (S.ESTABLISHED, S.CLOSE_WAIT),
        (S.CLOSE_WAIT, S.LAST_ACK), (S.LAST_ACK, S.CLOSED)]


def test_four_way_close_server_first() -> None:
    p = Pair(CFG)
    client, server = p.connect()
    server.close(p.now)
    p.run_until(lambda: client.state is S.CLOSE_WAIT)
    client.close(p.now)
    p.run_until(lambda: client.state is S.CLOSED)
    assert len(p.b.time_wait) == 1 and not p.a.time_wait
    t0 = p.now
    p.link.run()
    assert p.idle() and p.now - t0 == pytest.approx(10.0, abs=0.05)  # 2MSL with msl=5


def test_simultaneous_close_through_closing() -> None:
    p = Pair(CFG)
    client, server = p.connect()
    client.close(p.now)
    server.close(p.now)  # both FINs cross on the wire
    p.link.run()
    port = client.four_tuple[1]
    for host in (p.a, p.b):
        assert (S.FIN_WAIT_1, S.CLOSING) in p.changes(host, port)
        assert (S.CLOSING, S.TIME_WAIT) in p.changes(host, port)
    assert p.idle()


def test_half_close_data_flows_in_close_wait() -> None:
    p = Pair(CFG)
    client, server = p.connect()
    client.send(b"request", p.now)
    client.shutdown(p.now)  # SHUT_WR: FIN after the request, keep reading
    p.run_until(lambda: server.state is S.CLOSE_WAIT)
    assert server.receive(p.now) == b"request"
    reply = bytes(range(256)) * 400  # 100 KiB flows toward the side that sent FIN
    sent = 0
    got = bytearray()
    while len(got) < len(reply):
        if sent < len(reply):
            sent += server.send(reply[sent:], p.now)
        p.link.step()
        got += client.receive(p.now)
    assert bytes(got) == reply and client.state is S.FIN_WAIT_2
    server.close(p.now)
    p.link.run()
    assert any(isinstance(e, EndOfStream) and e.handle is client for e in p.events(p.a))
    assert p.idle()


def test_lost_final_ack_fin_retransmitted_time_wait_reacks_and_restarts() -> None:
    # Drop the client's first ACK of the server's FIN: the one that would end LAST-ACK.
    dropped: list[float] = []

    def is_final_ack(seg: Segment) -> bool:
        hit = seg.src_addr == A_ADDR and seg.flags == ACK and bool(p.a.time_wait)
        if hit:
            dropped.append(p.now)
        return hit

    p = Pair(CFG)
    p.link.hooks.append(drop_matching(is_final_ack))
    client, server = p.connect()
    client.close(p.now)
    p.run_until(lambda: server.state is S.CLOSE_WAIT)
    server.close(p.now)
    p.run_until(lambda: server.state is S.CLOSED, timeout=30)
    assert dropped, "the final ACK was not dropped"
    tw = next(iter(p.a.time_wait.values()))
    # The retransmitted FIN restarted 2MSL: the record now ends 2MSL after the retransmission.
    assert tw.deadline > tw.entered + 10.0
    assert p.b.counters["RetransSegs"] >= 1
    p.link.run()
    assert p.idle()


@pytest.mark.parametrize("rfc1337", [False, True])
def test_rst_in_time_wait(rfc1337: bool) -> None:
    cfg = Config(msl=5.0, rfc1337=rfc1337, secret=b"s" * 16)
    p = Pair(cfg)
    client, server = p.connect()
    client.close(p.now)
    p.run_until(lambda: server.state is S.CLOSE_WAIT)
    server.close(p.now)
    p.run_until(lambda: server.state is S.CLOSED)
    tw = next(iter(p.a.time_wait.values()))
    la, lp, ra, rp = tw.four_tuple
    p.a.on_segment(Segment(ra, la, rp, lp, tw.rcv_nxt, 0, RST), p.now)
    assert (tw.four_tuple in p.a.time_wait) is rfc1337
    assert p.a.counters["TWKilled"] == (0 if rfc1337 else 1)


def test_syn_reopens_time_wait_on_the_server() -> None:
    # The server closes first and holds TIME-WAIT; the client reconnects from the same port.
    p = Pair(CFG)
    client, server = p.connect()
    port = client.four_tuple[1]
    server.close(p.now)
    p.run_until(lambda: client.state is S.CLOSE_WAIT)
    client.close(p.now)
    p.run_until(lambda: client.state is S.CLOSED)
    assert len(p.b.time_wait) == 1
    tw = next(iter(p.b.time_wait.values()))
    again = p.a.connect(B_ADDR, 7, p.now, local_port=port)
    p.run_until(lambda: again.state is S.ESTABLISHED)
    p.link.run(0.1)
    assert p.b.counters["TCPTimeWaitReopen"] == 1
    new_server = p.b.connections[(B_ADDR, 7, A_ADDR, port)]
    assert new_server.iss == (tw.snd_nxt + 65537) % 2**32


def test_orphan_fin_wait_2_times_out_while_peer_stays_in_close_wait() -> None:
    p = Pair(Config(msl=5.0, fin_timeout=20.0, secret=b"s" * 16))
    client, server = p.connect()
    client.close(p.now)
    p.run_until(lambda: client.state is S.FIN_WAIT_2)
    t0 = p.now
    p.run_until(lambda: client.state is S.CLOSED)
    assert p.now - t0 == pytest.approx(20.0, abs=0.01)
    assert server.state is S.CLOSE_WAIT and p.a.counters["TCPFinTimeout"] == 1


def test_retries_exhausted_abort() -> None:
    p = Pair(Config(msl=5.0, retries=4, secret=b"s" * 16))
    client, _server = p.connect()
    p.link.hooks.append(lambda seg, now: [] if seg.src_addr == B_ADDR else [(seg, 0.0)])  # b goes silent
    client.send(b"x" * 1000, p.now)
    p.run_until(lambda: client.state is S.CLOSED, timeout=600)
    assert client.close_reason is CloseReason.TIMED_OUT
    assert p.a.counters["TCPAbortOnTimeout"] == 1 and p.a.counters["TCPTimeouts"] == 4
    assert any(isinstance(e, Closed) and e.reason is CloseReason.TIMED_OUT for e in p.events(p.a))


def test_isn_near_wrap_one_megabyte_each_way() -> None:
    near = 2**32 - 60
    cfg = Config(msl=1.0, isn=lambda ft, now: near, secret=b"s" * 16)
    p = Pair(cfg)
    client, server = p.connect()
    assert Host.tcb(client).iss == near and Host.tcb(server).iss == near
    blob_a = bytes((i * 7) & 0xFF for i in range(1 << 20))
    blob_b = bytes((i * 13) & 0xFF for i in range(1 << 20))
    sent_a = sent_b = 0
    got_a = bytearray()
    got_b = bytearray()
    while len(got_a) < len(blob_b) or len(got_b) < len(blob_a):
        if sent_a < len(blob_a):
            sent_a += client.send(blob_a[sent_a:], p.now)
        if sent_b < len(blob_b):
            sent_b += server.send(blob_b[sent_b:], p.now)
        p.link.step()
        got_a += client.receive(p.now)
        got_b += server.receive(p.now)
    assert bytes(got_b) == blob_a and bytes(got_a) == blob_b
    assert Host.tcb(client).snd_nxt < near  # the sequence space wrapped
    client.close(p.now)
    server.close(p.now)
    p.link.run()
    assert p.idle()


def test_fin_before_missing_data_waits_for_the_gap() -> None:
    p = Pair(CFG)
    client, server = p.connect()
    # Hold back the first data segment so the second and the FIN arrive before it.
    held: list[Segment] = []

    def hold_first_data(seg: Segment, now: float) -> list[tuple[Segment, float]]:
        if seg.src_addr == A_ADDR and seg.payload and not held:
            held.append(seg)
            return [(seg, 0.05)]
        return [(seg, 0.0)]

    p.link.hooks.append(hold_first_data)
    Host.tcb(client).cfg = Host.tcb(client).cfg.with_changes(nagle=False)
    client.send(b"a" * 1000, p.now)
    client.send(b"b" * 1000, p.now)
    client.close(p.now)
    p.link.run(0.02)
    assert server.state is S.ESTABLISHED and Host.tcb(server).recv.fin_seq is not None
    p.run_until(lambda: server.state is S.CLOSE_WAIT)
    assert server.receive(p.now) == b"a" * 1000 + b"b" * 1000
    ends = [type(e) for e in p.events(p.b) if isinstance(e, EndOfStream)]
    assert ends == [EndOfStream]


def test_fin_on_last_data_segment() -> None:
    p = Pair(CFG)
    capture: list[tuple[float, Segment]] = []
    p.link.capture = capture
    client, server = p.connect()
    client.send(b"z" * 100, p.now)
    client.send(b"y" * 10, p.now)
    client.close(p.now)  # three calls in one batch: one segment, data and FIN
    p.run_until(lambda: server.state is S.CLOSE_WAIT)
    fins = [s for _, s in capture if s.flags & FIN]
    assert fins[0].payload == b"z" * 100 + b"y" * 10
    assert sum(1 for _, s in capture if s.payload) == 1
    assert server.receive(p.now) == b"z" * 100 + b"y" * 10


def _replay(seed: int, loss: float, jitter: float, size_a: int, size_b: int, order: str) -> tuple[Pair, list]:  # type: ignore[type-arg]
    """Replay one case of the property test (tests/scenarios/test_properties.py)."""
    import random

    from tests.scenarios.test_properties import App, chaos

    rng = random.Random(seed)
    p = Pair(Config(msl=1.0, secret=seed.to_bytes(8, "big") * 2), hooks=[chaos(rng, loss, 0.0, jitter, max_burst=None)])
    client, server = p.connect()
    apps = [App(client, rng.randbytes(size_a), order in ("client_first", "simultaneous")),
            App(server, rng.randbytes(size_b), order in ("server_first", "simultaneous"))]
    for _ in range(100_000):
        for app in apps:
            app.pump(p.now)
        if all(app.closed for app in apps) or not p.link.step():
            break
    return p, apps


def test_acks_after_go_back_n_stay_acceptable() -> None:
    """Regression (found by the property test): after an RTO rewinds SND.NXT, pure ACKs must carry
    the highest SEQ sent, else the peer finds them below RCV.NXT, drops them unprocessed, and two
    ends that both retransmit livelock until their retries run out."""
    _p, apps = _replay(4339, 0.2, 0.0, 4337, 4337, "server_first")
    assert all(app.closed for app in apps)
    assert all(app.conn.close_reason is not CloseReason.TIMED_OUT for app in apps)


def test_data_queued_behind_our_fin_moves_when_a_late_fin_arrives() -> None:
    """Regression (found by the property test): a retransmission fills the gap before the peer's
    FIN, the FIN is taken (FIN-WAIT-1 -> CLOSING) and the same segment acks all in flight; our data
    still queued before our FIN must be pushed then, or nothing (no timer) ever sends it."""
    _p, apps = _replay(1357031, 0.1, 0.002, 6173, 119997, "simultaneous")
    assert all(app.closed for app in apps)
    assert bytes(apps[0].got) == apps[1].data and bytes(apps[1].got) == apps[0].data
