"""SACK-based loss recovery (RFC 6675): the sender resends the holes the scoreboard shows and
nothing the receiver already holds."""

from __future__ import annotations

from stack.tcp.config import Config
from stack.tcp.events import Accepted
from stack.tcp.states import State
from stack.wire.segment import ACK, SYN, Segment, TcpOptions
from tests.core.harness import IRS, ISS, LOCAL, LPORT, REMOTE, RPORT, Harness, plain_config
from tests.scenarios.pair import A_ADDR, B_ADDR, PORT, Pair

MSS = 536


def sack_established() -> Harness:
    h = Harness(plain_config(sack=True))
    h.listen()
    h.recv(SYN, IRS, options=TcpOptions(sack_permitted=True))
    h.conn = h.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
    h.recv(ACK, IRS + 1, ISS + 1)
    assert h.c.state is State.ESTABLISHED and h.c.sack_ok
    h.c.cfg = h.c.cfg.with_changes(nagle=False)
    return h


def seg_at(i: int) -> int:
    return ISS + 1 + i * MSS


def test_holes_are_resent_and_sacked_data_is_not() -> None:
    h = sack_established()
    h.conn.send(b"d" * (10 * MSS), h.now)
    assert [s.seq for s in h.take()] == [seg_at(i) for i in range(10)]
    # Segments 1 and 4 are lost; the receiver SACKs what came after each hole.
    sacks = [((seg_at(2), seg_at(3)),),
             ((seg_at(2), seg_at(4)),),
             ((seg_at(5), seg_at(7)), (seg_at(2), seg_at(4))),
             ((seg_at(5), seg_at(10)), (seg_at(2), seg_at(4)))]
    out: list[Segment] = []
    for blocks in sacks:
        out += h.recv(ACK, IRS + 1, seg_at(1), options=TcpOptions(sack_blocks=blocks))
    assert h.c.recovery.in_recovery and h.host.counters["TCPFastRetrans"] == 1
    resent = [s.seq for s in out if s.payload]
    assert resent == [seg_at(1), seg_at(4)]  # both holes, each once; nothing SACKed
    # The cumulative ACK covering everything ends recovery.
    h.recv(ACK, IRS + 1, seg_at(10))
    assert not h.c.recovery.in_recovery and h.c.recovery.sacked == []
    assert h.host.counters["TCPTimeouts"] == 0


def test_recovery_starts_on_sack_evidence_before_three_duplicates() -> None:
    h = sack_established()
    h.conn.send(b"d" * (8 * MSS), h.now)
    h.take()
    # One duplicate ACK already SACKs more than (DupThresh - 1) * SMSS above the hole: RFC 6675 IsLost.
    out = h.recv(ACK, IRS + 1, seg_at(0), options=TcpOptions(sack_blocks=((seg_at(1), seg_at(5)),)))
    assert h.c.recovery.in_recovery and [s.seq for s in out if s.payload][:1] == [seg_at(0)]


def _transfer_with_burst_losses(sack: bool) -> tuple[int, int, float]:
    """1 MiB over a 10 Mbit/s bottleneck (so segments arrive spread out and the receiver sends
    duplicate ACKs with SACK blocks, as on a real path), losing three segments of one window in
    every 150. Returns (retransmitted segments, timeouts, seconds)."""
    free_at = [0.0]
    count = [0]
    rate = 10e6 / 8

    def bottleneck(seg: Segment, now: float) -> list[tuple[Segment, float]]:
        if seg.src_addr != A_ADDR or not seg.payload:
            return [(seg, 0.0)]
        start = max(now, free_at[0])
        free_at[0] = start + (len(seg.payload) + 52) / rate
        count[0] += 1
        if count[0] % 150 in (50, 52, 54):
            return []
        return [(seg, free_at[0] - now)]

    p = Pair(Config(msl=1.0, sack=sack, secret=b"k" * 16), delay=0.02, hooks=[bottleneck])
    client = p.a.connect(B_ADDR, PORT, p.now)
    p.link.run(0.2)
    server = next(e.handle for e in p.events(p.b) if isinstance(e, Accepted))
    blob = bytes(range(256)) * 4096
    sent, got = 0, bytearray()
    while len(got) < len(blob):
        if sent < len(blob):
            sent += client.send(blob[sent:], p.now)
        p.link.step()
        got += server.receive(p.now)
    assert bytes(got) == blob
    return p.a.counters["RetransSegs"], p.a.counters["TCPTimeouts"], p.now


def test_sack_repairs_several_losses_per_window_in_one_round_trip() -> None:
    rtx_sack, timeouts_sack, t_sack = _transfer_with_burst_losses(True)
    rtx_plain, _, t_plain = _transfer_with_burst_losses(False)
    assert timeouts_sack == 0
    assert rtx_sack <= rtx_plain  # only the holes
    assert t_sack < t_plain  # NewReno repairs one hole per round trip, SACK all of them in one
