"""An in-memory link joining stacks under one virtual clock.

Segments cross after a fixed `delay`; `hooks` may drop, delay, duplicate or rewrite them. Time only
moves when `step` jumps to the next delivery or timer, so a 60 s TIME-WAIT passes in microseconds
and every run is deterministic.

With a `faults` engine the link carries real bytes: each segment (after the hooks) is built into an
IPv4 packet, the engine decides what crosses, and the receiver gets `parse_packet` of what arrives
-- a packet the parser refuses goes to `Host.on_malformed`, so corruption shows up as
`InCsumErrors`. The engine's direction is relative to one designated stack host (`stack_host`,
default the last host in `hosts`, as `Pair` puts the server there): toward it is "in", from it
"out". Segments between two other hosts cross as bytes without passing the engine.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stack.faults.engine import FaultEngine
from stack.tcp.events import Event
from stack.tcp.host import Host
from stack.wire import MalformedPacket, build_packet, parse_packet
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
    packet: bytes | None = None  # with a fault engine: the bytes to parse at delivery


@dataclass
class MemoryLink:
    hosts: list[Host]
    delay: float = 0.0005
    now: float = 0.0
    hooks: list[Hook] = field(default_factory=list)
    capture: list[tuple[float, Segment]] | None = None
    events: dict[int, list[Event]] = field(default_factory=dict)
    faults: FaultEngine | None = None
    stack_host: Host | None = None
    _queue: list[tuple[float, int, Delivery]] = field(default_factory=list)
    _tiebreak: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._by_addr: dict[str, Host] = {}
        for host in self.hosts:
            for addr in host.addresses:
                self._by_addr[addr] = host
            self.events.setdefault(id(host), [])
        if self.stack_host is None and self.hosts:
            self.stack_host = self.hosts[-1]
        if self.faults is not None and self.faults.state_of is None:
            self.faults.state_of = self.state_of

    def events_of(self, host: Host) -> list[Event]:
        return self.events[id(host)]

    def collect(self) -> None:
        """Take every host's output: queue its segments for delivery, keep its events."""
        for host in self.hosts:
            out = host.take()
            self.events[id(host)].extend(out.events)
            for seg in out.segments:
                self.send(seg, host)
        if self.faults is not None:
            self._release_held()

    def send(self, seg: Segment, src: Host) -> None:
        crossing: list[tuple[Segment, float]] = [(seg, 0.0)]
        for hook in self.hooks:
            crossing = [out for s, extra in crossing for out in _shift(hook(s, self.now), extra)]
        dst = self._by_addr.get(seg.dst_addr)
        faults = self.faults
        for s, extra in crossing:
            if faults is None or dst is None:
                if self.capture is not None:
                    self.capture.append((self.now, s))
                if dst is None:
                    continue  # nobody owns the address: the packet is lost, as on a wire
                when = self.now + self.delay + extra
                heapq.heappush(self._queue, (when, next(self._tiebreak), Delivery(when, s, src, dst)))
                continue
            packet = build_packet(s)
            direction = "in" if dst is self.stack_host else "out" if src is self.stack_host else None
            if direction is None:
                self._put(s, packet, src, dst, extra)
                continue
            for out, fault_extra in faults.process(direction, s, packet, self.now):
                self._put(s, out, src, dst, extra + fault_extra)
        if faults is not None:
            self._release_held()

    def _put(self, seg: Segment, packet: bytes, src: Host, dst: Host, extra: float) -> None:
        """Queue packet bytes for delivery (fault mode); `seg` is what the sender meant to send."""
        if self.capture is not None:
            # What crosses, as the receiver will decode it (rewritten fields included); bytes that no
            # longer parse (corrupt, truncate) are shown as the segment the sender meant.
            try:
                shown = parse_packet(packet)
            except MalformedPacket:
                shown = seg
            self.capture.append((self.now, shown))
        when = self.now + self.delay + extra
        heapq.heappush(self._queue, (when, next(self._tiebreak), Delivery(when, seg, src, dst, packet)))

    def _release_held(self) -> None:
        """Put segments the fault engine held back (reorder) on the wire once they are due."""
        assert self.faults is not None
        for rel in self.faults.release_due(self.now):
            dst = self._by_addr.get(rel.segment.dst_addr)
            if dst is None:
                continue
            src = self._by_addr.get(rel.segment.src_addr) or dst
            self._put(rel.segment, rel.packet, src, dst, rel.delay)

    def state_of(self, seg: Segment, direction: str) -> str | None:
        """The stack host's state for the connection `seg` belongs to (the engine's `state=`).

        Called while the segment crosses, after its sender processed everything before it: an ACK
        sent by a connection that just entered TIME-WAIT finds the 4-tuple in `time_wait`.
        """
        host = self.stack_host
        if host is None:
            return None
        state = host.state_for(segment_key(seg, direction))
        return None if state is None else state.value

    def next_time(self) -> float | None:
        times = [t for host in self.hosts if (t := host.next_deadline()) is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if self.faults is not None and (held := self.faults.next_deadline()) is not None:
            times.append(held)
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
            if d.packet is None:
                d.dst.on_segment(d.segment, self.now)
                continue
            try:
                seg = parse_packet(d.packet)
            except MalformedPacket as exc:
                d.dst.on_malformed(exc.reason.value)
                continue
            d.dst.on_segment(seg, self.now)
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


def segment_key(seg: Segment, direction: str) -> tuple[str, int, str, int]:
    """The stack-side 4-tuple (local first) of a segment going `direction` ("in" or "out")."""
    if direction == "out":
        return (seg.src_addr, seg.src_port, seg.dst_addr, seg.dst_port)
    return (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)


def _shift(items: list[tuple[Segment, float]], extra: float) -> list[tuple[Segment, float]]:
    return [(s, d + extra) for s, d in items] if extra else items
