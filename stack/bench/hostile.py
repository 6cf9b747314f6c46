"""A hostile peer over TUN: one connection floods the stack with out-of-order segments (SegmentSmack,
CVE-2018-5390) while a bystander's echo round trips are timed.

In the stack's own namespace a kernel socket connects to a sink on the stack; a separate process
(so that it never competes with the stack for the GIL) then sends, through a raw socket, 1-byte
segments on that connection at every other sequence number beyond what the stack expects --
each one opens a new out-of-order block that no gap will ever fill. Meanwhile a second kernel
connection to an echo server on the stack sends a small message every `interval` and times the
echo. The stack's answer to each flood segment (a duplicate ACK with SACK blocks) goes to the
kernel socket, which ignores it: it has sent nothing.

Used by benchmarks/bench_ooo_tun.py (20 s at 1,000 segments/s) and tests/kernel/test_ooo_flood.py.

    python -m stack.bench.hostile flood SRC DST SPORT DPORT SEQ ACK RATE SECONDS   (in the namespace)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from stack.link.nsenter import netns_socket
from stack.runtime.stack import Stack
from stack.tcp.config import Config
from stack.wire import build_packet
from stack.wire.segment import ACK, Segment

ECHO_PORT = 7
SINK_PORT = 9
MESSAGE = b"p" * 64


@dataclass
class FloodResult:
    rate: int
    seconds: float
    sent: int = 0  # flood segments the flooder sent
    rtts: list[float] = field(default_factory=list)  # the bystander's round trips, in seconds
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def max_rtt(self) -> float:
        return max(self.rtts, default=float("inf"))

    def percentile(self, q: float) -> float:
        ordered = sorted(self.rtts)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("inf")


def flood(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, rate: int, seconds: float) -> int:
    """(Runs in the namespace.) Send `rate` 1-byte segments per second, two sequence numbers apart,
    starting one beyond `seq`; returns how many were sent."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    start = time.monotonic()
    total = int(rate * seconds)
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate))
        while sent < due:
            seg = Segment(src, dst, sport, dport, (seq + 1 + 2 * sent) & 0xFFFFFFFF, ack, ACK, 65535, 0,
                          payload=b"x")
            raw.sendto(build_packet(seg), (dst, 0))
            sent += 1
        time.sleep(0.001)
    raw.close()
    return sent


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _Sink(asyncio.Protocol):
    """Keeps the flooded connection open; reads nothing (nothing ever arrives in order)."""


async def flood_experiment(rate: int, seconds: float, *, interval: float = 0.05,
                           config: Config | None = None) -> FloodResult:
    """A stack over TUN, a bystander timing echoes every `interval`, a flooder at `rate` for `seconds`."""
    result = FloodResult(rate, seconds)
    loop = asyncio.get_running_loop()
    async with Stack(config=config or Config(secret=b"h" * 16)) as stack:
        assert stack.netns is not None and stack.host is not None
        await stack.create_server(_Echo, ECHO_PORT)
        await stack.create_server(_Sink, SINK_PORT)
        victim = netns_socket(stack.netns)
        bystander = netns_socket(stack.netns)
        try:
            await loop.sock_connect(victim, (stack.addr, SINK_PORT))
            await loop.sock_connect(bystander, (stack.addr, ECHO_PORT))
            kport = victim.getsockname()[1]
            conn = stack.host.connections[(stack.addr, SINK_PORT, stack.peer_addr, kport)]
            argv = [sys.executable, "-m", "stack.bench.hostile", "flood", stack.peer_addr, stack.addr, str(kport),
                    str(SINK_PORT), str(conn.rcv_nxt), str(conn.snd_nxt), str(rate), str(seconds)]
            proc = await asyncio.create_subprocess_exec("ip", "netns", "exec", stack.netns, *argv,
                                                        stdout=subprocess.PIPE)
            async def echo() -> None:
                t0 = time.monotonic()
                await loop.sock_sendall(bystander, MESSAGE)
                got = b""
                while len(got) < len(MESSAGE):
                    chunk = await asyncio.wait_for(loop.sock_recv(bystander, 4096), 60)
                    if not chunk:
                        raise ConnectionError("the echo connection closed")
                    got += chunk
                result.rtts.append(time.monotonic() - t0)

            try:
                while proc.returncode is None:
                    await echo()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(proc.wait()), interval)
                await echo()  # behind the flood's last segment in the device queue: all were handled
                assert proc.stdout is not None
                result.sent = int((await proc.stdout.read()).strip() or 0)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        finally:
            victim.close()
            bystander.close()
        result.counters = {k: stack.host.counters.get(k, 0)
                           for k in ("TCPOFOQueue", "TCPOFODrop", "OfoPruned", "PruneCalled", "InternalErrors")}
    return result


def main(argv: list[str]) -> int:
    if len(argv) == 9 and argv[0] == "flood":
        src, dst, sport, dport, seq, ack, rate, seconds = argv[1:]
        print(flood(src, dst, int(sport), int(dport), int(seq), int(ack), int(rate), float(seconds)), flush=True)
        return 0
    print(__doc__.strip().splitlines()[-1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
