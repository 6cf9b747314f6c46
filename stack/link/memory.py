"""An in-memory link joining stacks under one virtual clock.

Segments cross after a fixed `delay`; `hooks` may drop, delay, duplicate or rewrite them (the fault
engine plugs in here). Time only moves when `step` jumps to the next delivery or timer, so a 60 s
TIME-WAIT passes in microseconds and every run is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.tcp.events import Event
from stack.tcp.host import Host
from stack.wire.segment import Segment

# A hook sees each segment about to cross and returns what crosses instead: a list of
# (segment, extra delay) pairs — [] drops it, two entries duplicate it.
Hook = Callable[[Segment, float], list[tuple[Segment, float]]]


@dataclass
class Delivery:
    time: float
    segment: Segment
    src: Host
    dst: Host


@dataclass
class MemoryLink:
    hosts: list[Host]
    delay: float = 0.0005
    now: float = 0.0
    hooks: list[Hook] = field(default_factory=list)
    capture: list[tuple[float, Segment]] | None = None
    events: dict[int, list[Event]] = field(default_factory=dict)
    _queue: list[tuple[float, int, Delivery]] = field(default_factory=list)
    _tiebreak: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._by_addr: dict[str, Host] = {}
        for host in self.hosts:
            for addr in host.addresses:
                self._by_addr[addr] = host
            self.events.setdefault(id(host), [])

    def events_of(self, host: Host) -> list[Event]:
        return self.events[id(host)]

    def collect(self) -> None:
        """Take every host's output: queue its segments for delivery, keep its events."""
        for host in self.hosts:
            out = host.take()
            self.events[id(host)].extend(out.events)
            for seg in out.segments:
                self.send(seg, host)

    def send(self, seg: Segment, src: Host) -> None:
        crossing: list[tuple[Segment, float]] = [(seg, 0.0)]
        for hook in self.hooks:
            crossing = [out for s, extra in crossing for out in _shift(hook(s, self.now), extra)]
        dst = self._by_addr.get(seg.dst_addr)
        for s, extra in crossing:
            if self.capture is not None:
                self.capture.append((self.now, s))
            if dst is None:
                continue  # nobody owns the address: the packet is lost, as on a wire
            when = self.now + self.delay + extra
            heapq.heappush(self._queue, (when, next(self._tiebreak), Delivery(when, s, src, dst)))

    def next_time(self) -> float | None:
        times = [t for host in self.hosts if (t := host.next_deadline()) is not None]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    def step(self, limit: float | None = None) -> bool:
        """Move to the next delivery or timer (not past `limit`) and process it. False when idle."""
        self.collect()
        when = self.next_time()
        if when is None or (limit is not None and when > limit):
            if limit is not None:
                self.now = max(self.now, limit)
                for host in self.hosts:
                    host.on_timers(self.now)
                self.collect()
            return False
        self.now = max(self.now, when)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, d = heapq.heappop(self._queue)
            d.dst.on_segment(d.segment, self.now)
        for host in self.hosts:
            host.on_timers(self.now)
        self.collect()
        return True

    def run(self, duration: float | None = None, max_steps: int = 10_000_000) -> None:
        """Run until nothing is pending, or for `duration` seconds of virtual time."""
        limit = None if duration is None else self.now + duration
        for _ in range(max_steps):
            if not self.step(limit):
                return
        raise RuntimeError("memory link did not go idle (a timer or packet loop?)")

    def run_until(self, predicate: Callable[[], bool], timeout: float = 600.0) -> None:
        """Step until `predicate()` holds; fail after `timeout` seconds of virtual time."""
        limit = self.now + timeout
        self.collect()
        while not predicate():
            if not self.step(limit) and self.now >= limit:
                raise TimeoutError(f"condition not reached within {timeout} s of virtual time")
            if not predicate() and self.next_time() is None and not self._queue:
                raise TimeoutError("link went idle before the condition held")


def _shift(items: list[tuple[Segment, float]], extra: float) -> list[tuple[Segment, float]]:
    return [(s, d + extra) for s, d in items] if extra else items
