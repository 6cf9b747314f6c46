"""Many concurrent idle connections held by the stack in worker processes, with the memory each costs.

    python benchmarks/bench_idle_workers.py [--connections 100000] [--workers 2] [--json]

A kernel client in the namespace opens N connections to the stack (spread over PORTS server ports,
with the namespace's ephemeral range widened: one destination gives ~64k source ports) and holds
them open. The stack runs as W worker processes on a multi-queue TUN device (stack.runtime.workers),
each accepting with a bare Protocol that does nothing. Reported: how many were established in each
worker, how long opening them took, the workers' RSS before and after, and the difference per
connection; the misrouted count. Printed, never asserted. Sized for the 2-core, 24 GiB machine: 100k
connections cost some hundreds of MB in the workers and a few hundred MB of kernel socket memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from stack.runtime.stack import Stack
from stack.runtime.workers import Workers

PORTS = 4
BASE = 7000
PER_PROCESS = 15_000

# The kernel side: open N connections at most BATCH in flight, hold them until stdin closes.
CLIENT = r"""
import resource, select, socket, sys, time, errno
n, addr, base, ports = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ep = select.epoll()
pending, done, failed, i = {}, [], 0, 0
t0 = time.monotonic()
while len(done) + failed < n:
    while i < n and len(pending) < 2000:
        s = socket.socket(); s.setblocking(False)
        err = s.connect_ex((addr, base + i % ports)); i += 1
        if err not in (0, errno.EINPROGRESS):
            failed += 1; s.close(); continue
        pending[s.fileno()] = s; ep.register(s.fileno(), select.EPOLLOUT)
    for fd, _ev in ep.poll(1.0):
        s = pending.pop(fd); ep.unregister(fd)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            done.append(s)
        else:
            failed += 1; s.close()
print(len(done), failed, round(time.monotonic() - t0, 3), flush=True)
sys.stdin.read()
"""


async def _app(stack: Stack) -> None:
    for i in range(PORTS):
        await stack.create_server(asyncio.Protocol, BASE + i, backlog=4096)


async def run(connections: int, workers: int) -> dict[str, Any]:
    async with Workers(workers, _app) as pool:
        netns = pool.netns
        assert netns is not None
        await asyncio.sleep(0.2)
        rss0 = await pool.ask("rss")
        setup = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535",
            "net.core.somaxconn=8192")
        await setup.wait()
        # One process holds at most its fd limit (20,000 here, and not raisable in a container).
        shares = [min(PER_PROCESS, connections - i) for i in range(0, connections, PER_PROCESS)]
        t0 = time.monotonic()
        clients = [await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, str(share), "198.18.0.2",
            str(BASE), str(PORTS), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            for share in shares]
        opened = failed = 0
        for client in clients:
            assert client.stdout is not None
            line = await asyncio.wait_for(client.stdout.readline(), 600)
            ok, bad, _seconds = line.split()
            opened, failed = opened + int(ok), failed + int(bad)
        seconds = time.monotonic() - t0
        await asyncio.sleep(1.0)  # the last ACKs of the handshakes reach the workers
        stats = await pool.ask("stats")
        rss1 = await pool.ask("rss")
        held = time.monotonic() - t0
        for client in clients:
            assert client.stdin is not None
            client.stdin.close()
        for client in clients:
            await asyncio.wait_for(client.wait(), 120)
        per_worker = [s.get("CurrEstab", 0) for s in stats]
        total = sum(per_worker)
        grown = sum(rss1) - sum(rss0)
        return {
            "workers": workers,
            "connections_asked": connections,
            "kernel_opened": opened,
            "kernel_failed": failed,
            "kernel_client_processes": len(shares),
            "open_seconds": round(seconds, 2),
            "established_per_worker": per_worker,
            "established": total,
            "misrouted": sum(s.get("TCPMisrouted", 0) for s in stats),
            "rss_mb_before": [round(r / 2**20, 1) for r in rss0],
            "rss_mb_after": [round(r / 2**20, 1) for r in rss1],
            "rss_bytes_per_connection": round(grown / total) if total else None,
            "held_seconds": round(held, 1),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = asyncio.run(run(args.connections, args.workers))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['established']:,} idle connections held by {result['workers']} workers "
          f"({', '.join(f'{n:,}' for n in result['established_per_worker'])}); the kernel opened "
          f"{result['kernel_opened']:,} in {result['open_seconds']:.1f} s ({result['kernel_failed']} failed)")
    print(f"worker RSS {result['rss_mb_before']} MB before -> {result['rss_mb_after']} MB after: "
          f"{result['rss_bytes_per_connection']:,} bytes per connection; misrouted {result['misrouted']}")


if __name__ == "__main__":
    main()
