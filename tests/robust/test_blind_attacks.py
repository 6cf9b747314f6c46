"""Blind in-window attacks (RFC 5961): an off-path attacker knows the 4-tuple, not the sequence numbers.

Two hosts on the memory link stream data both ways while the attacker sprays RSTs, SYNs and data
segments with spoofed addresses into both ends. Nothing may be reset or corrupted unless a
segment hits exactly -- such lucky segments are recognised (`would_hit`) and kept out of the spray,
and exact hits are then made on purpose, where they must reset. Challenge ACKs stay at one per
0.5 s per connection, and the applications receive exactly what their real peer sent.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from stack.sim import Simulator
from stack.tcp import arrival
from stack.tcp.config import Config
from stack.tcp.connection import Connection
from stack.tcp.context import Context
from stack.tcp.events import Accepted, CloseReason, Readable
from stack.tcp.handle import ConnectionHandle
from stack.tcp.host import Host
from stack.tcp.seq import MASK, seq_add
from stack.tcp.states import State
from stack.wire.segment import ACK, PSH, RST, SYN, Segment
from tests.robust import load_tool

fuzz = load_tool("fuzz")
S = State
A_ADDR, B_ADDR, PORT = "198.18.0.1", "198.18.0.2", 7
INTERVAL = Config().challenge_ack_interval  # 0.5 s, Linux tcp_invalid_ratelimit


@pytest.fixture
def challenge_log(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[float]]:
    """When each connection actually sent a challenge ACK (the rate limiter let it through)."""
    log: dict[int, list[float]] = defaultdict(list)
    original = arrival.challenge_ack  # every challenge ACK of a connection is sent from there

    def logged(c: Connection, ctx: Context) -> None:
        before = ctx.counters["TCPChallengeACK"]
        original(c, ctx)
        if ctx.counters["TCPChallengeACK"] != before:
            log[id(c.handle)].append(ctx.now)

    monkeypatch.setattr(arrival, "challenge_ack", logged)
    return log


@dataclass
class Stream:
    """Two hosts, one connection, each application sending a known byte stream and reading all."""

    seed: int
    a: Host = field(init=False)
    b: Host = field(init=False)
    link: Simulator = field(init=False)
    ca: ConnectionHandle = field(init=False)
    cb: ConnectionHandle = field(init=False)
    sent: dict[int, bytearray] = field(default_factory=lambda: defaultdict(bytearray))
    got: dict[int, bytearray] = field(default_factory=lambda: defaultdict(bytearray))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.a = Host(A_ADDR, Config(secret=b"a" * 16))
        self.b = Host(B_ADDR, Config(secret=b"b" * 16))
        self.link = Simulator([self.a, self.b], delay=0.001)
        self.b.listen(PORT)
        self.ca = self.a.connect(B_ADDR, PORT, self.link.now)
        self.link.run_until(lambda: self.accepted() is not None, timeout=10)
        cb = self.accepted()
        assert cb is not None
        self.cb = cb

    def accepted(self) -> ConnectionHandle | None:
        for e in self.link.events_of(self.b):
            if isinstance(e, Accepted):
                return e.handle
        return None

    @property
    def conns(self) -> tuple[ConnectionHandle, ConnectionHandle]:
        return self.ca, self.cb

    def talk(self) -> None:
        """Each side writes a chunk of its stream."""
        for conn in self.conns:
            chunk = self.rng.randbytes(self.rng.randint(1, 3000))
            n = conn.send(chunk, self.link.now)
            self.sent[id(conn)] += chunk[:n]

    def read(self) -> None:
        self.link.collect()  # what the hosts did outside the link's steps (injected segments)
        for host in (self.a, self.b):
            events = self.link.events_of(host)
            for e in events:
                if isinstance(e, Readable) and e.handle in self.conns:
                    self.got[id(e.handle)] += e.handle.receive(self.link.now)
            events.clear()

    def run(self, seconds: float) -> None:
        self.link.run(seconds)
        self.read()

    def peer_of(self, conn: ConnectionHandle) -> ConnectionHandle:
        return self.cb if conn is self.ca else self.ca

    def intact(self) -> bool:
        return all(bytes(self.got[id(c)]) == bytes(self.sent[id(self.peer_of(c))]) for c in self.conns)

    def drain_and_close(self) -> None:
        """Everything sent arrives; then a four-way close, both ends normal."""
        for _ in range(2000):
            if all(len(self.got[id(c)]) == len(self.sent[id(self.peer_of(c))]) for c in self.conns):
                break
            self.run(0.01)
        assert self.intact(), "the application data differs from what the real peer sent"
        self.ca.close(self.link.now)
        self.link.run_until(lambda: self.cb.eof, timeout=30)
        self.cb.close(self.link.now)
        self.link.run_until(lambda: self.cb.state is S.CLOSED and self.ca.state is S.TIME_WAIT, timeout=30)
        assert self.ca.close_reason is CloseReason.NORMAL and self.cb.close_reason is CloseReason.NORMAL


@dataclass
class Spray:
    injected: int = 0
    lucky: int = 0  # segments that would have hit exactly, kept out of the spray
    answers: int = 0  # segments the victims sent straight back
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def spoofed(st: Stream, victim: ConnectionHandle, kind: str, rng: random.Random, *, in_window: bool) -> Segment:
    """A segment from the victim's peer's 4-tuple. Blind: SEQ/ACK uniform over 2**32. With `in_window`
    the attacker knows roughly where the window is (it never knows RCV.NXT exactly)."""
    la, lp, ra, rp = victim.four_tuple
    v = Host.tcb(victim)
    seq = seq_add(v.rcv_nxt, rng.randint(1, max(1, v.rcv_wnd - 1))) if in_window else rng.getrandbits(32)
    ack = rng.getrandbits(32)
    if kind == "rst":
        return Segment(ra, la, rp, lp, seq, 0, RST, 0)
    if kind == "syn":
        return Segment(ra, la, rp, lp, seq, 0, SYN, 65535)
    payload = rng.randbytes(rng.randint(1, 200))
    return Segment(ra, la, rp, lp, seq, ack, ACK | PSH, rng.randrange(65536), 0, payload=payload)


def attack(st: Stream, seconds: float, per_step: int, kinds: tuple[str, ...], *, in_window: bool = False,
           rng: random.Random | None = None) -> Spray:
    """Both applications talk every 10 ms; between link steps of 2 ms the attacker injects `per_step`
    segments into each end. Both connections must stay ESTABLISHED throughout."""
    rng = rng or random.Random(st.seed + 1)
    spray = Spray()
    steps = int(seconds / 0.002)
    for step in range(steps):
        if step % 5 == 0:
            st.talk()
        for victim in st.conns:
            host = st.a if victim is st.ca else st.b
            for _ in range(per_step):
                kind = rng.choice(kinds)
                seg = spoofed(st, victim, kind, rng, in_window=in_window)
                if fuzz.would_hit(Host.tcb(victim), seg):
                    spray.lucky += 1
                    continue
                out_before = host.counters["OutSegs"]
                host.on_segment(seg, st.link.now)
                spray.answers += host.counters["OutSegs"] - out_before
                spray.injected += 1
                spray.kinds[kind] += 1
        st.run(0.002)
        assert st.ca.state is S.ESTABLISHED and st.cb.state is S.ESTABLISHED, f"reset at step {step}"
    return spray


def assert_rate_limited(log: dict[int, list[float]], conns: Iterator[ConnectionHandle] | tuple[ConnectionHandle, ...],
                        seconds: float) -> int:
    total = 0
    for conn in conns:
        times = log.get(id(conn), [])
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= INTERVAL - 1e-9 for g in gaps), f"challenge ACKs closer than {INTERVAL} s: {min(gaps)}"
        assert len(times) <= seconds / INTERVAL + 1
        total += len(times)
    return total


# ---------------------------------------------------------------------------------------------- blind spray
def test_blind_spray_of_rst_syn_and_data_changes_nothing(challenge_log: dict[int, list[float]]) -> None:
    st = Stream(seed=1)
    seconds = 10.0
    spray = attack(st, seconds, per_step=2, kinds=("rst", "syn", "data"))
    assert spray.injected >= 19_000
    for host in (st.a, st.b):
        assert host.counters["EstabResets"] == 0
        assert host.counters["TCPAbortOnData"] == 0
    assert_rate_limited(challenge_log, st.conns, seconds)
    st.drain_and_close()


def test_in_window_spray_gets_rate_limited_challenge_acks_only(challenge_log: dict[int, list[float]]) -> None:
    """The attacker knows where the window is (not RCV.NXT): every RST and SYN lands in it and asks
    for a challenge ACK; data carries a random ACK, which RFC 5961 §5 rejects. At most one challenge
    ACK per 0.5 s per connection goes out; nothing is reset, no byte is injected."""
    st = Stream(seed=2)
    seconds = 10.0
    spray = attack(st, seconds, per_step=1, kinds=("rst", "syn", "data"), in_window=True)
    sent = assert_rate_limited(challenge_log, st.conns, seconds)
    skipped = st.a.counters["TCPACKSkippedChallenge"] + st.b.counters["TCPACKSkippedChallenge"]
    assert sent >= 2 * (seconds / INTERVAL) * 0.9, "the spray should keep the limiter busy"
    assert skipped > 10 * sent
    assert spray.injected >= 9_000
    st.drain_and_close()


def test_exact_rst_resets_in_the_middle_of_the_stream() -> None:
    st = Stream(seed=3)
    attack(st, 1.0, per_step=1, kinds=("rst", "syn", "data"))
    victim = st.cb
    la, lp, ra, rp = victim.four_tuple
    st.b.on_segment(Segment(ra, la, rp, lp, Host.tcb(victim).rcv_nxt, 0, RST, 0), st.link.now)
    assert victim.state is S.CLOSED and victim.close_reason is CloseReason.RESET
    assert st.b.counters["EstabResets"] == 1
    assert victim.four_tuple not in st.b.connections


def test_exact_syn_is_only_challenged() -> None:
    """RFC 5961 §4: even a SYN at exactly RCV.NXT resets nothing; it gets a challenge ACK."""
    st = Stream(seed=4)
    st.talk()
    st.run(0.1)
    victim = st.cb
    la, lp, ra, rp = victim.four_tuple
    before = st.b.counters["TCPChallengeACK"]
    st.b.on_segment(Segment(ra, la, rp, lp, Host.tcb(victim).rcv_nxt, 0, SYN, 65535), st.link.now)
    assert victim.state is S.ESTABLISHED
    assert st.b.counters["TCPChallengeACK"] == before + 1
    st.drain_and_close()


@pytest.mark.parametrize("which", ["too_old", "above"])
def test_data_at_exact_seq_with_unacceptable_ack_is_not_delivered(which: str) -> None:
    """RFC 5961 §5: guessing RCV.NXT is not enough to inject data -- the ACK must also be in
    [SND.UNA - MAX.SND.WND, SND.NXT], else the segment is dropped (challenge ACK)."""
    st = Stream(seed=5)
    st.talk()
    st.run(0.1)
    victim = st.cb
    la, lp, ra, rp = victim.four_tuple
    v = Host.tcb(victim)
    ack = (v.snd_una - v.max_snd_wnd - 1) & MASK if which == "too_old" else seq_add(v.snd_max, 1)
    st.b.on_segment(Segment(ra, la, rp, lp, v.rcv_nxt, ack, ACK | PSH, 65535, payload=b"EVIL"), st.link.now)
    st.read()
    assert b"EVIL" not in st.got[id(victim)]
    assert victim.state is S.ESTABLISHED
    st.drain_and_close()


def test_exact_hit_with_acceptable_ack_is_what_would_hit_means() -> None:
    """The other side of `would_hit`, which keeps lucky segments out of the sprays: a segment it
    flags really does get through (here: data at RCV.NXT with an acceptable ACK is delivered)."""
    st = Stream(seed=6)
    victim = st.cb
    la, lp, ra, rp = victim.four_tuple
    v = Host.tcb(victim)
    seg = Segment(ra, la, rp, lp, v.rcv_nxt, v.snd_una, ACK | PSH, 65535, payload=b"LUCKY")
    assert fuzz.would_hit(v, seg)
    st.b.on_segment(seg, st.link.now)
    st.read()
    assert bytes(st.got[id(victim)]) == b"LUCKY"
    rst = Segment(ra, la, rp, lp, v.rcv_nxt, 0, RST, 0)
    assert fuzz.would_hit(v, rst)
    assert not fuzz.would_hit(v, Segment(ra, la, rp, lp, seq_add(v.rcv_nxt, 1), 0, RST, 0))


def test_blind_syn_spray_is_answered_at_most_once_per_interval() -> None:
    st = Stream(seed=7)
    spray = attack(st, 2.0, per_step=1, kinds=("syn",))
    assert spray.injected >= 1_900
    # RFC 5961 §4.2 + §7: each connection answers at most one SYN per 0.5 s.
    assert spray.answers <= 2 * (2.0 / INTERVAL + 1), f"{spray.answers} ACKs for {spray.injected} spoofed SYNs"
