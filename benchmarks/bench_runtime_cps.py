"""The whole stack (asyncio runtime, wire, core) per short connection, against a kernel-like peer in
memory. Printed, never asserted.

`tcpstack bench cps` measures over TUN against the real kernel, on a machine shared with others:
its numbers move by 10% from run to run. This drives the same `Stack`, the same server protocols
and the same packets -- a Linux client's SYN options, its separate ACK and request, the stack's
reply with its FIN, and the client's FIN -- over an in-memory link that plays the kernel's side,
so one change can be measured to a few percent. The peer's own work is timed and taken out:
what is printed is the process CPU the stack spent per connection.

Cases (the stack's side as in `bench cps`):
* `stack_closes_first`: reply-close server; the client waits for the stack's FIN, then closes.
* `kernel_closes_first`: echo server; the client closes once the echo is back, the stack's FIN
  goes second (with the ACK of the client's FIN), and the client ACKs it.

    .venv/bin/python benchmarks/bench_runtime_cps.py [--connections 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.bench.cps import EchoProtocol, ReplyCloseProtocol  # noqa: E402
from stack.link import vnet  # noqa: E402
from stack.runtime.stack import Stack  # noqa: E402
from stack.tcp.config import Config  # noqa: E402
from stack.wire import ACK, FIN, PSH, SYN, Segment, TcpOptions, build_packet, parse_packet  # noqa: E402

CLIENT, SERVER = "198.18.0.1", "198.18.0.2"
PORTS = 16
BASE_PORT = 8000
REQUEST = b"x" * 100
# What a Linux client puts on its packets: the SYN's options, then timestamps alone.
SYN_OPTIONS = dict(mss=1460, sack_permitted=True, wscale=7)
# A frame from the kernel whose checksum is left to the receiver (CHECKSUM_PARTIAL), as locally
# generated traffic arrives over TUN with offloads on.
PARTIAL = vnet.HEADER.pack(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 0, 0)


class KernelLikePeer:
    """The link and the kernel's TCP behind it, for `n` short connections, `concurrency` at a time."""

    offload = True  # frames carry the virtio-net header, as over TUN with offloads
    netns = None

    def __init__(self, n: int, concurrency: int, case: str) -> None:
        self.n = n
        self.concurrency = concurrency
        self.case = case
        self.inbox: list[bytes] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.callback: Callable[[], None] | None = None
        self.scheduled = False
        self.started = 0
        self.completed = 0
        self.peer_seconds = 0.0  # wall time spent in this class's own work (not the stack's)
        self.conns: dict[int, list[int]] = {}  # client port -> [snd_nxt, rcv_nxt, ts_recent, phase]
        self.done: asyncio.Future[None] | None = None
        self._port = 10000

    # ---- the link interface the runtime drives
    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self.loop, self.callback = loop, callback

    def detach(self) -> None:
        self.callback = None

    def close(self) -> None:
        pass

    def read_batch(self, max_packets: int = 256) -> list[bytes]:
        t0 = time.perf_counter()
        self.scheduled = False
        batch = self.inbox[:max_packets]
        del self.inbox[:max_packets]
        if self.inbox:
            self._wake()
        self.peer_seconds += time.perf_counter() - t0
        return batch

    def write_batch(self, frames: list[bytes]) -> int:
        t0 = time.perf_counter()
        for frame in frames:
            self._from_stack(parse_packet(frame[vnet.HEADER_LEN:]))
        self.peer_seconds += time.perf_counter() - t0
        return len(frames)

    # ---- the kernel's side
    def start(self) -> None:
        t0 = time.perf_counter()
        for _ in range(self.concurrency):
            self._open()
        self.peer_seconds += time.perf_counter() - t0

    def _wake(self) -> None:
        if not self.scheduled and self.callback is not None and self.loop is not None:
            self.scheduled = True
            self.loop.call_soon(self.callback)

    def _send(self, port: int, seq: int, ack: int, flags: int, options: TcpOptions, payload: bytes = b"") -> None:
        seg = Segment(CLIENT, SERVER, port, BASE_PORT + port % PORTS, seq, ack, flags, 502, 0, options, payload)
        self.inbox.append(PARTIAL + build_packet(seg))
        self._wake()

    def _tsval(self) -> int:
        return int(time.monotonic() * 1000) & 0xFFFFFFFF

    def _open(self) -> None:
        if self.started >= self.n:
            return
        self.started += 1
        port = self._port
        self._port += 1
        iss = (port * 7919) & 0xFFFFFFFF
        self.conns[port] = [iss + 1, 0, 0, 0]
        self._send(port, iss, 0, SYN, TcpOptions(timestamp=(self._tsval(), 0), **SYN_OPTIONS))  # type: ignore[arg-type]

    def _from_stack(self, seg: Segment) -> None:
        state = self.conns.get(seg.dst_port)
        if state is None:
            return
        port = seg.dst_port
        ts = seg.options.timestamp
        if ts is not None:
            state[2] = ts[0]
        flags = seg.flags
        if flags & SYN:  # SYN-ACK: the ACK, then the request (connect() returned, write())
            state[1] = (seg.seq + 1) & 0xFFFFFFFF
            opts = TcpOptions(timestamp=(self._tsval(), state[2]))
            self._send(port, state[0], state[1], ACK, opts)
            self._send(port, state[0], state[1], ACK | PSH, opts, REQUEST)
            state[0] += len(REQUEST)
            return
        if seg.payload or flags & FIN:
            state[1] = (seg.seq + len(seg.payload) + (1 if flags & FIN else 0)) & 0xFFFFFFFF
        opts = TcpOptions(timestamp=(self._tsval(), state[2]))
        if self.case == "stack_closes_first":
            if flags & FIN:  # the reply and the stack's FIN: read both, close
                self._send(port, state[0], state[1], ACK | FIN, opts)
                state[0] += 1
                state[3] = 1
            elif state[3] and seg.ack == state[0]:
                self._finished(port)  # the ACK of our FIN: the stack holds the TIME-WAIT
        else:  # kernel_closes_first
            if seg.payload and not state[3]:  # the echo: ACKed at once (quick-ACK mode), then close
                self._send(port, state[0], state[1], ACK, opts)
                self._send(port, state[0], state[1], ACK | FIN, opts)
                state[0] += 1
                state[3] = 1
            elif flags & FIN:  # the stack's FIN: ACK it, our socket is in TIME-WAIT
                self._send(port, state[0], state[1], ACK, opts)
                self._finished(port)

    def _finished(self, port: int) -> None:
        del self.conns[port]
        self.completed += 1
        if self.completed >= self.n:
            if self.done is not None and not self.done.done():
                self.done.set_result(None)
        else:
            self._open()


async def one_run(case: str, n: int, concurrency: int) -> dict[str, Any]:
    peer = KernelLikePeer(n, concurrency, case)
    proto = ReplyCloseProtocol if case == "stack_closes_first" else EchoProtocol
    async with Stack(peer, config=Config(msl=30.0), addr=SERVER, peer_addr=CLIENT) as stack:
        for i in range(PORTS):
            await stack.create_server(proto, BASE_PORT + i, backlog=1024)
        peer.done = asyncio.get_running_loop().create_future()
        gc.collect()
        cpu0 = time.process_time()
        peer.start()
        await asyncio.wait_for(peer.done, 120)
        cpu = time.process_time() - cpu0
        counters = stack.counters()
    stack_cpu = cpu - peer.peer_seconds
    return {"us": stack_cpu / n * 1e6, "peer_us": peer.peer_seconds / n * 1e6,
            "in": counters["InSegs"] / n, "out": counters["OutSegs"] / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--case", action="append", choices=("stack_closes_first", "kernel_closes_first"))
    args = ap.parse_args(argv)
    print(f"{'case':22} {'stack CPU us/conn':>18} {'peer us/conn':>13} {'segs in/out':>12}   (best of {args.runs})")
    for case in args.case or ("stack_closes_first", "kernel_closes_first"):
        runs = [asyncio.run(one_run(case, args.connections, args.concurrency)) for _ in range(args.runs)]
        best = min(runs, key=lambda r: r["us"])
        print(f"{case:22} {best['us']:18.1f} {best['peer_us']:13.1f} {best['in']:5.2f}/{best['out']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
