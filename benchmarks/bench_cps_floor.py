"""The floor under `tcpstack bench cps` on this machine: what a Python process pays per short
connection over TUN before any TCP logic. Printed, never asserted.

Issue 16 asks for <= 90 us of stack CPU per connection (stack closing first). This measures the
part of that no TCP implementation in Python escapes: the same TUN device (offloads on), the same
C load generator (connect, send 100 B, wait for the reply and the FIN, close), the same wire layer
(`parse_packet`, `build_packet`, the cffi checksum), one asyncio reader -- and a responder that
keeps one dict entry per connection and answers by rote: SYN -> SYN,ACK; the request -> the reply
with FIN; the peer's FIN -> ACK. No sequence checks, no timers, no retransmission, no TIME-WAIT, no
application API: it works only because nothing is lost on this link. Whatever the real stack
spends above this line is the price of RFC 9293 + the asyncio Protocol API in Python.

Both run in the same session, alternating, each in a fresh namespace:

    .venv/bin/python benchmarks/bench_cps_floor.py [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.bench.cps import bucket_ms_for, run_case  # noqa: E402
from stack.bench.loadgen import run_client  # noqa: E402
from stack.link import vnet  # noqa: E402
from stack.link.tun import TunLink  # noqa: E402
from stack.wire import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions, build_packet, parse_packet  # noqa: E402

PORT = 9500
PORTS = 16
WINDOW = 65535


class RoteResponder:
    """Answers the load generator's connections with no TCP state machine (see the docstring)."""

    def __init__(self, link: TunLink) -> None:
        self.link = link
        self.conns: dict[tuple[str, int], list[int]] = {}  # (addr, port) -> [snd_nxt, rcv_nxt, ts_recent]
        self.completed = 0

    def on_readable(self) -> None:
        out: list[bytes] = []
        now_ms = int(time.monotonic() * 1000) & 0xFFFFFFFF
        for raw in self.link.read_batch(256):
            seg = parse_packet(raw[vnet.HEADER_LEN:], verify_checksums=not raw[0] & vnet.NEEDS_CSUM)
            reply = self.answer(seg, now_ms)
            if reply is not None:
                out.append(vnet.PLAIN + build_packet(reply))
        if out:
            self.link.write_batch(out)

    def answer(self, seg: Segment, now_ms: int) -> Segment | None:
        key = (seg.src_addr, seg.src_port)
        flags = seg.flags
        ts = seg.options.timestamp
        if flags & RST:
            self.conns.pop(key, None)
            return None
        if flags & SYN:
            iss = (seg.src_port * 2654435761) & 0xFFFFFFFF
            state = self.conns[key] = [(iss + 1) & 0xFFFFFFFF, (seg.seq + 1) & 0xFFFFFFFF, ts[0] if ts else 0]
            opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(now_ms, state[2]))
            return Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, iss, state[1], SYN | ACK,
                           WINDOW, 0, opts, b"")
        state = self.conns.get(key)
        if state is None:
            return None
        if ts is not None:
            state[2] = ts[0]
        opts = TcpOptions(timestamp=(now_ms, state[2]))
        if seg.payload:  # the request: the reply and our FIN in one segment
            state[1] = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
            seq = state[0]
            state[0] = (seq + len(seg.payload) + 1) & 0xFFFFFFFF
            return Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, seq, state[1],
                           ACK | PSH | FIN, WINDOW >> 7, 0, opts, seg.payload)
        if flags & FIN:  # the peer's FIN after ours: ACK it; no TIME-WAIT kept
            del self.conns[key]
            self.completed += 1
            return Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, state[0],
                           (seg.seq + 1) & 0xFFFFFFFF, ACK, WINDOW >> 7, 0, opts, b"")
        return None


async def floor_run(seconds: float, concurrency: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with TunLink(offload=True) as link:
        responder = RoteResponder(link)
        loop.add_reader(link.fileno(), responder.on_readable)
        try:
            t0 = time.process_time()
            gen = await run_client(link.netns, link.addr, PORT, PORTS, seconds, concurrency, size=100,
                                   wait_eof=True, bucket_ms=bucket_ms_for(seconds))
            cpu = time.process_time() - t0
        finally:
            loop.remove_reader(link.fileno())
    conns = gen["connections"]
    return {"cps": conns / (gen["elapsed"] or seconds), "us": cpu / conns * 1e6 if conns else float("nan"),
            "errors": {k: v for k, v in gen.items() if k.endswith("errors") and v}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"{'run':4} {'floor conn/s':>13} {'floor us/conn':>14} {'stack conn/s':>13} {'stack us/conn':>14}")
    for i in range(args.runs):
        floor = asyncio.run(floor_run(args.seconds, args.concurrency))
        real = asyncio.run(run_case("stack_closes_first", args.seconds, args.concurrency))
        print(f"{i + 1:<4} {floor['cps']:13,.0f} {floor['us']:14.1f} {real['cps']:13,.0f} "
              f"{real['cpu_us_per_conn']:14.1f}  {floor['errors'] or ''}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
