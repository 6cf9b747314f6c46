"""Build a connection of the host under test in any state and talk to it segment by segment.

The test plays the remote peer by hand: `h.recv(...)` feeds one segment to the host at the current
virtual time and returns what the host sent in answer; `assert_segments` compares those with the
exact segments expected, in smoltcp's `send!`/`recv!` style.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.tcp.config import Config
from stack.tcp.connection import Connection
from stack.tcp.events import Accepted, Event
from stack.tcp.handle import ConnectionHandle
from stack.tcp.host import Host, Listener
from stack.tcp.states import State
from stack.wire.segment import ACK, FIN, SYN, Segment, TcpOptions, flags_text

LOCAL = "198.18.0.2"
REMOTE = "198.18.0.1"
LPORT = 80
RPORT = 40000
ISS = 1000  # ours
IRS = 5000  # the peer's
WIN = 65535  # what an unscaled 4 MiB receive buffer advertises

S = State


@dataclass(frozen=True)
class Expect:
    flags: int
    seq: int
    ack: int = 0
    payload: bytes = b""
    window: int | None = None  # None: don't care

    def matches(self, seg: Segment) -> bool:
        return (
            seg.flags == self.flags
            and seg.seq == self.seq
            and (seg.ack == self.ack or (not self.flags & ACK and self.ack == 0))
            and seg.payload == self.payload
            and (self.window is None or seg.window == self.window)
        )

    def __repr__(self) -> str:
        return f"[{flags_text(self.flags)}] seq={self.seq} ack={self.ack} len={len(self.payload)}"


def plain_config(**changes: object) -> Config:
    """No options, no delayed ACK, fixed ISS: every field of every segment is predictable."""
    base: dict[str, object] = dict(
        isn=lambda four_tuple, now: ISS,
        timestamps=False,
        sack=False,
        window_scaling=False,
        delayed_ack=False,
        secret=b"k" * 16,
    )
    base.update(changes)
    return Config(**base)  # type: ignore[arg-type]


class Harness:
    def __init__(self, config: Config | None = None) -> None:
        self.config = config or plain_config()
        self.host = Host(LOCAL, self.config)
        self.now = 0.0
        self.events: list[Event] = []
        self.conn: ConnectionHandle | None = None
        self.listener: Listener | None = None

    # ---- the peer's side
    def segment(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"", window: int = WIN,
                options: TcpOptions | None = None, sport: int = RPORT) -> Segment:
        return Segment(REMOTE, LOCAL, sport, LPORT if self.conn is None else self.conn.four_tuple[1], seq, ack,
                       flags, window, 0, options or TcpOptions(), payload)

    def recv(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"", **kw: object) -> list[Segment]:
        """Deliver one segment from the peer; return the host's answer."""
        self.host.on_segment(self.segment(flags, seq, ack, payload, **kw), self.now)  # type: ignore[arg-type]
        return self.take()

    def feed(self, seg: Segment) -> list[Segment]:
        self.host.on_segment(seg, self.now)
        return self.take()

    def take(self) -> list[Segment]:
        out = self.host.take(self.now)
        self.events.extend(out.events)
        return out.segments

    def advance(self, seconds: float) -> list[Segment]:
        """Let virtual time pass, firing timers on the way (in deadline order)."""
        end = self.now + seconds
        sent: list[Segment] = []
        while True:
            deadline = self.host.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.host.on_timers(self.now)
            sent += self.take()
        self.now = end
        self.host.on_timers(self.now)
        return sent + self.take()

    @property
    def c(self) -> Connection:
        """The TCB under test (white-box: RFC 9293's variables)."""
        assert self.conn is not None
        return Host.tcb(self.conn)

    @property
    def state(self) -> State:
        key = (LOCAL, self.c.four_tuple[1], REMOTE, self.c.four_tuple[3])
        if key in self.host.time_wait:
            return S.TIME_WAIT
        return self.c.state

    # ---- fixtures: the host's connection in a given state
    def listen(self) -> Harness:
        self.listener = self.host.listen(LPORT)
        return self

    def syn_received(self) -> Harness:
        self.listen()
        out = self.recv(SYN, IRS)
        assert_segments(out, [Expect(SYN | ACK, ISS, IRS + 1)])
        handle = self.host.connections[(LOCAL, LPORT, REMOTE, RPORT)].handle
        assert handle is not None
        self.conn = handle
        return self

    def established(self) -> Harness:
        self.syn_received()
        assert_segments(self.recv(ACK, IRS + 1, ISS + 1), [])
        assert self.c.state is S.ESTABLISHED
        assert any(isinstance(e, Accepted) for e in self.events)
        return self

    def syn_sent(self) -> Harness:
        self.conn = self.host.connect(REMOTE, RPORT, self.now, local_port=LPORT)
        assert_segments(self.take(), [Expect(SYN, ISS)])
        return self

    def fin_wait_1(self, orphan: bool = False) -> Harness:
        self.established()
        if orphan:
            self.conn.close(self.now)
        else:
            self.conn.shutdown(self.now)
        assert_segments(self.take(), [Expect(FIN | ACK, ISS + 1, IRS + 1)])
        assert self.c.state is S.FIN_WAIT_1
        return self

    def fin_wait_2(self, orphan: bool = False) -> Harness:
        self.fin_wait_1(orphan)
        assert_segments(self.recv(ACK, IRS + 1, ISS + 2), [])
        assert self.c.state is S.FIN_WAIT_2
        return self

    def close_wait(self) -> Harness:
        self.established()
        assert_segments(self.recv(FIN | ACK, IRS + 1, ISS + 1), [Expect(ACK, ISS + 1, IRS + 2)])
        assert self.c.state is S.CLOSE_WAIT
        return self

    def last_ack(self) -> Harness:
        self.close_wait()
        self.conn.close(self.now)
        assert_segments(self.take(), [Expect(FIN | ACK, ISS + 1, IRS + 2)])
        assert self.c.state is S.LAST_ACK
        return self

    def closing(self) -> Harness:
        self.fin_wait_1()
        assert_segments(self.recv(FIN | ACK, IRS + 1, ISS + 1), [Expect(ACK, ISS + 2, IRS + 2)])
        assert self.c.state is S.CLOSING
        return self

    def time_wait(self) -> Harness:
        self.fin_wait_2()
        assert_segments(self.recv(FIN | ACK, IRS + 1, ISS + 2), [Expect(ACK, ISS + 2, IRS + 2)])
        assert self.state is S.TIME_WAIT
        return self

    def in_state(self, state: State) -> Harness:
        builders = {
            S.LISTEN: self.listen,
            S.SYN_SENT: self.syn_sent,
            S.SYN_RECEIVED: self.syn_received,
            S.ESTABLISHED: self.established,
            S.FIN_WAIT_1: self.fin_wait_1,
            S.FIN_WAIT_2: self.fin_wait_2,
            S.CLOSE_WAIT: self.close_wait,
            S.CLOSING: self.closing,
            S.LAST_ACK: self.last_ack,
            S.TIME_WAIT: self.time_wait,
        }
        return builders[state]()

    # What the peer must send next to be exactly in sequence, per state of ours.
    def peer_seq(self) -> int:
        return self.c.rcv_nxt

    def our_seq(self) -> int:
        return self.c.snd_nxt


def assert_segments(got: list[Segment], expected: list[Expect]) -> None:
    ok = len(got) == len(expected) and all(e.matches(g) for e, g in zip(expected, got, strict=True))
    if not ok:
        got_text = "\n  ".join(s.summary() for s in got) or "(nothing)"
        raise AssertionError(f"expected {expected!r}\n got:\n  {got_text}")
