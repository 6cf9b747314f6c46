"""Two stacks on the in-memory link, and small helpers to drive a connection between them."""

from __future__ import annotations

from collections.abc import Callable

from stack.sim import Hook, Simulator
from stack.tcp.config import Config
from stack.tcp.connection import Connection
from stack.tcp.events import Accepted, Event, StateChanged
from stack.tcp.host import Host
from stack.tcp.states import State

A_ADDR = "198.18.0.1"
B_ADDR = "198.18.0.2"
PORT = 7


class Pair:
    """Host `a` (the client) and host `b` (the server) joined by a link with a virtual clock."""

    def __init__(self, config: Config | None = None, *, config_a: Config | None = None,
                 config_b: Config | None = None, delay: float = 0.001, hooks: list[Hook] | None = None) -> None:
        base = config or Config(secret=b"s" * 16)
        self.a = Host(A_ADDR, config_a or base)
        self.b = Host(B_ADDR, config_b or base)
        self.link = Simulator([self.a, self.b], delay=delay, hooks=list(hooks or []))
        self.listener = self.b.listen(PORT)

    @property
    def now(self) -> float:
        return self.link.now

    def connect(self) -> tuple[Connection, Connection]:
        client = self.a.connect(B_ADDR, PORT, self.now)
        self.link.run_until(lambda: self.accepted(client) is not None, timeout=120)
        server = self.accepted(client)
        assert server is not None
        return client, server

    def accepted(self, client: Connection) -> Connection | None:
        port = client.four_tuple[1]
        for e in self.link.events_of(self.b):
            if isinstance(e, Accepted) and e.handle.four_tuple[3] == port:
                return e.handle
        return None

    def run_until(self, predicate: Callable[[], bool], timeout: float = 600.0) -> None:
        self.link.run_until(predicate, timeout)

    def changes(self, host: Host, port: int | None = None) -> list[tuple[State, State]]:
        return [(e.old, e.new) for e in self.link.events_of(host)
                if isinstance(e, StateChanged) and (port is None or port in (e.four_tuple[1], e.four_tuple[3]))]

    def events(self, host: Host) -> list[Event]:
        return self.link.events_of(host)

    def idle(self) -> bool:
        """Nothing left: no connection, no TIME-WAIT record, no timer, on either side."""
        return all(not h.connections and not h.time_wait and h.pending_timers() == 0 for h in (self.a, self.b))


def drop_matching(predicate: Callable[..., bool], count: int = 1) -> Hook:
    """A hook that drops the first `count` segments for which predicate(segment) is true."""
    left = [count]

    def hook(seg: object, now: float) -> list[tuple[object, float]]:
        if left[0] > 0 and predicate(seg):
            left[0] -= 1
            return []
        return [(seg, 0.0)]

    return hook  # type: ignore[return-value]
