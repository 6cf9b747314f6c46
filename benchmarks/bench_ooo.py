"""Out-of-order flood (the SegmentSmack class, CVE-2018-5390) against the core: what one 1-byte
segment at every other sequence number costs as the out-of-order queue grows. Printed, never asserted.

Two views:
  * the receive queue alone: the time of an insert once the queue holds 5,000 and 30,000 blocks;
  * a whole connection (host, ACK with SACK blocks, counters): 30,000 such segments fed to an
    ESTABLISHED connection on the virtual clock, time per segment by slices, and what the memory
    bounds did (blocks kept, counters).

    .venv/bin/python benchmarks/bench_ooo.py [--blocks 5000,30000] [--segments 30000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.tcp.buffers import ReceiveQueue  # noqa: E402
from stack.tcp.config import Config  # noqa: E402
from stack.tcp.host import Host  # noqa: E402
from stack.wire.segment import ACK, SYN, Segment, TcpOptions  # noqa: E402

RCV_NXT = 1000
SAMPLE = 200  # inserts timed around each size


def queue_insert_cost(sizes: list[int]) -> dict[int, float]:
    """Microseconds per insert of a 1-byte segment two bytes above the last, at each queue size."""
    q = ReceiveQueue()
    got: dict[int, float] = {}
    n = 0
    for size in sorted(sizes):
        while n < size - SAMPLE // 2:
            q.insert_ooo(RCV_NXT, RCV_NXT + 1 + 2 * n, b"x")
            n += 1
        t0 = time.perf_counter()
        for _ in range(SAMPLE):
            q.insert_ooo(RCV_NXT, RCV_NXT + 1 + 2 * n, b"x")
            n += 1
        got[size] = (time.perf_counter() - t0) / SAMPLE * 1e6
    return got


def connection_flood(segments: int, config: Config) -> dict[str, Any]:
    """`segments` alternating 1-byte segments into one ESTABLISHED connection, 1 ms apart (virtual)."""
    host = Host("198.18.0.2", config)
    host.record_state_changes = False
    host.listen(80)
    peer, port, irs = "198.18.0.1", 40000, 5000
    host.on_segment(Segment(peer, "198.18.0.2", port, 80, irs, 0, SYN, 65535, 0,
                            TcpOptions(mss=1460, wscale=7, sack_permitted=True)), 0.0)
    synack = host.take(host.ctx.now).segments[0]
    host.on_segment(Segment(peer, "198.18.0.2", port, 80, irs + 1, synack.seq + 1, ACK, 65535), 0.0)
    host.take(host.ctx.now)
    conn = host.connections[("198.18.0.2", 80, peer, port)]
    ack = synack.seq + 1
    slices: list[float] = []
    slice_len = max(1, segments // 10)
    t0 = time.perf_counter()
    for i in range(segments):
        now = 0.001 * (i + 1)
        host.on_segment(Segment(peer, "198.18.0.2", port, 80, irs + 2 + 2 * i, ack, ACK, 65535, 0, TcpOptions(),
                                b"x"), now)
        host.take(host.ctx.now)
        if (i + 1) % slice_len == 0:
            t1 = time.perf_counter()
            slices.append((t1 - t0) / slice_len * 1e6)
            t0 = t1
    counters = host.counters
    return {"us_per_segment_by_slice": slices, "ooo_bytes": conn.recv.ooo_bytes,
            "ooo_mem": getattr(conn.recv, "ooo_mem", None),
            "counters": {k: counters.get(k, 0) for k in ("TCPOFOQueue", "TCPOFODrop", "OfoPruned", "PruneCalled")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", default="5000,30000", help="queue sizes to time an insert at")
    parser.add_argument("--segments", type=int, default=30_000, help="segments of the connection flood")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.blocks.split(",")]
    for size, us in queue_insert_cost(sizes).items():
        print(f"receive queue alone: insert at {size:,} blocks: {us:,.1f} us", flush=True)
    r = connection_flood(args.segments, Config(secret=b"o" * 16))
    print(f"connection flood, {args.segments:,} segments (default config): us/segment by tenths: "
          + " ".join(f"{v:,.0f}" for v in r["us_per_segment_by_slice"]))
    print(f"  queued: {r['ooo_bytes']:,} bytes (accounted memory {r['ooo_mem']}); counters {r['counters']}")


if __name__ == "__main__":
    main()
