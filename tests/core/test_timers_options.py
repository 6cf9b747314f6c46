"""The core's timers and options, one rule per test: delayed ACK, SACK, fast retransmit (NewReno),
zero-window probes, keepalive, user timeout, window scaling, RFC 6191 with timestamps, tw_reuse."""

from __future__ import annotations

import pytest

from stack.tcp.events import CloseReason
from stack.tcp.host import Host, PortInUse
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, PSH, RST, SYN, TcpOptions
from tests.core.harness import (
    IRS,
    ISS,
    LOCAL,
    LPORT,
    REMOTE,
    RPORT,
    Expect,
    Harness,
    assert_segments,
    plain_config,
)

S = State
MSS = 536  # the peer's SYN carries no MSS option in these tests


def interactive(h: Harness) -> Harness:
    """One request and its answer: the connection leaves quick-ACK mode (Linux's pingpong), so
    the ACKs after it are delayed ones."""
    h.recv(ACK | PSH, IRS + 1, ISS + 1, b"q")
    h.conn.send(b"r", h.now)
    assert_segments(h.take(), [Expect(ACK | PSH, ISS + 1, IRS + 2, b"r")])
    return h


def test_delayed_ack_every_second_full_segment() -> None:
    h = interactive(Harness(plain_config(delayed_ack=True)).established())
    h.recv(ACK, IRS + 2, ISS + 2)
    assert_segments(h.recv(ACK, IRS + 2, ISS + 2, b"a" * MSS), [])  # the first waits ...
    assert_segments(h.recv(ACK, IRS + 2 + MSS, ISS + 2, b"b" * MSS), [Expect(ACK, ISS + 2, IRS + 2 + 2 * MSS)])


def test_delayed_ack_timer() -> None:
    h = interactive(Harness(plain_config(delayed_ack=True)).established())
    assert_segments(h.recv(ACK, IRS + 2, ISS + 2, b"a" * 100), [])
    assert_segments(h.advance(0.039), [])
    assert_segments(h.advance(0.002), [Expect(ACK, ISS + 2, IRS + 102)])
    assert h.host.counters["DelayedACKs"] == 1


def test_delayed_ack_rides_on_data() -> None:
    h = interactive(Harness(plain_config(delayed_ack=True)).established())
    h.recv(ACK, IRS + 2, ISS + 2, b"ping")
    h.conn.send(b"pong", h.now)
    assert_segments(h.take(), [Expect(ACK | PSH, ISS + 2, IRS + 6, b"pong")])
    assert_segments(h.advance(0.1), [])  # no separate ACK after the 40 ms: the data carried it


def test_out_of_order_data_is_acked_at_once_with_sack_blocks() -> None:
    h = Harness(plain_config(sack=True, delayed_ack=True))
    h.listen()
    h.recv(SYN, IRS, options=TcpOptions(sack_permitted=True))
    h.conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    h.recv(ACK, IRS + 1, ISS + 1)
    (dup,) = h.recv(ACK, IRS + 101, ISS + 1, b"x" * 100)  # bytes 100..199 before 0..99
    assert dup.ack == IRS + 1 and dup.options.sack_blocks == ((IRS + 101, IRS + 201),)
    (dup2,) = h.recv(ACK, IRS + 301, ISS + 1, b"y" * 100)
    assert dup2.options.sack_blocks == ((IRS + 301, IRS + 401), (IRS + 101, IRS + 201))  # newest first
    (fill,) = h.recv(ACK, IRS + 1, ISS + 1, b"w" * 100)  # the gap fills: ACK at once
    assert fill.ack == IRS + 201 and fill.options.sack_blocks == ((IRS + 301, IRS + 401),)
    assert h.conn.receive(h.now) == b"w" * 100 + b"x" * 100


def _sent_data(h: Harness, n: int) -> None:
    h.c.cfg = h.c.cfg.with_changes(nagle=False)
    h.conn.send(b"d" * (MSS * n), h.now)
    out = h.take()
    assert [s.seq for s in out] == [ISS + 1 + MSS * i for i in range(n)]


def test_three_duplicate_acks_trigger_fast_retransmit_and_newreno_recovery() -> None:
    h = Harness().established()
    _sent_data(h, 6)
    assert_segments(h.recv(ACK, IRS + 1, ISS + 1 + MSS), [])  # segment 1 acked, 2 is lost
    for _ in range(2):
        assert_segments(h.recv(ACK, IRS + 1, ISS + 1 + MSS), [])
    out = h.recv(ACK, IRS + 1, ISS + 1 + MSS)  # the third duplicate
    assert_segments(out, [Expect(ACK, ISS + 1 + MSS, IRS + 1, b"d" * MSS)])
    assert h.c.recovery.in_recovery and h.host.counters["TCPFastRetrans"] == 1
    # A partial ACK (up to segment 4; segment 4 lost too) retransmits the next hole at once.
    out = h.recv(ACK, IRS + 1, ISS + 1 + 3 * MSS)
    assert out and out[0].seq == ISS + 1 + 3 * MSS and out[0].payload == b"d" * MSS
    assert h.c.recovery.in_recovery
    h.recv(ACK, IRS + 1, ISS + 1 + 6 * MSS)  # the full ACK ends recovery
    assert not h.c.recovery.in_recovery and h.c.cc.cwnd <= h.c.cc.ssthresh
    assert h.host.counters["TCPTimeouts"] == 0


def test_rto_goes_back_n_and_backs_off() -> None:
    h = Harness().established()
    _sent_data(h, 3)
    out = h.advance(0.201)  # RTO: the handshake's RTT sample (0 here) + rto_min
    assert len(out) == 1 and out[0].seq == ISS + 1  # loss window: one segment
    assert h.c.rtt.backoff == 1 and h.c.cc.cwnd == MSS
    assert h.advance(0.3) == []
    assert [s.seq for s in h.advance(0.11)] == [ISS + 1]  # backed off to 0.4 s


def test_zero_window_probe_then_window_opens() -> None:
    h = Harness().established()
    h.recv(ACK, IRS + 1, ISS + 1, window=0)
    h.conn.send(b"stuck", h.now)
    assert_segments(h.take(), [])
    assert_segments(h.advance(0.201), [Expect(ACK, ISS, IRS + 1)])  # SEQ = SND.UNA - 1, after one RTO
    assert h.host.counters["TCPZeroWindowProbes"] == 1
    assert_segments(h.recv(ACK, IRS + 1, ISS + 1, window=1000), [Expect(ACK | PSH, ISS + 1, IRS + 1, b"stuck")])


def test_keepalive_probes_then_timeout() -> None:
    cfg = plain_config(keepalive=True, keepalive_time=10.0, keepalive_interval=1.0, keepalive_probes=3)
    h = Harness(cfg).established()
    assert_segments(h.advance(9.9), [])
    assert_segments(h.advance(0.2), [Expect(ACK, ISS, IRS + 1)])
    h.recv(ACK, IRS + 1, ISS + 1)  # answered: idle again
    assert_segments(h.advance(9.0), [])
    probes = h.advance(4.0)
    assert [s.flags for s in probes] == [ACK, ACK, ACK, RST | ACK]
    assert h.c.state is S.CLOSED and h.c.close_reason is CloseReason.TIMED_OUT


def test_user_timeout_aborts() -> None:
    """TCP_USER_TIMEOUT as Linux counts it: from the first retransmission, the timer clamped so
    that it fires right then, whatever the retry count says."""
    h = Harness(plain_config(user_timeout=3.0)).established()
    h.conn.send(b"never acked", h.now)
    h.take()
    out = h.advance(10.0)
    assert out and not any(s.flags & RST for s in out)  # dropped silently, as Linux does
    assert h.c.state is S.CLOSED and h.c.close_reason is CloseReason.TIMED_OUT
    (at, _, _, cause) = h.c.history[-1]
    assert cause == "retransmissions exhausted"
    assert at == pytest.approx(0.2 + 3.0)  # first retransmission at the RTO (0.2 s), then 3 s


def test_window_scaling_applies_to_both_directions() -> None:
    h = Harness(plain_config(window_scaling=True))
    h.listen()
    (synack,) = h.recv(SYN, IRS, options=TcpOptions(wscale=3))
    assert synack.options.wscale == 7 and synack.window == 65535  # unscaled in the SYN
    h.conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    h.recv(ACK, IRS + 1, ISS + 1, window=1000)
    assert h.c.snd_wnd == 8000  # 1000 << 3
    (ack,) = h.recv(ACK, IRS + 1, ISS + 1, b"z" * 10, window=1000)
    assert ack.window == (4 * 1024 * 1024 - 10 + 127) >> 7  # our 4 MiB buffer, >> 7, rounded up


def test_time_wait_reopened_by_newer_timestamp_despite_lower_seq() -> None:
    h = Harness(plain_config(timestamps=True))
    h.listen()
    h.recv(SYN, IRS, options=TcpOptions(timestamp=(1000, 0)))
    h.conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    ts = h.c.tsval(h.now)
    h.recv(ACK, IRS + 1, ISS + 1, options=TcpOptions(timestamp=(1001, ts)))
    h.conn.shutdown(h.now)
    h.take()
    h.recv(ACK, IRS + 1, ISS + 2, options=TcpOptions(timestamp=(1002, ts)))
    h.recv(FIN | ACK, IRS + 1, ISS + 2, options=TcpOptions(timestamp=(1003, ts)))
    assert h.state is S.TIME_WAIT
    tw = h.host.time_wait[h.c.four_tuple]
    # An older TSval with a lower SEQ is an old duplicate: ACKed, TIME-WAIT stays.
    out = h.recv(SYN, IRS - 5000, options=TcpOptions(timestamp=(900, 0)))
    assert len(out) == 1 and out[0].flags == ACK and h.c.four_tuple in h.host.time_wait
    # A SYN below RCV.NXT is still new if its TSval is newer (RFC 6191).
    out = h.recv(SYN, IRS - 5000, options=TcpOptions(timestamp=(5000, 0)))
    assert len(out) == 1 and out[0].flags == SYN | ACK and out[0].seq == (tw.snd_nxt + 65537) % 2**32


def _active_close_to_time_wait(h: Harness) -> None:
    """Connect (with timestamps), close first, and take the peer's ACK and FIN: TIME-WAIT."""
    h.conn = h.host.connect(REMOTE, RPORT, h.now, local_port=LPORT)
    h.take()
    h.recv(SYN | ACK, IRS, ISS + 1, options=TcpOptions(timestamp=(10, h.c.tsval(h.now))))
    h.conn.close(h.now)
    h.take()
    ts = h.c.tsval(h.now)
    h.recv(ACK, IRS + 1, ISS + 2, options=TcpOptions(timestamp=(11, ts)))
    h.recv(FIN | ACK, IRS + 1, ISS + 2, options=TcpOptions(timestamp=(12, ts)))
    assert h.state is S.TIME_WAIT


def test_tw_reuse_for_outgoing_connect() -> None:
    for reuse in (False, True):
        h = Harness(plain_config(timestamps=True, tw_reuse=reuse))
        _active_close_to_time_wait(h)
        h.advance(1.5)
        if not reuse:
            with pytest.raises(PortInUse):
                h.host.connect(REMOTE, RPORT, h.now, local_port=LPORT)
            continue
        again = h.host.connect(REMOTE, RPORT, h.now, local_port=LPORT)
        assert Host.tcb(again).iss == ISS + 2 + 65537 and h.host.counters["TWRecycled"] == 1
        assert_segments(h.take(), [Expect(SYN, ISS + 2 + 65537)])


def test_tw_reuse_needs_one_second() -> None:
    h = Harness(plain_config(timestamps=True, tw_reuse=True))
    _active_close_to_time_wait(h)
    h.advance(0.5)
    with pytest.raises(PortInUse):
        h.host.connect(REMOTE, RPORT, h.now, local_port=LPORT)
