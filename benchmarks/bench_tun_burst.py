"""A burst at the TUN device: N kernel connections to the stack close at once. Printed, never asserted.

A kernel client in the stack's namespace (its own process) opens N connections to a server on the
stack, then exits: the kernel closes every socket in one go, and N FINs rush into the TUN device.
What the device's queue cannot hold, the kernel drops (`ip -s link`: TX dropped on the device in
the namespace) and has to retransmit after its RTO. Printed per configuration: the drops, the
kernel's retransmissions, and how long until the stack had seen every FIN (every server
connection got its EOF) and until every connection was gone.

    sudo .venv/bin/python benchmarks/bench_tun_burst.py [--connections 20000] [--txqueuelen 500,DEFAULT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.link.netns import install_signal_handlers  # noqa: E402
from stack.link.tun import DEFAULT_TXQUEUELEN, TunLink, kernel_link_available  # noqa: E402
from stack.runtime import Stack  # noqa: E402
from stack.tcp.config import Config  # noqa: E402

PORT = 7000
PER_CLIENT = 10_000  # connections per client process (its file limit may not be raised)


def client_main(n: int, addr: str, port: int) -> None:
    """(Runs in the namespace.) Open n connections, say so, wait for a line on stdin, then exit
    without closing anything: the kernel closes them all at once."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    poller = select.epoll()
    pending: dict[int, socket.socket] = {}
    done: list[socket.socket] = []
    failed = 0
    while len(done) < n:
        while len(pending) < 200 and len(done) + len(pending) < n:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((addr, port))
            pending[s.fileno()] = s
            poller.register(s.fileno(), select.EPOLLOUT)
        for fd, _ in poller.poll(1.0):
            s = pending.pop(fd)
            poller.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append(s)
            else:
                failed += 1
                s.close()
        if failed > n:
            break
    print(json.dumps({"connected": len(done), "failed": failed}), flush=True)
    sys.stdin.readline()
    os._exit(0)


def tun_stats(link: TunLink) -> dict[str, int]:
    """The device's counters in the namespace (`ip -s link`): its TX is what the kernel sends us."""
    out = link.namespace.ip("-s", "-j", "link", "show", "dev", str(link.name))
    stats = json.loads(out)[0]["stats64"]
    return {"tx_packets": stats["tx"]["packets"], "tx_dropped": stats["tx"]["dropped"],
            "rx_dropped": stats["rx"]["dropped"]}


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def kernel_retransmits(link: TunLink) -> int:
    lines = link.run_in_netns(["cat", "/proc/net/snmp"], capture_output=True, text=True).stdout.splitlines()
    tcp = [line.split()[1:] for line in lines if line.startswith("Tcp:")]
    return int(dict(zip(tcp[0], tcp[1], strict=True))["RetransSegs"])


class Holder(asyncio.Protocol):
    """Holds the connection; at the peer's FIN it closes too (CLOSE-WAIT -> LAST-ACK)."""

    eofs = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def eof_received(self) -> bool:
        Holder.eofs += 1
        return False


async def burst(n: int, txqueuelen: int | None) -> dict[str, Any]:
    Holder.eofs = 0
    link = TunLink(txqueuelen=txqueuelen, offload=True)
    link.open()
    try:
        async with Stack(link=link, config=Config(secret=b"t" * 16, msl=1.0)) as stack:
            assert stack.host is not None
            stack.host.record_state_changes = False
            await stack.create_server(Holder, PORT)
            procs = []
            for first in range(0, n, PER_CLIENT):
                argv = link.namespace.exec_argv([sys.executable, __file__, "--client", str(min(PER_CLIENT, n - first)),
                                                 stack.addr, str(PORT)])
                procs.append(await asyncio.create_subprocess_exec(*argv, stdin=subprocess.PIPE,
                                                                  stdout=subprocess.PIPE))
            try:
                connected = 0
                for proc in procs:
                    assert proc.stdout is not None
                    connected += json.loads(await asyncio.wait_for(proc.stdout.readline(), 300))["connected"]
                await asyncio.sleep(0.5)
                before, rtx_before = tun_stats(link), kernel_retransmits(link)
                t0 = time.monotonic()
                for proc in procs:  # every client exits at once
                    assert proc.stdin is not None
                    proc.stdin.write(b"go\n")
                for proc in procs:
                    assert proc.stdin is not None
                    await proc.stdin.drain()
                for proc in procs:
                    await proc.wait()
                all_fins = all_gone = None
                low = start_mem = mem_available()
                while time.monotonic() - t0 < 120:
                    low = min(low, mem_available())
                    now = time.monotonic() - t0
                    if all_fins is None and Holder.eofs >= connected:
                        all_fins = now
                    if all_gone is None and not stack.host.connections:
                        all_gone = now
                    if all_fins is not None and all_gone is not None:
                        break
                    await asyncio.sleep(0.01)
                after, rtx_after = tun_stats(link), kernel_retransmits(link)
            finally:
                for proc in procs:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
    finally:
        link.close()
    return {"txqueuelen": txqueuelen or 500, "connected": connected,
            "tun_drops": after["tx_dropped"] - before["tx_dropped"],
            "into_tun": after["tx_packets"] - before["tx_packets"], "kernel_retransmits": rtx_after - rtx_before,
            "rx_drops": after["rx_dropped"] - before["rx_dropped"], "all_fins_s": all_fins,
            "all_closed_s": all_gone, "eofs": Holder.eofs, "memory_peak": start_mem - low}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--txqueuelen", default=f"500,{DEFAULT_TXQUEUELEN}",
                        help="comma-separated TUN queue lengths to try (500: the kernel's default for TUN)")
    parser.add_argument("--client", nargs=3, metavar=("N", "ADDR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(int(args.client[0]), args.client[1], int(args.client[2]))
        return 0
    ok, reason = kernel_link_available()
    if not ok:
        print(f"skipped: {reason}")
        return 0
    install_signal_handlers()
    print(f"{args.connections:,} kernel connections to the stack close at once (the client process exits)")
    for qlen in (int(q) for q in args.txqueuelen.split(",")):
        r = asyncio.run(burst(args.connections, qlen))
        fins = f"{r['eofs']:,} FINs seen in 120 s" if r["all_fins_s"] is None else f"{r['all_fins_s']:.2f} s"
        gone = "not within 120 s" if r["all_closed_s"] is None else f"{r['all_closed_s']:.2f} s"
        print(f"  txqueuelen {r['txqueuelen']:>7,}: {r['connected']:,} connected; {r['into_tun']:,} packets into the "
              f"TUN, {r['tun_drops']:,} dropped there ({r['rx_drops']:,} the other way), "
              f"{r['kernel_retransmits']:,} kernel retransmissions; every FIN seen: {fins}, every connection "
              f"closed: {gone}; memory in use grew by up to {r['memory_peak'] / 2**20:,.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
