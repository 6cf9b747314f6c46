"""Where the RFCs leave a choice, tcpstack does what Linux does (issue 14): one rule per test, segments
in, exact segments out. docs/linux-differences.md lists what remains different, with its reason."""

from __future__ import annotations

from stack.tcp.events import Closed, CloseReason
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, PSH, RST, SYN, TcpOptions
from tests.core.harness import IRS, ISS, LOCAL, LPORT, REMOTE, RPORT, Expect, Harness, assert_segments, plain_config

S = State
MSS = 536


def seg_at(i: int) -> int:
    return ISS + 1 + i * MSS


def _sack_established(**changes: object) -> Harness:
    h = Harness(plain_config(sack=True, nagle=False, **changes))
    h.listen()
    h.recv(SYN, IRS, options=TcpOptions(sack_permitted=True))
    handle = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    assert handle is not None
    h.conn = handle
    h.recv(ACK, IRS + 1, ISS + 1)
    assert h.c.sack_ok
    return h


# ---------------------------------------------------------------- 1. SACK recovery starts with a retransmission
def test_sack_recovery_resends_the_first_hole_on_entry_whatever_the_pipe() -> None:
    """RFC 6675 §5 step (4.3): entering recovery retransmits the segment at SND.UNA at once. Here the
    pipe (5 segments SACK does not account for) is not below cwnd = ssthresh (5 segments), so the
    'while cwnd - pipe >= SMSS' loop alone would send nothing."""
    h = _sack_established(congestion_control="newreno")
    h.conn.send(b"d" * (10 * MSS), h.now)
    assert [s.seq for s in h.take()] == [seg_at(i) for i in range(10)]
    out = []
    for top in (2, 3, 4):  # segment 0 lost; three duplicate ACKs SACKing 1..top
        out = h.recv(ACK, IRS + 1, seg_at(0), options=TcpOptions(sack_blocks=((seg_at(1), seg_at(top)),)))
    assert h.c.recovery.in_recovery
    assert [s.seq for s in out if s.payload][:1] == [seg_at(0)]


# ---------------------------------------------------------------- 2. Limited Transmit
def test_limited_transmit_sends_new_data_on_the_first_two_duplicate_acks() -> None:
    """RFC 3042 / RFC 5681 §3.2: a previously unsent segment for each of the first two duplicate
    ACKs, so a small flight can still reach three duplicates instead of waiting for the RTO."""
    h = Harness(plain_config(nagle=False, initial_cwnd_segments=4))
    h.established()
    h.conn.send(b"d" * (8 * MSS), h.now)
    assert [s.seq for s in h.take()] == [seg_at(i) for i in range(4)]  # cwnd: 4 segments
    first = h.recv(ACK, IRS + 1, seg_at(0))  # duplicate 1 (segment 0 lost)
    assert_segments(first, [Expect(ACK, seg_at(4), IRS + 1, b"d" * MSS)])
    second = h.recv(ACK, IRS + 1, seg_at(0))  # duplicate 2
    assert_segments(second, [Expect(ACK, seg_at(5), IRS + 1, b"d" * MSS)])
    third = h.recv(ACK, IRS + 1, seg_at(0))  # duplicate 3: fast retransmit
    assert [s.seq for s in third if s.payload][:1] == [seg_at(0)]
    assert h.host.counters["TCPFastRetrans"] == 1


# ---------------------------------------------------------------- 3. Tail loss probe
def test_tail_loss_probe_resends_the_last_segment_after_two_rtts() -> None:
    """RFC 8985 §7 (RACK-TLP), as Linux schedules it: with SACK and an RTT sample, a flight whose
    tail is lost gets a probe (the last segment again) after max(2*SRTT, 10 ms), not the RTO."""
    h = _sack_established()
    h.advance(0.0)
    h.conn.send(b"a" * MSS, h.now)
    h.take()
    h.now += 0.05
    h.recv(ACK, IRS + 1, seg_at(1))  # an RTT sample of 50 ms (after the handshake's of 0)
    srtt = h.c.rtt.srtt
    assert srtt is not None and srtt > 0
    h.conn.send(b"b" * (2 * MSS), h.now)
    assert [s.seq for s in h.take()] == [seg_at(1), seg_at(2)]
    pto = 2 * srtt + 0.002  # two segments out: 2*SRTT + TCP_TIMEOUT_MIN
    assert pto < h.c.rtt.rto
    out = h.advance(pto - 0.001)
    assert out == []
    out = h.advance(0.002)  # the probe
    assert_segments(out, [Expect(ACK | PSH, seg_at(2), IRS + 1, b"b" * MSS)])
    assert h.host.counters["TCPLossProbes"] == 1
    assert h.host.counters["TCPTimeouts"] == 0


# ---------------------------------------------------------------- 4. RTT from the handshake
def test_the_handshake_gives_an_rtt_sample_without_timestamps() -> None:
    """Linux times the SYN (or SYN-ACK) when it was not retransmitted (Karn): the first RTO is
    then SRTT + max(4*RTTVAR, rto_min), not RFC 6298's initial 1 s."""
    h = Harness(plain_config(timestamps=False))
    h.syn_sent()
    h.now += 0.030
    h.recv(SYN | ACK, IRS, ISS + 1)
    assert h.c.rtt.srtt is not None and abs(h.c.rtt.srtt - 0.030) < 1e-9
    assert abs(h.c.rtt.rto - (0.030 + 0.2)) < 1e-9


def test_a_retransmitted_syn_gives_no_sample() -> None:
    h = Harness(plain_config(timestamps=False))
    h.syn_sent()
    assert [s.flags for s in h.advance(1.01)] == [SYN]  # retransmitted
    h.recv(SYN | ACK, IRS, ISS + 1)
    assert h.c.rtt.srtt is None


# ---------------------------------------------------------------- 5. quick-ACK mode
def test_quick_ack_mode_acks_the_first_segments_at_once() -> None:
    """Linux starts a connection in quick-ACK mode: the first data segments are acknowledged at
    once, not after the 40 ms delayed-ACK timer (tcp_incr_quickack, TCP_MAX_QUICKACKS)."""
    h = Harness(plain_config(delayed_ack=True))
    h.established()
    assert_segments(h.recv(ACK | PSH, IRS + 1, ISS + 1, b"x" * 100), [Expect(ACK, ISS + 1, IRS + 101)])
    assert h.host.counters["DelayedACKs"] == 0


def test_quick_ack_mode_ends_when_the_application_answers() -> None:
    """An interactive exchange (we send right after receiving) leaves quick-ACK mode: the next
    segment's ACK is delayed, to ride on the answer (Linux's pingpong mode)."""
    h = Harness(plain_config(delayed_ack=True))
    h.established()
    h.recv(ACK | PSH, IRS + 1, ISS + 1, b"x" * 100)
    h.conn.send(b"y" * 10, h.now)
    h.take()
    assert_segments(h.recv(ACK | PSH, IRS + 101, ISS + 11, b"z" * 100), [])
    assert [s.ack for s in h.advance(0.05)] == [IRS + 201]


# ---------------------------------------------------------------- 6. PSH per write
def test_psh_on_the_last_segment_of_each_write() -> None:
    """Linux marks the last segment of every write with PSH (tcp_push), not only the segment that
    empties the send buffer."""
    h = Harness(plain_config(nagle=False))
    h.established()
    h.conn.send(b"a" * (MSS + 100), h.now)
    h.conn.send(b"b" * MSS, h.now)
    out = h.take()
    assert [(s.seq, bool(s.flags & PSH)) for s in out] == [
        (seg_at(0), False), (seg_at(1), True), (seg_at(2), True)]
    # (segment 1 carries the end of the first write and 436 bytes of the second)


# ---------------------------------------------------------------- 7. FIN into a zero window
def test_a_bare_fin_is_accepted_at_a_zero_receive_window() -> None:
    """A FIN carries no data and takes no buffer: Linux accepts it when the window is zero
    (tcp_data_queue), so the peer does not loop FIN, ACK until the application reads."""
    h = Harness(plain_config(recv_buffer=1000))
    h.established()
    h.recv(ACK | PSH, IRS + 1, ISS + 1, b"x" * 1000)  # fills the window
    assert h.c.rcv_wnd == 0
    out = h.recv(FIN | ACK, IRS + 1001, ISS + 1)
    assert_segments(out, [Expect(ACK, ISS + 1, IRS + 1002, window=0)])
    assert h.c.state is S.CLOSE_WAIT


# ---------------------------------------------------------------- 8. orphans are bounded
def test_a_zero_window_orphan_is_aborted_once_its_backoff_reaches_the_max() -> None:
    """Linux (tcp_probe_timer, tcp_orphan_retries = 0): an orphan whose peer keeps answering
    zero-window probes is dropped once the probe backoff reaches RTO max, silently."""
    h = Harness(plain_config(nagle=False))
    h.established()
    h.recv(ACK, IRS + 1, ISS + 1, window=0)
    h.conn.send(b"q" * 100, h.now)
    h.conn.close(h.now)
    assert h.c.state is S.FIN_WAIT_1
    t = 0.0
    while h.c.state is not S.CLOSED and t < 3600:
        for seg in h.advance(10.0):
            if seg.flags == ACK:  # a probe: the peer answers, window still zero
                h.recv(ACK, IRS + 1, ISS + 1, window=0)
        t += 10.0
    assert h.c.state is S.CLOSED and t < 1200
    assert not any(s.flags & RST for s in h.take())
    assert h.host.counters["TCPAbortOnTimeout"] >= 1


def test_probes_without_answers_are_bounded_by_retries() -> None:
    """RFC 9293 §3.8.6.1 lets a sender probe a zero window forever while the receiver answers;
    when it stops answering, Linux gives up after tcp_retries2 probes (not an orphan)."""
    h = Harness(plain_config(nagle=False, retries=3))
    h.established()
    h.recv(ACK, IRS + 1, ISS + 1, window=0)
    h.conn.send(b"q" * 100, h.now)
    h.take()
    h.advance(600)
    assert h.c.state is S.CLOSED
    assert any(isinstance(e, Closed) and e.reason is CloseReason.TIMED_OUT for e in h.events)


def test_user_timeout_bounds_probing_even_with_answers() -> None:
    h = Harness(plain_config(nagle=False, user_timeout=30.0))
    h.established()
    h.recv(ACK, IRS + 1, ISS + 1, window=0)
    h.conn.send(b"q" * 100, h.now)
    h.take()
    for _ in range(20):
        for seg in h.advance(5.0):
            if seg.flags == ACK:
                h.recv(ACK, IRS + 1, ISS + 1, window=0)
    assert h.c.state is S.CLOSED


def test_too_many_orphans_reset_at_close() -> None:
    """Linux tcp_max_orphans: a close that would make one orphan too many resets instead
    (TCPAbortOnMemory)."""
    h = Harness(plain_config(max_orphans=0))
    h.established()
    h.conn.send(b"q" * 10, h.now)
    h.take()
    h.conn.close(h.now)
    out = h.take()
    assert [s.flags & RST for s in out] == [RST]
    assert h.c.state is S.CLOSED and h.host.counters["TCPAbortOnMemory"] == 1


# ---------------------------------------------------------------- 9. silent abort on time-out
def test_retransmissions_exhausted_abort_silently() -> None:
    """Linux's tcp_write_err: when the retries (or TCP_USER_TIMEOUT) run out the connection is
    dropped without a RST (a RST would not reach a peer that does not answer anyway)."""
    h = Harness(plain_config(nagle=False, retries=2))
    h.established()
    h.conn.send(b"q" * 10, h.now)
    h.take()
    out = h.advance(60.0)
    assert [s.flags for s in out] == [ACK | PSH, ACK | PSH]  # two retransmissions, then nothing
    assert h.c.state is S.CLOSED
    assert h.host.counters["TCPAbortOnTimeout"] == 1
