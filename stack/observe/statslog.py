"""A CSV of a running stack over time: every counter and the connections in each state, per second.

    time,elapsed,ESTABLISHED,SYN-SENT,...,TIME-WAIT,...,LISTEN,IpInHdrErrors,...,TcpActiveOpens,...

One row per sample: `time` is wall-clock seconds (UNIX time), `elapsed` seconds since the first
row, then the number of connections in each state (RFC 9293 names; LISTEN counts listeners,
TIME-WAIT the compact records), then any gauges the caller adds (e.g. the kernel's TIME-WAIT count),
then every counter under the names `tcpstack stats` prints (see stack.observe.nstat), as totals
since the stack started. The columns are fixed when the file is
opened -- every counter the stack can report is there from the first row, at 0 -- so the file
stays one table however the run goes. Each row is flushed: `tail -f` follows it, and
`tcpstack plot` draws it.

Sampling counts TIME-WAIT records with `len()` and walks only the live connections, so a
sample costs microseconds even with a million TIME-WAIT records.
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Callable, Mapping
from typing import IO

from stack.faults.engine import COUNTER_NAMES as FAULT_COUNTERS
from stack.observe.nstat import all_raw_names, nstat_view
from stack.tcp.host import Host
from stack.tcp.states import State

S = State
# The order `ss` lists states in (iproute2's sstate_name), LISTEN last; CLOSED connections leave
# the tables at once, so there is no column for them.
STATE_COLUMNS: tuple[State, ...] = (S.ESTABLISHED, S.SYN_SENT, S.SYN_RECEIVED, S.FIN_WAIT_1, S.FIN_WAIT_2,
                                    S.TIME_WAIT, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSING, S.LISTEN)


def state_counts(host: Host) -> dict[State, int]:
    """Connections per state: listeners, live connections, TIME-WAIT records."""
    counts = dict.fromkeys(STATE_COLUMNS, 0)
    for conn in host.connections.values():
        if conn.state in counts:
            counts[conn.state] += 1
    counts[S.TIME_WAIT] += len(host.time_wait)
    counts[S.LISTEN] = len(host.listeners)
    return counts


class StatsLog:
    """Samples one host into a CSV file, by itself once `start`ed on an event loop."""

    def __init__(self, stream: IO[str], host: Host, extra: Callable[[], Mapping[str, int]] | None = None, *,
                 faults: bool = False, gauges: Mapping[str, Callable[[], int]] | None = None,
                 owns: bool = True) -> None:
        self.host = host
        self.extra = extra
        self.gauges = dict(gauges or {})
        self._stream = stream
        self._owns = owns
        self._writer = csv.writer(stream, lineterminator="\n")
        extra_names = list(extra()) if extra is not None else []
        raw = all_raw_names([*host.stats(), *extra_names], FAULT_COUNTERS if faults else ())
        self.counter_columns = list(nstat_view(dict.fromkeys(raw, 0)))
        self.columns = ["time", "elapsed", *(s.value for s in STATE_COLUMNS), *self.gauges, *self.counter_columns]
        self._writer.writerow(self.columns)
        stream.flush()
        self._t0: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.rows = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], host: Host, extra: Callable[[], Mapping[str, int]] | None = None,
             *, faults: bool = False, gauges: Mapping[str, Callable[[], int]] | None = None) -> StatsLog:
        return cls(open(path, "w", encoding="utf-8", newline=""), host, extra, faults=faults, gauges=gauges)

    def sample(self, wall: float | None = None) -> dict[str, float]:
        """Write one row now (or at the given wall time) and return it."""
        if self._stream.closed:
            raise ValueError("sample of a closed StatsLog")
        wall = time.time() if wall is None else wall
        if self._t0 is None:
            self._t0 = wall
        raw = self.host.stats()
        if self.extra is not None:
            for name, value in self.extra().items():
                raw.setdefault(name, value)
        view = nstat_view(raw)
        counts = state_counts(self.host)
        row: dict[str, float] = {"time": round(wall, 3), "elapsed": round(wall - self._t0, 3)}
        row.update({s.value: counts[s] for s in STATE_COLUMNS})
        row.update({name: read() for name, read in self.gauges.items()})
        row.update({name: view.get(name, 0) for name in self.counter_columns})
        self._writer.writerow([row[c] for c in self.columns])
        self._stream.flush()
        self.rows += 1
        return row

    def start(self, loop: asyncio.AbstractEventLoop, interval: float = 1.0) -> None:
        """Sample now and then every `interval` seconds, on the loop's clock (no drift)."""
        if interval <= 0:
            raise ValueError("the sampling interval must be positive")
        first = loop.time()

        def tick(n: int) -> None:
            self.sample()
            self._timer = loop.call_at(first + (n + 1) * interval, tick, n + 1)

        tick(0)

    def close(self) -> None:
        """Stop sampling, with a last row: the file ends with the state the run ended in."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._stream.closed:
            self.sample()
            if self._owns:
                self._stream.close()
