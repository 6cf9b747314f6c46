"""What a connection is handed on every call: the time, where its output goes, counters and timers.

The connection never holds the host (smoltcp passes a context to `process`/`dispatch`, aioquic
takes `now` in every entry point). The host owns one `Context`, sets `now` before each call, and
reads the output back in `Host.take(now)`. Anything that changes the host's *tables* (a connection
closing, entering TIME-WAIT, leaving a listener's backlog) is not done through the context: the
connection returns an `Outcome` (stack.tcp.outcome) and the host acts on it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from stack.native import TimerWheel
from stack.tcp.config import FourTuple
from stack.tcp.counters import Counters
from stack.tcp.events import Event, StateChanged
from stack.tcp.states import State
from stack.wire.segment import RST, Segment

if TYPE_CHECKING:
    from stack.tcp.budget import MemoryPool
    from stack.tcp.tcb import Tcb


class Context:
    """The sink and services of one host, shared by all its connections (allocated once)."""

    __slots__ = (
        "ack_pending",
        "counters",
        "edges",
        "events",
        "memory",
        "now",
        "orphans",
        "out",
        "push_pending",
        "record_state_changes",
        "tso_size",
        "wheel",
    )

    def __init__(self, counters: Counters, wheel: TimerWheel, now: float, memory: MemoryPool) -> None:
        self.now = now
        self.counters = counters
        self.memory = memory  # what every connection's buffers hold, against tcp_mem (stack.tcp.budget)
        self.wheel = wheel  # connection timers; an entry's id is cid * N_TIMERS + kind
        self.out: list[Segment] = []
        self.events: list[Event] = []
        # Connections that asked for an ACK or a push while a batch was processed; `Host.take`
        # performs each once (one ACK per connection per batch, RFC 9293 MUST-58/59).
        self.ack_pending: dict[Tcb, None] = {}
        self.push_pending: dict[Tcb, None] = {}
        # Largest payload per segment handed to the link; 0 = the MSS. A driver whose link splits
        # segments itself (TSO: the kernel via the virtio-net header) raises it to ~64 KB.
        self.tso_size = 0
        self.record_state_changes = True  # emit a StateChanged event per transition
        self.edges: Counter[tuple[State, State]] = Counter()  # transitions taken, by edge
        self.orphans = 0  # connections the application closed that still live (Linux orphan count)

    def transmit(self, seg: Segment) -> None:
        self.out.append(seg)
        counters = self.counters
        counters["OutSegs"] += 1
        if seg.flags & RST:
            counters["OutRsts"] += 1

    def request_ack(self, tcb: Tcb) -> None:
        self.ack_pending[tcb] = None

    def request_push(self, tcb: Tcb) -> None:
        self.push_pending[tcb] = None

    def state_changed(self, four_tuple: FourTuple, old: State, new: State, cause: str) -> None:
        self.edges[(old, new)] += 1
        if self.record_state_changes:
            self.events.append(StateChanged(self.now, four_tuple, old, new, cause))
