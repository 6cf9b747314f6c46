"""One test per rule of docs/closing-rules.md: the general rules of every synchronized state, then each
cell of the per-state table. Each feeds one segment and asserts the exact segments out."""

from __future__ import annotations

import pytest

from stack.tcp.events import Closed, CloseReason, EndOfStream, Readable
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, PSH, RST, SYN, TcpOptions
from tests.core.harness import IRS, ISS, Expect, Harness, assert_segments, plain_config

S = State
SYNC = [S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK]


def ack_now(h: Harness) -> Expect:
    """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"""
    return Expect(ACK, h.c.snd_nxt, h.c.rcv_nxt)


# ---------------------------------------------------------------- every synchronized state
@pytest.mark.parametrize("state", SYNC, ids=str)
def test_unacceptable_segment_is_acked_and_dropped(state: State) -> None:
    h = Harness().in_state(state)
    far = h.c.rcv_nxt + 10 * 65535  # beyond the right edge of the window
    assert_segments(h.recv(ACK, far, h.c.snd_una, b"x" * 10), [ack_now(h)])
    assert h.state is state


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_old_duplicate_data_is_acked_and_dropped(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(ACK, h.c.rcv_nxt - 100, h.c.snd_una, b"x" * 50), [ack_now(h)])
    assert h.state is state


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_rst_outside_window_is_dropped_silently(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(RST, h.c.rcv_nxt + 10 * 65535), [])
    assert h.state is state


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_exact_rst_resets(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(RST, h.c.rcv_nxt), [])
    assert h.c.state is S.CLOSED
    assert not h.host.connections
    assert h.c.close_reason is CloseReason.RESET


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_in_window_rst_gets_rate_limited_challenge_ack(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(RST, h.c.rcv_nxt + 1), [ack_now(h)])
    assert h.state is state
    # A second one within the 500 ms limit is not answered (RFC 5961 §7) ...
    h.now += 0.1
    assert_segments(h.recv(RST, h.c.rcv_nxt + 2), [])
    assert h.host.counters["TCPChallengeACK"] == 1
    assert h.host.counters["TCPACKSkippedChallenge"] == 1
    # ... one after it is.
    h.now += 0.5
    assert_segments(h.recv(RST, h.c.rcv_nxt + 3), [ack_now(h)])
    assert h.state is state


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_syn_gets_challenge_ack(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(SYN, h.c.rcv_nxt + 12345), [ack_now(h)])
    assert h.state is state
    assert h.host.counters["TCPSYNChallenge"] == 1


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_segment_without_ack_is_dropped(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(0, h.c.rcv_nxt, 0, b"data"), [])
    assert h.state is state
    assert h.c.recv_queue_len == 0


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_ack_of_unsent_data_is_acked_and_dropped(state: State) -> None:
    h = Harness().in_state(state)
    assert_segments(h.recv(ACK, h.c.rcv_nxt, h.c.snd_nxt + 1000), [ack_now(h)])
    assert h.state is state


@pytest.mark.parametrize("state", SYNC, ids=str)
def test_ack_older_than_max_window_is_challenged(state: State) -> None:
    """RFC 5961 §5: SEG.ACK < SND.UNA - MAX.SND.WND is discarded with an ACK."""
    h = Harness().in_state(state)
    assert_segments(h.recv(ACK, h.c.rcv_nxt, h.c.snd_una - 70000), [ack_now(h)])
    assert h.state is state


def test_paws_rejects_old_timestamp() -> None:
    h = Harness(plain_config(timestamps=True))
    h.listen()
    h.recv(SYN, IRS, options=TcpOptions(timestamp=(100, 0)))
    h.conn = h.host.connections[next(iter(h.host.connections))].handle
    h.recv(ACK, IRS + 1, ISS + 1, options=TcpOptions(timestamp=(101, h.c.tsval(h.now))))
    assert h.c.state is S.ESTABLISHED and h.c.ts_recent == 101
    out = h.recv(ACK, IRS + 1, ISS + 1, b"old", options=TcpOptions(timestamp=(50, 0)))
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == IRS + 1
    assert h.c.recv_queue_len == 0
    assert h.host.counters["PAWSEstab"] == 1


# ---------------------------------------------------------------- FIN-WAIT-1
def test_fin_wait_1_fin_before_our_fin_acked_goes_closing() -> None:
    h = Harness().fin_wait_1()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 1), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.c.state is S.CLOSING


def test_simultaneous_close_fin_and_ack_in_one_batch_acks_the_fin() -> None:
    """FIN-WAIT-1: the peer's FIN (not yet acking ours) and then its ACK of our FIN arrive in one
    batch, before the host's output is taken. The FIN must still be acknowledged: the connection
    moves CLOSING -> TIME-WAIT within the batch, and the ACK it owed goes out as it leaves."""
    h = Harness().fin_wait_1()
    h.host.on_segment(h.segment(FIN | ACK, IRS + 1, ISS + 1), h.now)
    h.host.on_segment(h.segment(ACK, IRS + 2, ISS + 2), h.now)
    assert_segments(h.take(), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.state is S.TIME_WAIT
    assert [new for _, _, new, _ in h.c.history][-2:] == [S.CLOSING, S.TIME_WAIT]


def test_fin_wait_1_fin_with_ack_of_our_fin_goes_time_wait() -> None:
    h = Harness().fin_wait_1()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 2), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.state is S.TIME_WAIT
    assert [new for _, _, new, _ in h.c.history][-2:] == [S.FIN_WAIT_2, S.TIME_WAIT]


def test_fin_wait_1_ack_of_fin_goes_fin_wait_2() -> None:
    h = Harness().fin_wait_1()
    assert_segments(h.recv(ACK, IRS + 1, ISS + 2), [])
    assert h.c.state is S.FIN_WAIT_2


def test_fin_wait_1_data_is_accepted_after_shutdown() -> None:
    h = Harness().fin_wait_1()
    assert_segments(h.recv(ACK | PSH, IRS + 1, ISS + 1, b"late"), [Expect(ACK, ISS + 2, IRS + 5)])
    assert h.conn.receive(h.now) == b"late"
    assert h.c.state is S.FIN_WAIT_1


def test_fin_wait_1_data_after_full_close_is_reset() -> None:
    h = Harness().fin_wait_1(orphan=True)
    assert_segments(h.recv(ACK | PSH, IRS + 1, ISS + 1, b"late"), [Expect(RST, ISS + 1)])
    assert h.c.state is S.CLOSED
    assert h.host.counters["TCPAbortOnData"] == 1


# ---------------------------------------------------------------- FIN-WAIT-2
def test_fin_wait_2_fin_goes_time_wait() -> None:
    h = Harness().fin_wait_2()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 2), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.state is S.TIME_WAIT
    assert h.host.time_wait[h.c.four_tuple].deadline == pytest.approx(h.now + 60.0)


def test_fin_wait_2_half_close_keeps_receiving() -> None:
    h = Harness().fin_wait_2()
    for i in range(3):
        out = h.recv(ACK, IRS + 1 + 100 * i, ISS + 2, b"d" * 100)
        assert_segments(out, [Expect(ACK, ISS + 2, IRS + 101 + 100 * i)])
    assert h.conn.receive(h.now) == b"d" * 300
    assert h.c.state is S.FIN_WAIT_2


def test_fin_wait_2_data_after_full_close_is_reset() -> None:
    h = Harness().fin_wait_2(orphan=True)
    assert_segments(h.recv(ACK, IRS + 1, ISS + 2, b"x"), [Expect(RST, ISS + 2)])
    assert h.c.state is S.CLOSED


def test_fin_wait_2_ack_is_ordinary() -> None:
    h = Harness().fin_wait_2()
    assert_segments(h.recv(ACK, IRS + 1, ISS + 2, window=1000), [])
    assert h.c.state is S.FIN_WAIT_2 and h.c.snd_wnd == 1000


# ---------------------------------------------------------------- CLOSE-WAIT
def test_close_wait_retransmitted_fin_is_acked() -> None:
    h = Harness().close_wait()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 1), [Expect(ACK, ISS + 1, IRS + 2)])
    assert h.c.state is S.CLOSE_WAIT


def test_close_wait_sends_data_and_takes_acks() -> None:
    h = Harness().close_wait()
    h.conn.send(b"reply", h.now)
    assert_segments(h.take(), [Expect(ACK | PSH, ISS + 1, IRS + 2, b"reply")])
    assert_segments(h.recv(ACK, IRS + 2, ISS + 6), [])
    assert h.c.snd_una == ISS + 6 and h.c.state is S.CLOSE_WAIT


def test_close_wait_ignores_data_beyond_fin() -> None:
    h = Harness().close_wait()
    # Anything at or past the peer's FIN is outside what it may still send: ACKed, not queued.
    out = h.recv(ACK, IRS + 2, ISS + 1, b"zzz")
    assert_segments(out, [])
    assert h.c.recv_queue_len == 0 and h.c.state is S.CLOSE_WAIT


# ---------------------------------------------------------------- CLOSING
def test_closing_retransmitted_fin_is_acked() -> None:
    h = Harness().closing()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 1), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.c.state is S.CLOSING


def test_closing_ack_of_fin_goes_time_wait() -> None:
    h = Harness().closing()
    assert_segments(h.recv(ACK, IRS + 2, ISS + 2), [])
    assert h.state is S.TIME_WAIT


def test_closing_data_is_ignored() -> None:
    h = Harness().closing()
    h.recv(ACK, IRS + 2, ISS + 1, b"x")
    assert h.c.recv_queue_len == 0 and h.c.state is S.CLOSING


# ---------------------------------------------------------------- LAST-ACK
def test_last_ack_retransmitted_fin_is_acked() -> None:
    h = Harness().last_ack()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 1), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.c.state is S.LAST_ACK


def test_last_ack_ack_of_fin_closes() -> None:
    h = Harness().last_ack()
    assert_segments(h.recv(ACK, IRS + 2, ISS + 2), [])
    assert h.c.state is S.CLOSED
    assert not h.host.connections and not h.host.time_wait
    assert any(isinstance(e, Closed) and e.reason is CloseReason.NORMAL for e in h.events)


def test_last_ack_data_is_ignored() -> None:
    h = Harness().last_ack()
    h.recv(ACK, IRS + 2, ISS + 1, b"x")
    assert h.c.recv_queue_len == 0 and h.c.state is S.LAST_ACK


# ---------------------------------------------------------------- TIME-WAIT
def test_time_wait_retransmitted_fin_is_acked_and_restarts_2msl() -> None:
    h = Harness().time_wait()
    h.advance(30.0)
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 2), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.host.time_wait[h.c.four_tuple].deadline == pytest.approx(h.now + 60.0)
    h.advance(59.0)
    assert h.state is S.TIME_WAIT
    h.advance(1.5)
    assert not h.host.time_wait


def test_time_wait_expires_after_2msl() -> None:
    h = Harness(plain_config(msl=5.0)).time_wait()
    h.advance(9.9)
    assert h.state is S.TIME_WAIT
    h.advance(0.2)
    assert not h.host.time_wait
    assert len(h.host.wheel) == 0


@pytest.mark.parametrize("rfc1337", [False, True])
def test_time_wait_exact_rst(rfc1337: bool) -> None:
    h = Harness(plain_config(rfc1337=rfc1337)).time_wait()
    assert_segments(h.recv(RST, IRS + 2), [])
    assert (h.c.four_tuple in h.host.time_wait) is rfc1337


def test_time_wait_inexact_rst_is_challenged_in_window_and_ignored_outside() -> None:
    """RFC 5961 §3.2 in TIME-WAIT too (Linux ignores both; RFC 9293 is the authority here)."""
    h = Harness().time_wait()
    assert_segments(h.recv(RST, IRS + 50), [Expect(ACK, ISS + 2, IRS + 2)])
    assert_segments(h.recv(RST, IRS + 60), [])  # rate-limited
    h.now += 1.0
    assert_segments(h.recv(RST, IRS + 2 + 10 * 65535), [])  # outside the window
    assert h.c.four_tuple in h.host.time_wait and h.host.counters["TCPChallengeACK"] == 1


def test_time_wait_syn_with_higher_seq_reopens() -> None:
    h = Harness().time_wait()
    out = h.recv(SYN, IRS + 100_000)
    # ISN = old SND.NXT + 65535 + 2, as Linux picks (RFC 6191 / docs/closing-rules.md)
    assert_segments(out, [Expect(SYN | ACK, ISS + 2 + 65537, IRS + 100_001)])
    assert h.c.four_tuple not in h.host.time_wait
    assert h.host.connections[h.c.four_tuple].state is S.SYN_RECEIVED


def test_time_wait_old_syn_is_acked() -> None:
    h = Harness().time_wait()
    assert_segments(h.recv(SYN, IRS - 100), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.c.four_tuple in h.host.time_wait


def test_time_wait_syn_reopen_off_acks() -> None:
    h = Harness(plain_config(syn_reopen_time_wait=False)).time_wait()
    assert_segments(h.recv(SYN, IRS + 100_000), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.c.four_tuple in h.host.time_wait


def test_time_wait_data_is_acked_not_delivered() -> None:
    h = Harness().time_wait()
    assert_segments(h.recv(ACK, IRS + 2, ISS + 2, b"x"), [Expect(ACK, ISS + 2, IRS + 2)])


# ---------------------------------------------------------------- user calls
def test_close_in_established_sends_fin() -> None:
    h = Harness().established()
    h.conn.close(h.now)
    assert_segments(h.take(), [Expect(FIN | ACK, ISS + 1, IRS + 1)])
    assert h.c.state is S.FIN_WAIT_1


def test_close_queues_fin_after_pending_data() -> None:
    h = Harness().established()
    h.conn.send(b"a" * 100, h.now)
    assert_segments(h.take(), [Expect(ACK | PSH, ISS + 1, IRS + 1, b"a" * 100)])
    h.conn.send(b"b" * 50, h.now)  # held back by Nagle: 100 bytes are unacknowledged
    assert_segments(h.take(), [])
    h.conn.close(h.now)
    # The FIN rides on the last data segment (RFC 9293 §3.10.4: FIN after pending data).
    assert_segments(h.take(), [Expect(ACK | PSH | FIN, ISS + 101, IRS + 1, b"b" * 50)])
    assert h.c.state is S.FIN_WAIT_1 and h.c.fin_seq == ISS + 151


def test_close_in_close_wait_sends_fin() -> None:
    h = Harness().close_wait()
    h.conn.close(h.now)
    assert_segments(h.take(), [Expect(FIN | ACK, ISS + 1, IRS + 2)])
    assert h.c.state is S.LAST_ACK


@pytest.mark.parametrize("state", [S.FIN_WAIT_1, S.FIN_WAIT_2], ids=str)
def test_no_second_fin(state: State) -> None:
    h = Harness().in_state(state)
    h.conn.close(h.now)
    assert_segments(h.take(), [])
    assert h.c.state is state


def test_close_with_unread_data_sends_rst() -> None:
    h = Harness().established()
    h.recv(ACK, IRS + 1, ISS + 1, b"unread")
    h.conn.close(h.now)
    assert_segments(h.take(), [Expect(RST | ACK, ISS + 1, IRS + 7)])
    assert h.c.state is S.CLOSED
    assert h.host.counters["TCPAbortOnClose"] == 1


@pytest.mark.parametrize("state", [S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT],
                         ids=str)
def test_abort_sends_rst_and_skips_time_wait(state: State) -> None:
    h = Harness().in_state(state)
    h.conn.abort(h.now)
    assert_segments(h.take(), [Expect(RST | ACK, h.c.snd_nxt, h.c.rcv_nxt)])
    assert h.c.state is S.CLOSED and not h.host.time_wait


def test_linger_zero_close_sends_rst() -> None:
    h = Harness().established()
    h.c.linger0 = True
    h.conn.close(h.now)
    assert_segments(h.take(), [Expect(RST | ACK, ISS + 1, IRS + 1)])
    assert not h.host.time_wait


def test_shutdown_read_sends_nothing() -> None:
    h = Harness().established()
    h.conn.shutdown(h.now, read=True, write=False)
    assert_segments(h.take(), [])
    assert h.c.state is S.ESTABLISHED


def test_half_close_delivers_data_then_eof() -> None:
    h = Harness().fin_wait_2()
    h.recv(ACK | PSH, IRS + 1, ISS + 2, b"tail")
    h.recv(FIN | ACK, IRS + 5, ISS + 2)
    kinds = [type(e) for e in h.events if isinstance(e, Readable | EndOfStream)]
    assert kinds == [Readable, EndOfStream]
    assert h.conn.receive(h.now) == b"tail"


# ---------------------------------------------------------------- closing-state timers
@pytest.mark.parametrize("state", [S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK], ids=str)
def test_fin_is_retransmitted_with_same_seq_and_backoff(state: State) -> None:
    h = Harness().in_state(state)
    fin_seq = h.c.fin_seq
    times = []
    for _ in range(3):
        start = h.now
        out = h.advance(10.0 if not times else 2 * times[-1] + 0.01)
        fins = [s for s in out if s.flags & FIN]
        assert fins and all(s.seq == fin_seq for s in fins)
        times.append(h.now - start)
    assert h.host.counters["RetransSegs"] >= 3


def test_fin_retries_exhausted_time_out_silently() -> None:
    """Our FIN goes `retries` more times, then the connection is dropped without a RST (Linux's
    tcp_write_err: a peer that answers nothing would not see it anyway)."""
    h = Harness(plain_config(retries=3)).fin_wait_1()
    out = h.advance(60.0)
    assert [s.flags & (FIN | RST) for s in out] == [FIN, FIN, FIN]
    assert h.c.state is S.CLOSED and h.c.close_reason is CloseReason.TIMED_OUT


def test_orphan_fin_wait_2_times_out() -> None:
    h = Harness(plain_config(fin_timeout=10.0)).fin_wait_2(orphan=True)
    assert_segments(h.advance(9.9), [])
    assert h.c.state is S.FIN_WAIT_2
    assert_segments(h.advance(0.2), [])
    assert h.c.state is S.CLOSED
    assert h.host.counters["TCPFinTimeout"] == 1


def test_fin_wait_2_after_shutdown_has_no_timeout() -> None:
    h = Harness(plain_config(fin_timeout=10.0)).fin_wait_2()
    h.advance(100.0)
    assert h.c.state is S.FIN_WAIT_2


def test_time_wait_cap_skips_time_wait() -> None:
    h = Harness(plain_config(max_time_wait=0)).fin_wait_2()
    assert_segments(h.recv(FIN | ACK, IRS + 1, ISS + 2), [Expect(ACK, ISS + 2, IRS + 2)])
    assert h.c.state is S.CLOSED and not h.host.time_wait
    assert h.host.counters["TCPTimeWaitOverflow"] == 1
