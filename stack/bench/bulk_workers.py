"""`bench bulk --workers 1,2 --flows N`: bulk throughput of N parallel flows with the stack in 1, 2, ...
worker processes (stack.runtime.workers), beside N kernel-to-kernel flows in the same run.

Every worker runs a sink (port 9) and a source (port 19). The kernel opens N connections at once
toward one of them, each from a source port it binds so that the flows spread evenly over the workers
(flow i to worker i mod W, by the steering function of stack.link.steering) — left to the kernel's
random ports, two flows would share one worker half of the time and measure one core. Throughput is
the bytes of all flows over the longest flow's time; CPU is every worker process's user+system time
over that time; `misrouted` is the workers' summed TCPMisrouted and must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from stack.bench.bulk import CHUNK, STACK, STACK6, _exited, _peer, _stop, kernel_flows, read_all, send_all
from stack.bench.table import Column, render
from stack.link.steering import owner
from stack.runtime.stack import Stack
from stack.runtime.workers import WorkerOptions, Workers
from stack.tcp.config import Config

SINK_PORT, SOURCE_PORT = 9, 19


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await read_all(reader)
        writer.close()


async def _source(nbytes: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await send_all(writer, nbytes)


async def _apps(nbytes: int, stack: Stack) -> None:
    await stack.start_server(_sink, SINK_PORT)
    await stack.start_server(partial(_source, nbytes), SOURCE_PORT)


def source_ports(flows: int, workers: int, server_port: int, first: int = 40000) -> list[int]:
    """Kernel source ports for `flows` connections to `server_port`: flow i lands on worker i % workers."""
    ports: list[int] = []
    port = first
    while len(ports) < flows:
        if owner(port, server_port, workers) == len(ports) % workers:
            ports.append(port)
        port += 1
    return ports


async def _flows(netns: str, mode: str, target: str, port: int, nbytes: int, ports: list[int]) -> tuple[int, float]:
    peers = [_peer(netns, mode, target, str(port), str(nbytes), str(p)) for p in ports]
    try:
        for peer in peers:
            await _exited(peer)
    finally:
        _stop(peers)
    total, longest = 0, 0.0
    for peer in peers:
        assert peer.stdout is not None
        n, seconds = peer.stdout.read().split()
        total += int(n)
        longest = max(longest, float(seconds))
    return total, longest


async def through_workers(workers: int, flows: int, nbytes: int, mtu: int = 1500,
                          ipv6: bool = False) -> dict[str, Any]:
    """N flows toward the stack, then N from it, with the stack in `workers` processes."""
    opts = WorkerOptions(config=Config(msl=1.0, mtu=mtu), offload=True)
    out: dict[str, Any] = {"workers": workers, "flows": flows, "mtu": mtu, "family": "ipv6" if ipv6 else "ipv4"}
    async with Workers(workers, partial(_apps, nbytes), opts) as pool:
        netns = pool.netns
        assert netns is not None
        for name, mode, port in (("to_stack", "send", SINK_PORT), ("from_stack", "recv", SOURCE_PORT)):
            cpu0 = await pool.cpu_seconds()
            w0 = time.monotonic()
            target = STACK6 if ipv6 else STACK
            total, seconds = await _flows(netns, mode, target, port, nbytes, source_ports(flows, workers, port))
            wall = time.monotonic() - w0
            cpu = await pool.cpu_seconds() - cpu0
            out[f"{name}_MBps"] = round(total / seconds / 1e6, 1) if seconds else None
            out[f"{name}_cpu"] = round(cpu / wall, 2)
        stats = await pool.counters()
        out["misrouted"] = stats.get("TCPMisrouted", 0)
        out["retransmits"] = stats.get("RetransSegs", 0)
        if pool.dead():
            raise RuntimeError(f"worker(s) died during the run: {pool.dead()}")
    return out


def run_bulk_workers(megabytes: int, workers: list[int], flows: int,
                     progress: Callable[[str], None] | None = None,
                     run: Callable[[Any], dict[str, Any]] = asyncio.run, ipv6: bool = False) -> dict[str, Any]:
    """Every worker count in turn, then the kernel reference (over ::1 with `ipv6`), in one run."""
    nbytes = megabytes * CHUNK
    say = progress or (lambda line: None)
    result: dict[str, Any] = {"megabytes_per_flow": megabytes, "flows": flows, "workers": {},
                              "family": "ipv6" if ipv6 else "ipv4"}
    for n in workers:
        say(f"{flows} flows, {n} worker(s), MTU 1500 with offloads: {megabytes} MB per flow each way ...")
        result["workers"][str(n)] = run(through_workers(n, flows, nbytes, ipv6=ipv6))
    say(f"{flows} flows kernel to kernel ...")
    result["kernel_to_kernel"] = {"flows": flows, **kernel_flows(flows, nbytes, ipv6)}
    return result


def format_workers(r: dict[str, Any]) -> list[str]:
    k2k = r["kernel_to_kernel"]["MBps"]
    columns = [
        Column("to the stack", "MB/s", lambda v: v["to_stack_MBps"], ",.1f"),
        Column("from the stack", "MB/s", lambda v: v["from_stack_MBps"], ",.1f"),
        Column("x kernel, to", "ratio", lambda v: v["to_stack_MBps"] / k2k, ".2f"),
        Column("x kernel, from", "ratio", lambda v: v["from_stack_MBps"] / k2k, ".2f"),
        Column("CPU, to", "cores", lambda v: v["to_stack_cpu"], ".2f"),
        Column("CPU, from", "cores", lambda v: v["from_stack_cpu"], ".2f"),
        Column("misrouted", "segments", lambda v: v["misrouted"]),
        Column("retransmitted", "segments", lambda v: v["retransmits"]),
    ]
    over = " over IPv6" if r.get("family") == "ipv6" else ""
    lines = [f"bulk{over}, {r['flows']} flows at once, {r['megabytes_per_flow']} MB per flow each way, MTU 1500 "
             f"with offloads; kernel to kernel ({r['flows']} flows, same run): {k2k:,.1f} MB/s", ""]
    lines += render(columns, [(f"{n} worker(s)", v) for n, v in r["workers"].items()], first="stack")
    lines.append("CPU = user+system of every worker process / wall time; flows spread evenly over the workers "
                 "(the kernel side binds its source ports).")
    return lines

