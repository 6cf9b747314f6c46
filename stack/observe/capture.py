"""A driver's live record: the pcap of what crossed the link and the trace of what happened.

Both drivers' observations meet here: every packet at the moment it really crossed (a segment a
`delay` or `reorder` rule held back crosses late, and is recorded then, in wire order), every
state change, and every action of the fault engine -- a dropped segment never crosses, so it is in
the trace (marked "drop") and not in the pcap. Times come from the driver's clock and are written
as wall-clock time (`clock_offset` is added), so a capture lines up with the kernel's.

Live: nothing waits for the end of the run. The driver calls `flush()` once per wake-up (the
asyncio runtime schedules it when `on_dirty` fires), so `tcpdump -r` or `tail -f` on the files
shows the run as it goes, `--pcap -` streams to a pipe, and a `kill -9` leaves every record of the
wake-ups before it. A reader that goes away (`tcpdump` quit on the other end of the pipe) stops
that writer with one warning; the stack keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

from stack.faults.adapter import FaultNote
from stack.observe.pcap import PcapWriter
from stack.observe.trace import Direction, TraceWriter
from stack.tcp.events import StateChanged
from stack.wire import MalformedPacket, parse_packet
from stack.wire.address import endpoint
from stack.wire.icmp import IcmpMessage
from stack.wire.segment import Segment

log = logging.getLogger("tcpstack")

PcapTarget = str | os.PathLike[str] | BinaryIO | PcapWriter
TraceTarget = str | os.PathLike[str] | TextIO | TraceWriter
STDOUT = "-"


def pcap_writer(target: PcapTarget) -> tuple[PcapWriter, bool]:
    """A writer for `target` ("-" is standard output) and whether the caller must close it."""
    if isinstance(target, PcapWriter):
        return target, False
    if target == STDOUT:
        return PcapWriter(sys.stdout.buffer), True
    return PcapWriter(target), True


def trace_writer(target: TraceTarget) -> tuple[TraceWriter, bool]:
    """A writer for `target` ("-" is standard output) and whether the caller must close it."""
    if isinstance(target, TraceWriter):
        return target, False
    if target == STDOUT:
        return TraceWriter(sys.stdout), True
    return TraceWriter(target), True


def shown_segment(seg: Segment, packet: bytes | bytearray, note: FaultNote | None) -> Segment:
    """The segment as its receiver decodes `packet`: a rewrite or an inject changed it from what the
    sender built. Bytes that no longer parse (corrupt, truncate) are shown as the segment meant."""
    if note is None or not {"rewrite", "inject"} & set(note.faults):
        return seg
    try:
        return parse_packet(packet)
    except MalformedPacket:
        return seg


class Capture:
    """Writes the pcap and/or the trace of one driver (either may be None)."""

    def __init__(self, pcap: PcapWriter | None = None, trace: TraceWriter | None = None, *,
                 clock_offset: float = 0.0, owned: tuple[Any, ...] = ()) -> None:
        self.pcap = pcap
        self.trace = trace
        self.clock_offset = clock_offset
        self.on_dirty: Callable[[], None] | None = None  # the driver's "flush before you sleep"
        self._owned = owned  # writers this capture opened and must close
        self._dirty = False

    @classmethod
    def open(cls, pcap: PcapTarget | None = None, trace: TraceTarget | None = None, *,
             clock_offset: float = 0.0) -> Capture:
        """Open the targets (paths, "-", streams or writers); writers made here are closed by `close`."""
        owned: list[Any] = []
        pcap_w = trace_w = None
        try:
            if pcap is not None:
                pcap_w, own = pcap_writer(pcap)
                if own:
                    owned.append(pcap_w)
            if trace is not None:
                trace_w, own = trace_writer(trace)
                if own:
                    owned.append(trace_w)
        except BaseException:
            for writer in owned:
                writer.close()
            raise
        capture = cls(pcap_w, trace_w, clock_offset=clock_offset, owned=tuple(owned))
        capture.flush()  # the pcap header is on disk from the start: a reader never sees 0 bytes
        return capture

    @property
    def wants_states(self) -> bool:
        return self.trace is not None

    def _touched(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self.on_dirty is not None:
                self.on_dirty()

    # ------------------------------------------------------------------------------- records
    def packet(self, direction: str, when: float, packet: bytes | bytearray, seg: Segment | None,
               note: FaultNote | None = None) -> None:
        """A packet crossed the stack's boundary at `when` ("in": delivered to it, "out": sent).
        `seg` is what its receiver decodes (see `shown_segment`), None for a packet the parser
        refused (it is still in the pcap, as on a wire)."""
        wall = when + self.clock_offset
        if self.pcap is not None:
            self.pcap.write(packet, wall)
        if self.trace is not None and seg is not None:
            self.trace.segment(wall, "in" if direction == "in" else "out", seg,
                               "+".join(note.faults) if note is not None else None)
        self._touched()

    def icmp(self, direction: str, when: float, packet: bytes | bytearray, msg: IcmpMessage | None) -> None:
        """An ICMP or ICMPv6 datagram crossed (`msg` None: one the parser refused). In the pcap as it
        was; in the trace as an "icmp" record."""
        wall = when + self.clock_offset
        if self.pcap is not None:
            self.pcap.write(packet, wall)
        if self.trace is not None and msg is not None:
            self.trace.icmp(wall, "in" if direction == "in" else "out", msg.summary())
        self._touched()

    def state(self, event: StateChanged) -> None:
        if self.trace is not None:
            la, lp, ra, rp = event.four_tuple
            self.trace.state(event.time + self.clock_offset, endpoint(la, lp), endpoint(ra, rp), event.old,
                             event.new, event.cause)
            self._touched()

    def fault(self, when: float, action: str, direction: str, seg: Segment, rule: str) -> None:
        """A fault engine listener: every action is a trace record; a dropped segment is also a
        segment record marked "drop" (it was sent and never arrived)."""
        if self.trace is None:
            return
        wall = when + self.clock_offset
        way: Direction = "in" if direction == "in" else "out"
        self.trace.fault(wall, action, direction=way, segment=seg, detail=rule)
        if action == "drop":
            self.trace.segment(wall, way, seg, "drop")
        self._touched()

    # ------------------------------------------------------------------------------- output
    def flush(self) -> None:
        """Hand everything recorded to the OS. A writer whose reader went away is stopped."""
        self._dirty = False
        for name in ("pcap", "trace"):
            writer = getattr(self, name)
            if writer is None:
                continue
            try:
                writer.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                log.warning("%s stopped: %s", "capture" if name == "pcap" else "trace",
                            "its reader went away" if isinstance(exc, BrokenPipeError) else exc)
                setattr(self, name, None)

    def close(self) -> None:
        self.flush()
        for writer in self._owned:
            # Already reported by flush, or a pipe nobody reads any more.
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                writer.close()
        self._owned = ()
        self.pcap = self.trace = None
