"""The simulator: hosts joined by an in-memory link under one virtual clock.

Segments cross after a fixed `delay`; `hooks` may drop, delay, duplicate or rewrite them. Time only
moves when `step` jumps to the next delivery or timer, so a 60 s TIME-WAIT passes in microseconds
and every run is deterministic. This is a driver, like the asyncio runtime: it feeds each host
segments and timer expiry with the (virtual) time and collects with `Host.take(now)`.

With a `faults` engine the link carries real bytes: each segment (after the hooks) is built into an
IPv4 packet, the engine decides what crosses (through the same `FaultAdapter` the runtime uses),
and the receiver gets `parse_packet` of what arrives -- a packet the parser refuses goes to
`Host.on_malformed`, so corruption shows up as `InCsumErrors`. The engine's direction is relative
to one designated stack host (`stack_host`, default the last host in `hosts`): toward it is "in",
from it "out". Segments between two other hosts cross as bytes without passing the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stack.faults.adapter import FaultAdapter
from stack.faults.engine import FaultEngine
from stack.link.memory import MemoryQueue
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
class Simulator:
    hosts: list[Host]
    delay: float = 0.0005
    now: float = 0.0
    hooks: list[Hook] = field(default_factory=list)
    capture: list[tuple[float, Segment]] | None = None
    events: dict[int, list[Event]] = field(default_factory=dict)
    faults: FaultEngine | None = None
    stack_host: Host | None = None
    _queue: MemoryQueue[Delivery] = field(default_factory=MemoryQueue)

    def __post_init__(self) -> None:
        self._by_addr: dict[str, Host] = {}
        for host in self.hosts:
            for addr in host.addresses:
                self._by_addr[addr] = host
            self.events.setdefault(id(host), [])
        if self.stack_host is None and self.hosts:
            self.stack_host = self.hosts[-1]
        self._faults: FaultAdapter | None = None
        if self.faults is not None and self.stack_host is not None:
            self._faults = FaultAdapter(self.faults, self.stack_host)

    def events_of(self, host: Host) -> list[Event]:
        return self.events[id(host)]

    def collect(self) -> None:
        """Take every host's output: queue its segments for delivery, keep its events."""
        for host in self.hosts:
            out = host.take(self.now)
            self.events[id(host)].extend(out.events)
            for seg in out.segments:
                self.send(seg, host)
        if self._faults is not None:
            self._release_held()

    def send(self, seg: Segment, src: Host) -> None:
        crossing: list[tuple[Segment, float]] = [(seg, 0.0)]
        for hook in self.hooks:
            crossing = [out for s, extra in crossing for out in _shift(hook(s, self.now), extra)]
        dst = self._by_addr.get(seg.dst_addr)
        faults = self._faults
        for s, extra in crossing:
            if faults is None or dst is None:
                if self.capture is not None:
                    self.capture.append((self.now, s))
                if dst is None:
                    continue  # nobody owns the address: the packet is lost, as on a wire
                when = self.now + self.delay + extra
                self._queue.put(when, Delivery(when, s, src, dst))
                continue
            packet = build_packet(s)
            if dst is self.stack_host:
                crossed = faults.inbound(s, packet, self.now)
            elif src is self.stack_host:
                crossed = faults.outbound(s, packet, self.now)
            else:
                crossed = [(packet, 0.0)]
            for out, fault_extra in crossed:
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
        self._queue.put(when, Delivery(when, seg, src, dst, packet))

    def _release_held(self) -> None:
        """Put segments the fault engine held back (reorder) on the wire once they are due."""
        assert self._faults is not None
        for rel in self._faults.released(self.now):
            dst = self._by_addr.get(rel.segment.dst_addr)
            if dst is None:
                continue
            src = self._by_addr.get(rel.segment.src_addr) or dst
            self._put(rel.segment, rel.packet, src, dst, rel.delay)

    def next_time(self) -> float | None:
        times = [t for host in self.hosts if (t := host.next_deadline()) is not None]
        if (arrival := self._queue.next_time()) is not None:
            times.append(arrival)
        if self._faults is not None and (held := self._faults.next_deadline()) is not None:
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
        for d in self._queue.pop_due(self.now):
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
        raise RuntimeError("the simulation did not go idle (a timer or packet loop?)")

    def run_until(self, predicate: Callable[[], bool], timeout: float = 600.0) -> None:
        """Step until `predicate()` holds; fail after `timeout` seconds of virtual time."""
        limit = self.now + timeout
        self.collect()
        while not predicate():
            if not self.step(limit) and self.now >= limit:
                raise TimeoutError(f"condition not reached within {timeout} s of virtual time")
            if not predicate() and self.next_time() is None and not self._queue:
                raise TimeoutError("the simulation went idle before the condition held")


def _shift(items: list[tuple[Segment, float]], extra: float) -> list[tuple[Segment, float]]:
    return [(s, d + extra) for s, d in items] if extra else items
