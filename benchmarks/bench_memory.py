"""Memory per idle connection, per state, in the sans-IO core on the virtual clock. Printed, never asserted.

A hand-driven peer (no second host, so only the host under test holds memory) opens N connections
to a listener with Linux's SYN options (MSS, window scale, SACK, timestamps), then leaves each in
one state: ESTABLISHED (handshake done), CLOSE-WAIT (the peer sent its FIN), FIN-WAIT-2 (the
application closed, the peer acknowledged the FIN, orphaned as after close()), TIME-WAIT (then the
peer's FIN). Each state is measured in a fresh process: the growth of RSS divided by N, and what
tracemalloc attributes to Python objects (the timer wheel's C memory shows only in RSS).

    .venv/bin/python benchmarks/bench_memory.py [--connections 20000] [--state ESTABLISHED]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.tcp.config import Config  # noqa: E402
from stack.tcp.host import Host  # noqa: E402
from stack.wire.segment import ACK, FIN, SYN, Segment, TcpOptions  # noqa: E402

STATES = ("ESTABLISHED", "CLOSE-WAIT", "FIN-WAIT-2", "TIME-WAIT")
LOCAL, PORT = "198.18.0.2", 80


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def build(host: Host, n: int, state: str, sport_base: int = 10_000) -> None:
    """N connections from distinct peers, each driven into `state`; the host's output is dropped."""
    now = 1.0
    peers = [f"198.18.{1 + i // 250}.{1 + i % 250}" for i in range(n // 100 + 1)]
    for i in range(n):
        now += 0.0001
        src, sport = peers[i // 100], sport_base + i % 100
        irs = 1_000_000 + i
        syn_opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1000, 0))
        host.on_segment(Segment(src, LOCAL, sport, PORT, irs, 0, SYN, 64240, 0, syn_opts), now)
        synack = host.take(now).segments[0]
        iss, our_ts = synack.seq, synack.options.timestamp[0] if synack.options.timestamp else 0
        opts = TcpOptions(timestamp=(1001, our_ts))
        host.on_segment(Segment(src, LOCAL, sport, PORT, irs + 1, iss + 1, ACK, 502, 0, opts), now)
        if state == "CLOSE-WAIT":
            host.on_segment(Segment(src, LOCAL, sport, PORT, irs + 1, iss + 1, FIN | ACK, 502, 0, opts), now)
        elif state in ("FIN-WAIT-2", "TIME-WAIT"):
            handle = host.connections[(LOCAL, PORT, src, sport)].handle
            assert handle is not None
            handle.close(now)
            host.take(now)
            host.on_segment(Segment(src, LOCAL, sport, PORT, irs + 1, iss + 2, ACK, 502, 0, opts), now)
            if state == "TIME-WAIT":
                host.on_segment(Segment(src, LOCAL, sport, PORT, irs + 1, iss + 2, FIN | ACK, 502, 0, opts), now)
        host.take(now)


def measure(n: int, state: str, traced: bool) -> float:
    """Bytes per connection: RSS growth, or (traced) what tracemalloc sees allocated by Python."""
    host = Host(LOCAL, Config(secret=b"m" * 16, syn_backlog=n + 1))
    host.record_state_changes = False
    host.listen(PORT, backlog=n + 1)
    build(host, 50, state, sport_base=20_000)  # warm-up: first-use allocations are not per connection
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else rss()
    build(host, n, state)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if traced else rss()
    held = len(host.time_wait) if state == "TIME-WAIT" else len(host.connections)
    assert held == n + 50, f"{held} of {n + 50} connections reached {state}"
    return (after - before) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--state", choices=STATES, help="measure one state in this process (JSON out)")
    parser.add_argument("--traced", action="store_true", help="with --state: tracemalloc instead of RSS")
    args = parser.parse_args(argv)
    if args.state:
        print(json.dumps(measure(args.connections, args.state, args.traced)))
        return
    print(f"memory per idle connection, {args.connections:,} connections per state (core, virtual clock)")
    print(f"  {'state':<12} {'RSS bytes':>10} {'Python objects':>15}")
    for state in STATES:
        got = []
        for traced in ([], ["--traced"]):
            argv = [sys.executable, __file__, "--connections", str(args.connections), "--state", state, *traced]
            got.append(json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout))
        print(f"  {state:<12} {got[0]:>10,.0f} {got[1]:>15,.0f}", flush=True)


if __name__ == "__main__":
    main()
