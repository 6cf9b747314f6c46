"""JSON-lines trace of a run: state changes, segments, fault actions and application calls.

One JSON object per line, keys in the order below, every record carrying `kind` and `time`
(float seconds on whatever clock drove the run: UNIX time, or the simulated clock of a test).
Endpoints are "addr:port" strings from this stack's point of view (`local` is ours); an IPv6
address is bracketed, "[2001:2::2]:80", as ss prints it (stack.wire.address.endpoint).

Schema (version 1; `SCHEMA` below is the machine-readable form the tests check against)::

    {"kind": "state", "time": 5.02, "local": "10.0.0.2:40000", "remote": "10.0.0.1:7",
     "old": "FIN-WAIT-1", "new": "FIN-WAIT-2", "cause": "rcv ACK of FIN"}
        one per StateChanged event; state names are RFC 9293 spellings (State.value).

    {"kind": "segment", "time": 5.01, "dir": "out",
     "segment": "10.0.0.2:40000 > 10.0.0.1:7 [FA] seq=... ack=... win=...", "fault": null}
        a segment crossing the stack's boundary; "out" = sent by the stack, "in" = delivered to it.
        `segment` is Segment.summary(). `fault` is null, or the name of the fault that acted on
        this segment ("drop", "delay", "duplicate", "corrupt", "reorder", ...): a "drop" segment
        was recorded but never arrived.

    {"kind": "fault", "time": 5.01, "fault": "drop", "dir": "in", "segment": "..." | null,
     "detail": "rule 2: drop 1st FIN"}
        an action of the fault injector, with or without a segment it applied to
        (e.g. "link-down" has none). `dir` is null when no segment is involved.

    {"kind": "icmp", "time": 5.01, "dir": "in",
     "message": "10.0.0.1 > 10.0.0.2: ICMP type 8 code 0 id 7 seq 1 len 56"}
        an ICMP or ICMPv6 message crossing the stack's boundary (stack.wire.icmp): `message` is
        IcmpMessage.summary().

    {"kind": "call", "time": 5.0, "local": "10.0.0.2:40000", "remote": "10.0.0.1:7" | null,
     "call": "close", "result": "ok"}
        an application call on the stack (connect, listen, send, close, shutdown, abort, ...)
        and its outcome as text ("ok", "EAGAIN", "ECONNRESET", ...).

Lines are built in memory and written in batches of about `flush_bytes`, plus on `flush()` and
`close()`, so tracing a busy run does not cost a write per record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Literal, TextIO

from stack.observe._stream import OwnedStream
from stack.tcp.events import Event, StateChanged
from stack.tcp.states import State
from stack.wire.address import endpoint
from stack.wire.segment import Segment

SCHEMA_VERSION = 1
Direction = Literal["in", "out"]
KINDS = ("state", "segment", "fault", "call", "icmp")

_NUM = (int, float)
_STR = (str,)
_STR_OR_NULL = (str, type(None))

# kind -> ordered {key: allowed JSON types}. Key order is the order written.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "state": {
        "kind": _STR,
        "time": _NUM,
        "local": _STR,
        "remote": _STR,
        "old": _STR,
        "new": _STR,
        "cause": _STR,
    },
    "segment": {"kind": _STR, "time": _NUM, "dir": _STR, "segment": _STR, "fault": _STR_OR_NULL},
    "fault": {
        "kind": _STR,
        "time": _NUM,
        "fault": _STR,
        "dir": _STR_OR_NULL,
        "segment": _STR_OR_NULL,
        "detail": _STR,
    },
    "icmp": {"kind": _STR, "time": _NUM, "dir": _STR, "message": _STR},
    "call": {
        "kind": _STR,
        "time": _NUM,
        "local": _STR,
        "remote": _STR_OR_NULL,
        "call": _STR,
        "result": _STR,
    },
}

_STATE_NAMES = frozenset(s.value for s in State)
DEFAULT_FLUSH_BYTES = 64 * 1024


def validate_record(record: Any) -> None:
    """Raise ValueError unless `record` is a well-formed trace record of the schema above."""
    if not isinstance(record, dict):
        raise ValueError(f"trace record is not an object: {record!r}")
    kind = record.get("kind")
    if kind not in SCHEMA:
        raise ValueError(f"unknown trace record kind {kind!r}")
    fields = SCHEMA[kind]
    if list(record) != list(fields):
        raise ValueError(f"{kind} record has keys {list(record)}, expected {list(fields)}")
    for key, types in fields.items():
        value = record[key]
        # bool is an int subclass; a boolean time is still a bug.
        if not isinstance(value, types) or isinstance(value, bool):
            raise ValueError(f"{kind}.{key} = {value!r} is not of type {[t.__name__ for t in types]}")
    if kind == "state" and not {record["old"], record["new"]} <= _STATE_NAMES:
        raise ValueError(f"unknown state name in {record!r}")
    if record.get("dir") not in (None, "in", "out"):
        raise ValueError(f"dir must be 'in' or 'out', got {record['dir']!r}")


class TraceWriter(OwnedStream):
    """Write trace records as JSON lines, buffered.

    `target` is a path (created/truncated, owned and closed by the writer) or an open text
    stream such as sys.stdout or io.StringIO (flushed on close, left open).
    """

    def __init__(self, target: str | os.PathLike[str] | TextIO, *, flush_bytes: int = DEFAULT_FLUSH_BYTES):
        self._stream: TextIO | None
        if isinstance(target, (str, os.PathLike)):
            self._stream = open(target, "w", encoding="utf-8")  # noqa: SIM115 -- closed in close()
            self._owns = True
        else:
            self._stream = target
            self._owns = False
        self.flush_bytes = flush_bytes
        self.records_written = 0
        self._pending: list[str] = []
        self._pending_chars = 0

    # -- record kinds -------------------------------------------------------------------------

    def state(self, time: float, local: str, remote: str, old: State | str, new: State | str, cause: str) -> None:
        self._emit(
            {
                "kind": "state",
                "time": float(time),
                "local": local,
                "remote": remote,
                "old": str(old),
                "new": str(new),
                "cause": cause,
            }
        )

    def state_changed(self, event: StateChanged) -> None:
        la, lp, ra, rp = event.four_tuple
        self.state(event.time, endpoint(la, lp), endpoint(ra, rp), event.old, event.new, event.cause)

    def event(self, event: Event) -> None:
        """Record an event from the core if it is one the trace keeps (StateChanged); ignore others.

        Lets a driver pass every event it receives without sorting them first.
        """
        if isinstance(event, StateChanged):
            self.state_changed(event)

    def events(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.event(ev)

    def segment(self, time: float, direction: Direction, segment: Segment | str, fault: str | None = None) -> None:
        self._emit(
            {
                "kind": "segment",
                "time": float(time),
                "dir": _check_dir(direction),
                "segment": segment if isinstance(segment, str) else segment.summary(),
                "fault": fault,
            }
        )

    def icmp(self, time: float, direction: Direction, message: str) -> None:
        self._emit({"kind": "icmp", "time": float(time), "dir": _check_dir(direction), "message": message})

    def fault(
        self,
        time: float,
        fault: str,
        *,
        direction: Direction | None = None,
        segment: Segment | str | None = None,
        detail: str = "",
    ) -> None:
        self._emit(
            {
                "kind": "fault",
                "time": float(time),
                "fault": fault,
                "dir": None if direction is None else _check_dir(direction),
                "segment": segment.summary() if isinstance(segment, Segment) else segment,
                "detail": detail,
            }
        )

    def call(self, time: float, local: str, remote: str | None, call: str, result: str = "ok") -> None:
        self._emit(
            {
                "kind": "call",
                "time": float(time),
                "local": local,
                "remote": remote,
                "call": call,
                "result": result,
            }
        )

    # -- buffering ----------------------------------------------------------------------------

    def _emit(self, record: dict[str, Any]) -> None:
        if self._stream is None:
            raise ValueError("write to a closed TraceWriter")
        # json.dumps' default ", " / ": " separators keep lines greppable by eye, matching the
        # documented examples. ensure_ascii=False keeps any non-ASCII text readable (file is UTF-8).
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self._pending.append(line)
        self._pending_chars += len(line)
        self.records_written += 1
        if self._pending_chars >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        if self._stream is None:
            return
        if self._pending:
            self._stream.write("".join(self._pending))
            self._pending.clear()
            self._pending_chars = 0
        self._stream.flush()


def _check_dir(direction: str) -> Direction:
    if direction == "in":
        return "in"
    if direction == "out":
        return "out"
    raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")


def read_trace(source: str | os.PathLike[str] | TextIO, *, validate: bool = True) -> list[dict[str, Any]]:
    """Parse a trace file back into records (validated against the schema unless told not to)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as f:
            lines = f.read().splitlines()
    else:
        lines = source.read().splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if validate:
                validate_record(record)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"trace line {number}: {exc}") from exc
        records.append(record)
    return records
