"""Run one parsed script against one target: the event loop both targets share.

The runner owns the script's clock rules (packetdrill's): an absolute time counts from the start,
`+t` from the moment the previous event completed, and an outbound packet must arrive within the
tolerance of its time (or inside its range; `*` at any time). Inbound packets are built with the
sequence numbers of `matcher.SeqMap` and handed to the target at their time; system calls go
through `calls`; blocking ones stay pending while later events run, and must return at their
`...END` time. After the last event, a packet the script did not expect is a failure too.

The first difference ends the run; it is reported with its line, field, expected and actual value.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Literal, Protocol

from stack.drill import calls, commands, packets
from stack.drill.calls import Mismatch, Outcome, Pending, SocketApi
from stack.drill.differences import Difference
from stack.drill.matcher import SeqMap, compare, describe
from stack.drill.script import Command, Event, PacketSpec, Script, Syscall, TimeKind
from stack.wire.reasons import MalformedPacket
from stack.wire.segment import Segment

# packetdrill's default is 4 ms; a Python runner on a shared machine is sometimes scheduled 10+ ms
# late. 20 ms still tells an immediate ACK from Linux's shortest delayed ACK (40 ms).
DEFAULT_TOLERANCE_USECS = 20_000
ANY_TIME_LIMIT = 10.0  # how long `*` waits for its packet, in seconds
REMOTE_ADDR = "198.18.0.2"  # the script's peer (tcpstack's TUN side in the kernel target)
LOCAL_ADDR = "198.18.0.1"  # the side under test
BIND_PORT = 8080  # what bind() and connect() use, as packetdrill's live ports
REMOTE_PORT = 40000  # the peer's port toward a listener

Status = Literal["PASS", "FAIL", "SKIP"]


class Target(Protocol):
    """One side under test, driven by the runner (see kernel_target and stack_target)."""

    name: str

    @property
    def api(self) -> SocketApi: ...

    def now(self) -> float: ...
    def wait(self, until: float, poll: PollFn, watch: WatchFn, want_packet: bool) -> None:
        """Let time pass until `until` (or, with want_packet, until an outbound packet is queued),
        calling poll() whenever something may have changed; watch() names the fd (and "r"/"w") a
        blocked call waits on, for a target that select()s."""
    def inject(self, packet: bytes, poll: PollFn) -> None:
        """Hand an inbound packet to the side under test; poll() after it if it is processed at once."""
    def take_packet(self) -> tuple[float, bytes] | None: ...
    def sysctl(self, settings: tuple[tuple[str, str], ...]) -> str | None: ...
    def ss_lines(self, state: str | None) -> list[str]: ...
    def state_changes(self) -> list[tuple[float, str]]: ...
    def close(self) -> None: ...


class PollFn(Protocol):
    def __call__(self) -> bool: ...  # True: what the runner waits for has happened, stop waiting


class WatchFn(Protocol):
    def __call__(self) -> tuple[int, str] | None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    line: int
    field: str  # flags, seq, ack, len, win, options, payload, time, packet, return, value, command, crash
    expected: str
    actual: str
    detail: str = ""

    def text(self) -> str:
        return f"line {self.line}: expected {self.expected}, got {self.actual}"


@dataclass
class RunResult:
    script: str
    target: str
    status: Status
    failure: Failure | None = None
    skip_reason: str | None = None
    elapsed: float = 0.0
    trace: list[tuple[float, str, Segment]] = field(default_factory=list)
    states: list[tuple[float, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    intended: Difference | None = None  # a stack failure that docs/linux-differences.md lists

    @property
    def failed(self) -> bool:
        """A failure that counts: not one of the listed intended differences."""
        return self.status == "FAIL" and self.intended is None


class _Stop(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.text())
        self.failure = failure


@dataclass
class _Blocked:
    event: Event
    call: Syscall
    pending: Pending
    end_at: float = 0.0  # when it must return (`...END`, from the same origin as its start)
    done: Outcome | None = None
    done_at: float = 0.0


def tolerance_of(script: Script, override_usecs: int | None) -> float:
    usecs = override_usecs if override_usecs is not None else script.tolerance_usecs
    return (usecs if usecs is not None else DEFAULT_TOLERANCE_USECS) / 1e6


class Runner:
    def __init__(self, script: Script, target: Target, tolerance: float) -> None:
        self.script = script
        self.target = target
        self.tol = tolerance
        self.seqmap = SeqMap()
        self.calls = calls.Calls(target.api)
        self.local_port = BIND_PORT
        self.remote_port = REMOTE_PORT
        self.blocked: _Blocked | None = None
        self.settling = False  # waiting for the blocked call itself: its return ends the wait
        self.result = RunResult(script.path, target.name, "PASS")
        self.last_line = 0

    def run(self) -> RunResult:
        started = time.monotonic()
        try:
            for event in self.script.events:
                self.last_line = event.line
                self._event(event)
            self._finish()
        except _Stop as stop:
            self.result.status = "FAIL"
            self.result.failure = stop.failure
        except Exception as exc:  # a crash of the side under test (or of a target) is a finding too
            self.result.status = "FAIL"
            self.result.failure = Failure(self.last_line, "crash", "no crash", f"{type(exc).__name__}: {exc}",
                                          traceback.format_exc())
        finally:
            self.result.states = self.target.state_changes()
            self.target.close()
        self.result.elapsed = time.monotonic() - started
        return self.result

    # ------------------------------------------------------------------ helpers
    def _log(self, line: int, text: str) -> None:
        self.result.log.append(f"{self.target.now():10.6f}  line {line:<4} {text}")

    def _fail(self, event_line: int, mismatch: Mismatch, detail: str = "") -> _Stop:
        return _Stop(Failure(event_line, mismatch.field, mismatch.expected, mismatch.actual, detail))

    def _times(self, event: Event) -> tuple[float, float]:
        """(start, end) of an event in seconds since the script started."""
        when = event.time
        base = self.target.now() if when.relative else 0.0
        if when.kind is TimeKind.ANY:
            return base, base + ANY_TIME_LIMIT
        start = base + when.start
        end = base + when.end if when.end is not None else start
        return start, end

    def _poll(self) -> bool:
        blocked = self.blocked
        if blocked is None:
            return False
        if blocked.done is None:
            outcome = blocked.pending.retry()
            if outcome is not None:
                blocked.done = outcome
                blocked.done_at = self.target.now()
        return self.settling and blocked.done is not None

    def _watch(self) -> tuple[int, str] | None:
        blocked = self.blocked
        if blocked is None or blocked.done is not None or blocked.pending.fileno is None:
            return None
        return blocked.pending.fileno, blocked.pending.interest

    def _wait(self, until: float, want_packet: bool = False) -> None:
        self.target.wait(until, self._poll, self._watch, want_packet)

    # ------------------------------------------------------------------ events
    def _event(self, event: Event) -> None:
        action = event.action
        if isinstance(action, PacketSpec):
            if action.inbound:
                self._inbound(event, action)
            else:
                self._outbound(event, action)
        elif isinstance(action, Syscall):
            self._syscall(event, action)
        else:
            self._command(event, action)

    def _inbound(self, event: Event, spec: PacketSpec) -> None:
        start, _ = self._times(event)
        self._wait(start)
        seq, ack, options = self.seqmap.inbound(spec)
        raw = packets.build(REMOTE_ADDR, LOCAL_ADDR, self.remote_port, self.local_port, seq, ack, spec.flags,
                            spec.window or 0, packets.encode_options(options), bytes(spec.length))
        self._log(event.line, f"< {spec.text()}")
        self.target.inject(raw, self._poll)
        self._record("in", raw)

    def _record(self, direction: str, raw: bytes) -> Segment | None:
        try:
            seg = packets.parse(raw)[0]
        except MalformedPacket:
            return None
        self.result.trace.append((self.target.now(), direction, seg))
        return seg

    def _outbound(self, event: Event, spec: PacketSpec) -> None:
        start, end = self._times(event)
        deadline = end + self.tol
        got = self.target.take_packet()
        while got is None and self.target.now() < deadline:
            self._wait(deadline, want_packet=True)
            got = self.target.take_packet()
        if got is None:
            raise _Stop(Failure(event.line, "packet", spec.text(), "nothing"))
        at, raw = got
        try:
            seg, options = packets.parse(raw)
        except MalformedPacket as exc:
            raise _Stop(Failure(event.line, "packet", spec.text(), f"a malformed packet ({exc})")) from None
        self.result.trace.append((at, "out", seg))
        # The side under test speaks only to the script's peer: its ports are the connection's.
        self.local_port, self.remote_port = seg.src_port, seg.dst_port
        mismatch = compare(spec, seg, options, self.seqmap)
        actual = describe(seg, self.seqmap, options)
        self._log(event.line, f"> {actual}")
        if mismatch is not None:
            raise self._fail(event.line, mismatch, f"script: > {spec.text()}\nactual: > {actual} at {at:.6f} s")
        kind = event.time.kind
        if kind is not TimeKind.ANY and not start - self.tol <= at <= end + self.tol:
            wanted = f"{start:.3f} s" if start == end else f"{start:.3f}~{end:.3f} s"
            raise _Stop(Failure(event.line, "time", f"{spec.text()} at {wanted}", f"it at {at:.3f} s",
                                f"tolerance {self.tol * 1e3:g} ms"))

    def _syscall(self, event: Event, call: Syscall) -> None:
        self._settle_blocked()
        start, _ = self._times(event)
        self._wait(start)
        began = self.target.now()
        outcome = self.calls.start(call)
        if isinstance(outcome, Pending):
            origin = start - event.time.start if event.time.relative else 0.0
            end_at = origin + call.end if call.end is not None else began
            blocked = _Blocked(event, call, outcome, end_at)
            self.blocked = blocked
            if call.end is None:
                # Not marked blocking: packetdrill's main thread would wait right here.
                self.settling = True
                try:
                    self._wait(began + self.tol)
                    self._poll()
                finally:
                    self.settling = False
                if blocked.done is None:
                    raise _Stop(Failure(event.line, "return", f"{call.name} to return at once",
                                        f"{call.name} blocked (mark a blocking call with ...END)"))
            else:
                self._log(event.line, f"{call.name}() blocks")
                return
            self.blocked = None
            outcome = blocked.done
        self._check_call(event, call, outcome)

    def _check_call(self, event: Event, call: Syscall, outcome: Outcome, at: float | None = None) -> None:
        returned = "" if at is None else f" (returned at {at:.6f})"
        self._log(event.line, outcome.text(call.name + "()") + returned)
        mismatch = self.calls.finish(call, outcome)
        if mismatch is not None:
            raise self._fail(event.line, mismatch)

    def _settle_blocked(self) -> None:
        """Wait for the blocking call in progress (at most until its END plus the tolerance)."""
        blocked = self.blocked
        if blocked is None:
            return
        call, end = blocked.call, blocked.end_at
        self.settling = True
        try:
            while blocked.done is None and self.target.now() < end + self.tol:
                self._wait(end + self.tol)
        finally:
            self.settling = False
        self.blocked = None
        if blocked.done is None:
            raise _Stop(Failure(blocked.event.line, "return", f"{call.name} to return at {end:.3f} s",
                                f"{call.name} still blocked at {self.target.now():.3f} s"))
        self._check_call(blocked.event, call, blocked.done, blocked.done_at)
        if abs(blocked.done_at - end) > self.tol:
            raise _Stop(Failure(blocked.event.line, "time", f"{call.name} to return at {end:.3f} s",
                                f"it returned at {blocked.done_at:.3f} s", f"tolerance {self.tol * 1e3:g} ms"))

    def _command(self, event: Event, command: Command) -> None:
        start, _ = self._times(event)
        self._wait(start)
        spec = commands.parse(command.text)
        self._log(event.line, f"`{command.text}`")
        if isinstance(spec, commands.Sysctl):
            error = self.target.sysctl(spec.settings)
            if error is not None:
                raise _Stop(Failure(event.line, "command", f"`{command.text}` to succeed", error))
            return
        lines = self.target.ss_lines(spec.state)
        if not spec.succeeds(lines):
            listing = "; ".join(lines) or "no sockets"
            raise _Stop(Failure(event.line, "command", f"`{command.text}` to succeed", f"it failed ({listing})"))

    def _finish(self) -> None:
        self._settle_blocked()
        self._wait(self.target.now() + self.tol)
        extra = self.target.take_packet()
        if extra is not None:
            at, raw = extra
            try:
                seg, options = packets.parse(raw)
                text = describe(seg, self.seqmap, options)
                self.result.trace.append((at, "out", seg))
            except MalformedPacket as exc:
                text = f"a malformed packet ({exc})"
            raise _Stop(Failure(self.last_line, "packet", "no more packets after the last line",
                                f"> {text} at {at:.3f} s"))
