#!/usr/bin/env python3
"""Soak: continuous connection churn over a lossy memory link, then everything must return to baseline.

Two hosts on the in-memory link under a virtual clock, with the fault engine losing, duplicating,
reordering, delaying and corrupting segments both ways. The client keeps opening short
connections of every closing pattern -- the client closes first (TIME-WAIT on the client), the
server closes first (TIME-WAIT on the server), both at once (CLOSING), aborts (RST) -- and a few
long streams that live for minutes of virtual time. Every byte is checked (the server echoes).

Real CPU time is bounded by --minutes. Every --every seconds it prints RSS, the connection and
TIME-WAIT tables and the timers. A warm-up phase runs first and drains to idle to take the
baseline; at the end the churn stops, everything drains, and the tables must be empty, no timer
pending, no Connection object alive, and RSS back near the baseline.

    .venv/bin/python tools/soak.py [--minutes 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.faults import FaultEngine  # noqa: E402
from stack.sim import Simulator  # noqa: E402
from stack.tcp.config import Config  # noqa: E402
from stack.tcp.connection import Connection  # noqa: E402
from stack.tcp.events import Accepted, Closed, CloseReason, EndOfStream, Event, Readable, Writable  # noqa: E402
from stack.tcp.host import Host, PortInUse  # noqa: E402
from stack.tcp.states import State  # noqa: E402

S = State
CLIENT, SERVER = "198.18.0.1", "198.18.0.2"
ECHO, REPLY_CLOSE, BOTH_CLOSE, STREAM = 7, 8, 9, 10  # the server's behaviour by port
STEP = 0.01  # virtual seconds per step
FAULTS = """\
drop in p=0.01
drop out p=0.01
dup in p=0.005
dup out p=0.005
reorder in p=0.01 hold=2 timeout=50ms
reorder out p=0.01 hold=2 timeout=50ms
delay out 1ms jitter=1ms p=0.05
corrupt in p=0.002
corrupt out p=0.002
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------- applications
@dataclass
class Job:
    """The client's side of one connection: what it sent, what came back, how it should end."""

    kind: str  # echo | reply-close | both-close | abort | stream
    started: float
    pending: bytearray = field(default_factory=bytearray)  # sent, not yet echoed back (compared then dropped)
    sent: int = 0
    echoed: int = 0
    to_send: int = 0
    until: float = 0.0  # streams: when to stop sending
    eof: bool = False
    done: bool = False
    reason: CloseReason | None = None
    corrupt: bool = False


@dataclass
class ServerJob:
    port: int
    backlog: bytearray = field(default_factory=bytearray)  # echo not yet accepted by the send buffer
    received: int = 0
    expected: int = -1  # from the 4-byte length prefix (short connections)
    header: bytearray = field(default_factory=bytearray)
    closed: bool = False


@dataclass
class Stats:
    opened: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    bytes: int = 0

    def note_bad(self, text: str) -> None:
        if len(self.bad) < 50:
            self.bad.append(text)


class Soak:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        # Keepalive reaps the half-open connections that a lost RST leaves behind (the peer aborted,
        # its RST was dropped: the survivor would wait forever, as any TCP without keepalive does).
        cfg = Config(secret=b"soak-soak-soak!!", keepalive=True, keepalive_time=20.0, keepalive_interval=5.0,
                     keepalive_probes=3)
        self.client = Host(CLIENT, cfg)
        self.server = Host(SERVER, cfg.with_changes(secret=b"soak-server-key!"))
        self.faults = FaultEngine(FAULTS, seed=seed)
        self.link = Simulator([self.client, self.server], delay=0.002, faults=self.faults)
        for port in (ECHO, REPLY_CLOSE, BOTH_CLOSE, STREAM):
            self.server.listen(port)
        self.jobs: dict[int, tuple[Connection, Job]] = {}
        self.stats = Stats()
        self.churn = True
        self.max_short = 60
        self.streams = 4

    @property
    def now(self) -> float:
        return self.link.now

    # ------------------------------------------------------------------ the client
    def _start(self) -> None:
        rng = self.rng
        short = sum(1 for _, j in self.jobs.values() if j.kind != "stream")
        long = len(self.jobs) - short
        if self.churn and long < self.streams:
            self._open("stream", STREAM, 0)
        if not self.churn or short >= self.max_short:
            return
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            kind = rng.choice(("echo", "echo", "reply-close", "reply-close", "both-close", "abort"))
            port = {"echo": ECHO, "reply-close": REPLY_CLOSE, "both-close": BOTH_CLOSE, "abort": ECHO}[kind]
            size = rng.choice((0, 1, 100, 1000, 5000, 20_000, rng.randint(1, 60_000)))
            self._open(kind, port, size)

    def _open(self, kind: str, port: int, size: int) -> None:
        try:
            conn = self.client.connect(SERVER, port, self.now)
        except PortInUse:
            return  # every ephemeral port held (TIME-WAIT): try later
        job = Job(kind, self.now, to_send=size)
        if kind == "stream":
            job.until = self.now + self.rng.uniform(20.0, 180.0)
        self.jobs[id(conn)] = (conn, job)
        conn.user_data = job
        self.stats.opened += 1

    def _client_tick(self) -> None:
        for conn, job in list(self.jobs.values()):
            if conn.state is S.ESTABLISHED or conn.state is S.CLOSE_WAIT:
                self._client_send(conn, job)

    def _client_send(self, conn: Connection, job: Job) -> None:
        rng = self.rng
        if job.kind == "stream":
            if self.now < job.until and self.churn and conn.send_queue_len < 200_000:
                self._send(conn, job, rng.randbytes(rng.randint(1, 20_000)))
            elif not Host.tcb(conn).fin_queued and job.echoed == job.sent:
                conn.shutdown(self.now)
            return
        if job.sent == 0 and not Host.tcb(conn).fin_queued:
            payload = rng.randbytes(job.to_send)
            self._send(conn, job, len(payload).to_bytes(4, "big") + payload)
            if job.kind == "both-close":
                conn.shutdown(self.now)  # our FIN right behind the data: crosses the server's
        if job.kind == "abort" and job.echoed >= job.sent // 2 and job.sent and not Host.tcb(conn).fin_queued:
            conn.abort(self.now)
        elif job.kind == "echo" and job.echoed == job.sent and job.sent and not Host.tcb(conn).fin_queued:
            conn.close(self.now)  # we close first: TIME-WAIT here

    def _send(self, conn: Connection, job: Job, data: bytes) -> None:
        n = conn.send(data, self.now)
        job.pending += data[:n]
        job.sent += n
        self.stats.bytes += n

    def _client_events(self, events: list[Event]) -> None:
        for e in events:
            conn: Connection | None = getattr(e, "handle", None)
            if conn is None or not isinstance(conn.user_data, Job):
                continue
            job = conn.user_data
            if isinstance(e, Readable):
                data = conn.receive(self.now)
                if job.pending[: len(data)] != data:
                    job.corrupt = True
                del job.pending[: len(data)]
                job.echoed += len(data)
            elif isinstance(e, EndOfStream):
                job.eof = True
                if job.kind in ("reply-close", "both-close", "stream"):
                    conn.close(self.now)  # the server closed first (or both did)
            elif isinstance(e, Closed):
                self._finish(conn, job, e.reason)

    def _finish(self, conn: Connection, job: Job, reason: CloseReason) -> None:
        job.done = True
        job.reason = reason
        self.jobs.pop(id(conn), None)
        conn.user_data = None
        key = f"{job.kind}:{reason.value}"
        self.stats.finished[key] = self.stats.finished.get(key, 0) + 1
        expected = CloseReason.ABORTED if job.kind == "abort" else CloseReason.NORMAL
        if job.kind == "abort" and reason is CloseReason.NORMAL:
            expected = reason  # it finished before the abort came
        if reason is not expected:
            self.stats.note_bad(f"{job.kind} closed {reason.value} at {self.now:.2f} ({conn.four_tuple})")
        if job.corrupt or (reason is CloseReason.NORMAL and (job.pending or job.echoed != job.sent)):
            self.stats.note_bad(f"{job.kind}: echo differs: sent {job.sent} echoed {job.echoed} corrupt={job.corrupt}")

    # ------------------------------------------------------------------ the server
    def _server_events(self, events: list[Event]) -> None:
        for e in events:
            conn = getattr(e, "handle", None)
            if conn is None:
                continue
            if isinstance(e, Accepted):
                conn.user_data = ServerJob(e.listen_port)
                continue
            sj = conn.user_data
            if not isinstance(sj, ServerJob):
                continue
            if isinstance(e, Readable):
                self._server_read(conn, sj, conn.receive(self.now))
            elif isinstance(e, Writable):
                self._server_flush(conn, sj)
            elif isinstance(e, EndOfStream):
                if not sj.closed:
                    sj.closed = True
                    self._server_flush(conn, sj)
                    conn.close(self.now)  # the client closed first: CLOSE-WAIT -> LAST-ACK
            elif isinstance(e, Closed):
                conn.user_data = None

    def _server_read(self, conn: Connection, sj: ServerJob, data: bytes) -> None:
        """Echo everything (the length prefix too); the prefix tells when the request is complete."""
        if sj.port != STREAM and len(sj.header) < 4:
            sj.header += data[: 4 - len(sj.header)]
            if len(sj.header) == 4:
                sj.expected = 4 + int.from_bytes(sj.header, "big")
        sj.received += len(data)
        sj.backlog += data
        self._server_flush(conn, sj)

    def _server_flush(self, conn: Connection, sj: ServerJob) -> None:
        if sj.backlog and conn.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            n = conn.send(bytes(sj.backlog), self.now)
            del sj.backlog[:n]
        if (sj.port in (REPLY_CLOSE, BOTH_CLOSE) and sj.expected >= 0 and sj.received >= sj.expected
                and not sj.closed and not sj.backlog):
            sj.closed = True
            conn.close(self.now)

    # ------------------------------------------------------------------ the loop
    def step(self) -> None:
        self._start()
        self._client_tick()
        self.link.run(STEP)
        for host, handler in ((self.client, self._client_events), (self.server, self._server_events)):
            events = self.link.events_of(host)
            batch = list(events)
            events.clear()
            handler(batch)

    def run_for(self, cpu_seconds: float, report: float, tag: str) -> None:
        end = time.process_time() + cpu_seconds
        next_report = time.process_time() + report
        while time.process_time() < end:
            for _ in range(20):
                self.step()
            if time.process_time() >= next_report:
                self.print_status(tag)
                next_report += report

    def drain(self, limit: float = 900.0) -> bool:
        """Stop the churn, let every job end, let TIME-WAIT expire: idle within `limit` virtual seconds."""
        self.churn = False
        end = self.now + limit
        while self.jobs and self.now < end:
            self.step()
        self.link.run(min(end - self.now, 4 * self.client.config.time_wait_duration))
        for host in (self.client, self.server):
            self.link.events_of(host).clear()
        self.churn = True
        return self.idle()

    def idle(self) -> bool:
        return not self.jobs and all(not h.connections and not h.time_wait and h.pending_timers() == 0
                                     for h in (self.client, self.server))

    def tables(self) -> str:
        c, s = self.client, self.server
        return (f"client conns={len(c.connections)} tw={len(c.time_wait)} timers={c.pending_timers()} | "
                f"server conns={len(s.connections)} tw={len(s.time_wait)} timers={s.pending_timers()}")

    def print_status(self, tag: str) -> None:
        st = self.stats
        print(f"[{tag}] cpu={time.process_time():7.1f}s virtual={self.now:8.1f}s rss={rss_bytes() / 2**20:6.1f}MiB "
              f"opened={st.opened} done={sum(st.finished.values())} live={len(self.jobs)} "
              f"MB={st.bytes / 1e6:.1f} | {self.tables()} | bad={len(st.bad)}", flush=True)


def live_connections() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Connection))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="CPU time budget (default 10)")
    parser.add_argument("--seconds", type=float, default=None, help="budget in seconds instead (short runs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=None, help="status line interval, CPU seconds")
    args = parser.parse_args(argv)
    budget = args.seconds if args.seconds is not None else 60.0 * args.minutes
    budget = max(2.0, min(budget, 24 * 3600.0))
    every = args.every or max(1.0, min(30.0, budget / 10))
    soak = Soak(args.seed)
    print(f"soak: {budget:.0f} s of CPU, seed {args.seed}, faults: {FAULTS.strip().replace(chr(10), '; ')}")

    warm = min(60.0, 0.15 * budget)
    soak.run_for(warm, every, "warm-up")
    if not soak.drain():
        print(f"warm-up did not drain: {soak.tables()} jobs={len(soak.jobs)}")
        return 1
    gc.collect()
    base_rss = rss_bytes()
    print(f"baseline after warm-up: rss={base_rss / 2**20:.1f}MiB {soak.tables()}")

    soak.run_for(max(1.0, 0.8 * budget - warm), every, "churn")
    soak.print_status("churn")
    drained = soak.drain()
    alive = live_connections()
    final_rss = rss_bytes()
    st = soak.stats
    print(f"end: rss={final_rss / 2**20:.1f}MiB (baseline {base_rss / 2**20:.1f}MiB) {soak.tables()} "
          f"Connection objects alive={alive}")
    print(f"connections: opened {st.opened}, finished {sum(st.finished.values())}: "
          + " ".join(f"{k}={v}" for k, v in sorted(st.finished.items())))
    print("faults: " + " ".join(f"{k}={v}" for k, v in soak.faults.counters.items() if v))
    for name, host in (("client", soak.client), ("server", soak.server)):
        c = host.counters
        malformed = sum(v for k, v in c.items() if k.startswith("InMalformed."))
        print(f"{name}: RetransSegs={c['RetransSegs']} TCPTimeouts={c['TCPTimeouts']} TW={c['TW']} "
              f"OutRsts={c['OutRsts']} InCsumErrors={c['InCsumErrors']} malformed={malformed}")
    problems = list(st.bad)
    if not drained:
        problems.append(f"did not drain: {soak.tables()} jobs={len(soak.jobs)}")
    if alive:
        problems.append(f"{alive} Connection objects still alive")
    slack = max(16 * 2**20, base_rss // 10)
    if final_rss > base_rss + slack:
        problems.append(f"RSS {final_rss / 2**20:.1f}MiB did not return to baseline {base_rss / 2**20:.1f}MiB")
    print("RESULT: " + ("ok" if not problems else "FAILED\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
