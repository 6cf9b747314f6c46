"""The one place where a fault engine meets a host's traffic, for both drivers.

The asyncio runtime (stack.runtime) and the virtual-clock simulator (stack.sim) both put a
`FaultAdapter` between the host and its link: every segment the host sends crosses `outbound`,
every packet for the host crosses `inbound`, and what `reorder` held back comes out of `released`
when its turn comes. The adapter also answers the engine's `state=` matcher from the host's tables.
"""

from __future__ import annotations

from typing import NamedTuple

from stack.faults.engine import Crossing, FaultEngine, Release
from stack.tcp.config import FourTuple
from stack.tcp.host import Host
from stack.wire import MalformedPacket, Reason, parse_packet
from stack.wire.segment import Segment

IN = "in"  # toward the stack
OUT = "out"  # from the stack toward its peer


class FaultNote(NamedTuple):
    """What a driver tells its observers about a segment the fault engine changed or held: the
    actions ("delay", "dup", "reorder", ...) and when the segment entered the engine (its sender's
    time; it crossed later when delayed or held)."""

    faults: tuple[str, ...]
    since: float


def segment_key(seg: Segment, direction: str) -> FourTuple:
    """The stack-side 4-tuple (local first) of a segment going `direction` ("in" or "out")."""
    if direction == OUT:
        return (seg.src_addr, seg.src_port, seg.dst_addr, seg.dst_port)
    return (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)


class FaultAdapter:
    def __init__(self, engine: FaultEngine, host: Host) -> None:
        self.engine = engine
        self.host = host
        if engine.state_of is None:
            engine.state_of = self.state_of

    def state_of(self, seg: Segment, direction: str) -> str | None:
        """The host's state for the connection `seg` belongs to (the engine's `state=`).

        Asked while the segment crosses, after its sender processed everything before it: an ACK
        sent by a connection that just entered TIME-WAIT finds the 4-tuple in the TIME-WAIT table.
        """
        state = self.host.state_for(segment_key(seg, direction))
        return None if state is None else state.value

    def outbound(self, seg: Segment, packet: bytes, now: float) -> list[Crossing]:
        """What crosses, after what extra delay, when the host sends `seg` (built as `packet`)."""
        return self.engine.cross(OUT, seg, packet, now)

    def inbound(self, seg: Segment, packet: bytes, now: float) -> list[Crossing]:
        """What reaches the host, after what extra delay, when the peer sent `packet`."""
        return self.engine.cross(IN, seg, packet, now)

    def inbound_packet(self, packet: bytes, now: float) -> list[tuple[Segment | None, Crossing]]:
        """`inbound` for raw bytes from a link: parsed here (a malformed packet is counted by the
        host and crosses no rule). Each result carries the segment when its bytes are unchanged,
        so the receiver need not parse them again."""
        try:
            seg = parse_packet(packet)
        except MalformedPacket as bad:
            if bad.reason is Reason.NOT_TCP:
                # ICMP (or another protocol): only proto=icmp rules act on it; the driver sorts it out.
                return [(None, c) for c in self.engine.cross_icmp(IN, packet, now)]
            self.host.on_malformed(bad.reason.value)
            return []
        return [(seg if c.packet is packet else None, c) for c in self.inbound(seg, packet, now)]

    def outbound_icmp(self, packet: bytes, now: float) -> list[Crossing]:
        """What crosses when the host sends an ICMP datagram (an echo reply): proto=icmp rules."""
        return self.engine.cross_icmp(OUT, packet, now)

    def released(self, now: float) -> list[Release]:
        """Segments `reorder` held back whose turn (or timeout) has come."""
        return self.engine.release_due(now)

    def next_deadline(self) -> float | None:
        return self.engine.next_deadline()
