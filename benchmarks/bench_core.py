"""The sans-IO core alone, on the in-memory link (no kernel, no TUN): what a connection and a
megabyte cost in Python, and what a million TIME-WAIT records cost in memory. Printed, never asserted."""

from __future__ import annotations

import gc
import socket
import time
from typing import Any

from stack.sim import Simulator
from stack.tcp.config import Config
from stack.tcp.events import Accepted
from stack.tcp.host import Host
from stack.tcp.timewait import TimeWait


def _pair(cfg: Config) -> tuple[Host, Host, Simulator]:
    a, b = Host("198.18.0.1", cfg), Host("198.18.0.2", cfg)
    for h in (a, b):
        h.record_state_changes = False
    return a, b, Simulator([a, b], delay=0.0001)


def bench_connections(n: int = 2000) -> dict[str, float]:
    """Handshake, 100 bytes each way, close (client first), for n connections in virtual time."""
    a, b, link = _pair(Config(msl=1.0, secret=b"b" * 16))
    b.listen(7)
    t0 = time.perf_counter()
    for _ in range(n):
        c = a.connect("198.18.0.2", 7, link.now)
        link.run(0.01)
        events = link.events_of(b)
        s = next(e.handle for e in events if isinstance(e, Accepted))
        events.clear()
        link.events_of(a).clear()
        c.send(b"x" * 100, link.now)
        link.run(0.01)
        s.receive(link.now)
        s.send(b"y" * 100, link.now)
        link.run(0.01)
        c.receive(link.now)
        c.close(link.now)
        link.run(0.01)
        s.close(link.now)
        link.run(0.01)
    dt = time.perf_counter() - t0
    segments = a.counters["OutSegs"] + b.counters["OutSegs"]
    return {"connections": n, "us_per_connection": dt / n * 1e6, "segments_per_connection": segments / n,
            "us_per_segment": dt / segments * 1e6}


def bench_bulk(megabytes: int = 32) -> dict[str, float]:
    """One-way bulk transfer through both cores (sender and receiver both counted)."""
    a, b, link = _pair(Config(msl=1.0, secret=b"b" * 16, mtu=1500))
    b.listen(7)
    c = a.connect("198.18.0.2", 7, link.now)
    link.run(0.01)
    s = next(e.handle for e in link.events_of(b) if isinstance(e, Accepted))
    total = megabytes << 20
    chunk = b"z" * (1 << 20)
    sent = got = 0
    t0 = time.perf_counter()
    while got < total:
        if sent < total:
            sent += c.send(chunk[: min(len(chunk), total - sent)], link.now)
        link.step()
        got += len(s.receive(link.now))
        if len(link.events_of(a)) > 10000:
            link.events_of(a).clear()
            link.events_of(b).clear()
    dt = time.perf_counter() - t0
    segs = a.counters["OutSegs"] + b.counters["OutSegs"]
    return {"megabytes": megabytes, "MBps": megabytes / dt, "us_per_segment": dt / segs * 1e6}


def bench_time_wait(n: int = 1_000_000, family: int = 4, clients: int = 16 * 254) -> dict[str, float]:
    """n records from `clients` remote addresses (the default: 4,064, 246 records each) of one family."""
    local = "198.18.0.2" if family == 4 else "2001:2::2"
    host = Host(local, Config())
    host.record_state_changes = False
    if family == 4:
        # Counted up from 198.18.0.1 (only strings here: nothing is sent).
        addrs = [socket.inet_ntoa((0xC6120000 + i).to_bytes(4, "big")) for i in range(1, clients + 1)]
    else:
        addrs = [f"2001:2::{i >> 16:x}:{i & 0xFFFF:x}" for i in range(1, clients + 1)]
    gc.collect()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    before = rss()
    t0 = time.perf_counter()
    for i in range(n):
        key = (local, 7, addrs[i % len(addrs)], 1024 + i // len(addrs))
        host.time_wait.add(TimeWait(key, i, i, 1000, 12345, 0.0, 99, 0.0, 60.0 + i * 1e-5))
    add = time.perf_counter() - t0
    gc.collect()
    per_entry = (rss() - before) / n
    t0 = time.perf_counter()
    host.on_timers(30.0)
    idle = time.perf_counter() - t0
    t0 = time.perf_counter()
    host.on_timers(100.0)
    expire = time.perf_counter() - t0
    return {"entries": n, "family": family, "clients": clients, "bytes_per_entry": per_entry,
            "add_us": add / n * 1e6, "idle_advance_ms": idle * 1e3,
            "expire_us": expire / n * 1e6, "left": len(host.time_wait)}


def run() -> dict[str, Any]:
    return {"connections": bench_connections(), "bulk": bench_bulk(), "time_wait": bench_time_wait(),
            "time_wait6": bench_time_wait(family=6)}


def main() -> None:
    r = run()
    c, b = r["connections"], r["bulk"]
    print("core on the in-memory link (both hosts' Python work counted)")
    print(f"  short connection (handshake, 100 B each way, close): {c['us_per_connection']:.0f} us, "
          f"{c['segments_per_connection']:.1f} segments, {c['us_per_segment']:.1f} us/segment")
    print(f"  bulk, {b['megabytes']} MB one way: {b['MBps']:.1f} MB/s, {b['us_per_segment']:.1f} us/segment")
    for t in (r["time_wait"], r["time_wait6"]):
        print(f"  {t['entries']:,} IPv{t['family']} TIME-WAIT records from {t['clients']:,} clients: "
              f"{t['bytes_per_entry']:.0f} bytes each (RSS, wheel included), add {t['add_us']:.2f} us, "
              f"idle advance {t['idle_advance_ms']:.2f} ms, expiry {t['expire_us']:.2f} us each")


if __name__ == "__main__":
    main()
