"""What a driver showed of a few connections, kept for their ladder diagrams and their story.

A `Conversations` object is a driver observer (`observe`), a fault engine listener (`fault`: it
keeps the segments a rule dropped) and an after-write hook (`written`: the peer kernel has
processed what was just written, so its state is read then, through `kernel_state`). For one
connection it gives the ladder rows (`entries`, `marks`), the stack's state changes and the
kernel's states as they were seen, and `story` tells in words how each side's close went and what
ended each state -- from the recorded changes, never from what the demo expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stack.faults.adapter import FaultNote
from stack.observe.ladder import LadderEntry, LadderMark, entries_from_segments, marks_from_states
from stack.tcp.events import StateChanged
from stack.tcp.states import State
from stack.wire.segment import Segment

KernelState = Callable[[int], str | None]  # kernel port -> its socket's state (RFC name), None if gone

# What a cause in the core's words means for a reader of the story.
_CAUSES = {
    "timeout = 2MSL": "its 2MSL timer expired",
    "rcv RST": "a RST arrived",
    "rcv ACK of FIN": "its FIN was acknowledged",
    "rcv FIN": "the peer's FIN arrived",
    "abort": "the application aborted it (RST)",
    "SYN reopens the 4-tuple (RFC 6191)": "a new SYN reopened the 4-tuple",
    "orphan FIN-WAIT-2 timeout": "the orphan FIN-WAIT-2 timer expired",
}


def plain_cause(cause: str) -> str:
    return _CAUSES.get(cause, cause)


@dataclass
class Conversations:
    kernel_state: KernelState | None = None
    segments: list[tuple[float, str, Segment, FaultNote | None]] = field(default_factory=list)
    changes: list[StateChanged] = field(default_factory=list)
    kernel: dict[int, list[tuple[float, str]]] = field(default_factory=dict)  # kernel port -> timeline
    _last_out: list[tuple[float, int]] = field(default_factory=list)

    # ------------------------------------------------------------------------------ hooks
    def observe(self, kind: str, when: float, *rest: object) -> None:
        if kind == "state":
            change = rest[0]
            assert isinstance(change, StateChanged)
            self.changes.append(change)
            return
        seg = rest[0]
        assert isinstance(seg, Segment)
        note = rest[2] if len(rest) > 2 else None
        self.segments.append((when, kind, seg, note if isinstance(note, FaultNote) else None))
        kernel_port = seg.src_port if kind == "in" else seg.dst_port
        if kind == "in":
            # The kernel has sent this segment: its state now is its state after it.
            self._note_kernel(when, kernel_port)
        else:
            self._last_out.append((when, kernel_port))

    def fault(self, when: float, action: str, direction: str, seg: Segment, rule: str) -> None:
        if action == "drop":
            self.segments.append((when, direction, seg, FaultNote(("drop",), when)))
            if direction == "in":
                self._note_kernel(when, seg.src_port)

    def written(self, when: float) -> None:
        # The kernel has processed what we just wrote: read its state for those segments.
        for seg_time, port in self._last_out:
            self._note_kernel(seg_time, port)
        self._last_out.clear()

    def _note_kernel(self, when: float, kernel_port: int) -> None:
        if self.kernel_state is None:
            return
        name = self.kernel_state(kernel_port) or "CLOSED"
        timeline = self.kernel.setdefault(kernel_port, [])
        if not timeline or timeline[-1][1] != name:
            timeline.append((when, name))

    # ------------------------------------------------------------------------------ one connection
    def changes_of(self, stack_port: int, kernel_port: int) -> list[StateChanged]:
        # The listener's own changes (remote port 0) belong to no connection.
        return [c for c in self.changes if c.four_tuple[1] == stack_port and c.four_tuple[3] == kernel_port]

    def entries(self, stack_port: int, kernel_port: int) -> list[LadderEntry]:
        segs = [s for s in self.segments if {s[2].src_port, s[2].dst_port} == {stack_port, kernel_port}]
        return entries_from_segments(segs, stack_port, stack_states=self.changes_of(stack_port, kernel_port),
                                     kernel_states=self.kernel.get(kernel_port, []))

    def marks(self, stack_port: int, kernel_port: int) -> list[LadderMark]:
        return marks_from_states(self.changes_of(stack_port, kernel_port))

    def stack_path(self, stack_port: int, kernel_port: int) -> list[str]:
        mine = self.changes_of(stack_port, kernel_port)
        return [mine[0].old.value, *(c.new.value for c in mine)] if mine else []

    def kernel_path(self, kernel_port: int) -> list[str]:
        return [state for _, state in self.kernel.get(kernel_port, [])]

    def time_in(self, stack_port: int, kernel_port: int, state: State) -> tuple[float, StateChanged] | None:
        """How long the stack's connection stayed in `state`, and the change that ended it."""
        entered: float | None = None
        for change in self.changes_of(stack_port, kernel_port):
            if change.new is state:
                entered = change.time
            elif change.old is state and entered is not None:
                return change.time - entered, change
        return None

    def story(self, stack_port: int, kernel_port: int) -> list[str]:
        """One line per side: the states it went through and what ended its last one."""
        lines = []
        changes = self.changes_of(stack_port, kernel_port)
        path = self.stack_path(stack_port, kernel_port)
        if path:
            last = changes[-1]
            lines.append(f"tcpstack: {' -> '.join(path)} ({last.new.value}: {plain_cause(last.cause)})")
        kernel = self.kernel_path(kernel_port)
        if kernel:
            lines.append(f"kernel:   {' -> '.join(kernel)} (as sock_diag showed it after each segment)")
        return lines
