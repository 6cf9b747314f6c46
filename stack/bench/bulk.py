"""`tcpstack bench bulk`: bulk throughput between the Linux kernel and the stack over TUN.

Each case runs in a fresh private namespace. The kernel end is a separate process (a plain Python
socket loop under `ip netns exec`), so it does not share the stack's CPU. Cases: MTU 1500 with TUN
offloads (64 KB GSO segments through the virtio-net header) and without, MTU 65000 with offloads;
kernel to kernel over the namespace's loopback, and a raw TUN read + write-back loop as the
ceiling of any Python stack on this device. Measured and printed, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from stack.bench.loadgen import CHILD_GROUP
from stack.bench.table import Column, render
from stack.faults import FaultEngine, FaultRule
from stack.link.netns import Netns
from stack.link.tun import TunLink
from stack.runtime import Stack
from stack.tcp.config import Config

STACK, KERNEL = "198.18.0.2", "198.18.0.1"
STACK6 = "2001:2::2"
CHUNK = 1 << 20

# The kernel end: send or receive N bytes on one connection; prints seconds taken.
PEER = r"""
import socket, sys, time
mode, host, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "serve-sink":
    ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port)); ls.listen(1); print("ready", flush=True)
    s, _ = ls.accept(); n = 0; t = time.perf_counter()
    while (d := s.recv(1 << 20)): n += len(d)
    print(n, time.perf_counter() - t, flush=True); sys.exit()
if len(sys.argv) > 5:  # a source port chosen by the caller (bench bulk --workers: one flow per worker)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", int(sys.argv[5]))); s.connect((host, port))
else:
    s = socket.create_connection((host, port))
t = time.perf_counter(); n = 0
if mode == "send":
    buf = b"k" * (1 << 20)
    while n < total:
        n += s.send(buf[: min(len(buf), total - n)])
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
else:
    while (d := s.recv(1 << 20)): n += len(d)
print(n, time.perf_counter() - t, flush=True)
"""


def _peer(netns: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", PEER, *args],
                            stdout=subprocess.PIPE, text=True, **CHILD_GROUP)


async def _exited(proc: subprocess.Popen[str]) -> None:
    """Wait for `proc` without blocking the loop (or a thread that Ctrl-C could not stop)."""
    while proc.poll() is None:
        await asyncio.sleep(0.01)


def _stop(peers: list[subprocess.Popen[str]]) -> None:
    """Kernel ends still running when a case ends early (Ctrl-C, a timeout) go too."""
    for peer in peers:
        if peer.poll() is None:
            peer.kill()
            peer.wait()


async def read_all(reader: asyncio.StreamReader) -> int:
    """The stack's end of a flow toward it: read to the end; the octets read."""
    n = 0
    while data := await reader.read(CHUNK):
        n += len(data)
    return n


async def send_all(writer: asyncio.StreamWriter, nbytes: int) -> None:
    """The stack's end of a flow from it: `nbytes` in CHUNK writes, then close."""
    blob = b"s" * CHUNK
    for _ in range(nbytes // CHUNK):
        writer.write(blob)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _through_stack(mtu: int, offload: bool, nbytes: int, faults: list[FaultRule] | None = None,
                         config: Config | None = None, ipv6: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"mtu": mtu, "offload": offload, "family": "ipv6" if ipv6 else "ipv4"}
    engine = FaultEngine(faults) if faults else None  # a fresh engine (same seeds) per case
    async with Stack(config=config or Config(msl=1.0), mtu=mtu, offload=offload, faults=engine) as stack:
        assert stack.netns is not None and stack.host is not None
        done: asyncio.Future[tuple[int, float, float]] = asyncio.get_running_loop().create_future()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            t, c = time.perf_counter(), time.process_time()
            with contextlib.suppress(ConnectionError):  # reset by the stack's close on Ctrl-C
                n = await read_all(reader)
                writer.close()
                if not done.done():  # not when the run was cancelled meanwhile
                    done.set_result((n, time.perf_counter() - t, time.process_time() - c))

        async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            t, c = time.perf_counter(), time.process_time()
            with contextlib.suppress(ConnectionError):
                await send_all(writer, nbytes)
                if not done.done():
                    done.set_result((nbytes, time.perf_counter() - t, time.process_time() - c))

        for name, app, mode, port in (("to_stack", sink, "send", 9), ("from_stack", source, "recv", 19)):
            done = asyncio.get_running_loop().create_future()
            retrans = stack.host.counters["RetransSegs"]
            segs = stack.host.counters["InSegs"] + stack.host.counters["OutSegs"]
            server = await stack.start_server(app, port)
            peer = _peer(stack.netns, mode, STACK6 if ipv6 else STACK, str(port), str(nbytes))
            try:
                n, seconds, cpu = await asyncio.wait_for(done, 600)
                await _exited(peer)
            finally:
                _stop([peer])
            server.close()
            out[f"{name}_MBps"] = round(n / seconds / 1e6, 1)
            out[f"{name}_seconds"] = round(seconds, 3)
            out[f"{name}_cpu"] = round(cpu / seconds, 2)
            out[f"{name}_retransmits"] = stack.host.counters["RetransSegs"] - retrans
            out[f"{name}_segments"] = stack.host.counters["InSegs"] + stack.host.counters["OutSegs"] - segs
    return out


def kernel_flows(flows: int, nbytes: int, ipv6: bool = False) -> dict[str, Any]:
    """`flows` kernel-to-kernel flows at once over the namespace's loopback (::1 with `ipv6`): MB/s
    as the bytes of all flows over the longest flow's time."""
    loopback = "::1" if ipv6 else "127.0.0.1"
    with Netns() as ns:
        sinks = []
        for i in range(flows):
            sink = _peer(ns.name, "serve-sink", loopback, str(5001 + i), "0")
            assert sink.stdout is not None
            sink.stdout.readline()
            sinks.append(sink)
        senders = [_peer(ns.name, "send", loopback, str(5001 + i), str(nbytes)) for i in range(flows)]
        for sender in senders:
            sender.wait()
        total, longest = 0, 0.0
        for sink in sinks:
            n, seconds = sink.communicate()[0].split()
            total += int(n)
            longest = max(longest, float(seconds))
    return {"MBps": round(total / longest / 1e6, 1), "path": "loopback in the namespace"}


def _raw_tun(mtu: int, nbytes: int) -> dict[str, Any]:
    """Read what the kernel sends into the TUN device and write each packet back: the per-packet
    Python + syscall cost with no TCP at all."""
    with TunLink(mtu=mtu) as link:
        payload = mtu - 28
        blaster = subprocess.Popen(
            ["ip", "netns", "exec", link.netns, sys.executable, "-c",
             "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b=b'u'*int(sys.argv[1]);"
             "[s.sendto(b, ('198.18.0.2', 9)) for _ in range(int(sys.argv[2]))]", str(payload),
             str(nbytes // payload)], **CHILD_GROUP)
        got = 0
        fd = link.fileno()
        start = last = time.perf_counter()
        deadline = start + 60
        read, write = os.read, os.write
        # Until the sender is done and the device has been quiet for a moment (bounded in time).
        while time.perf_counter() < deadline:
            if not select.select([fd], [], [], 0.2)[0]:
                if blaster.poll() is not None:
                    break
                continue
            try:
                while True:
                    packet = read(fd, 65536)
                    write(fd, packet)
                    got += len(packet)
            except BlockingIOError:
                last = time.perf_counter()
        seconds = last - start
        blaster.kill()
        blaster.wait()
        return {"mtu": mtu, "MBps": round(got / seconds / 1e6, 1), "note": "read + write-back, no TCP"}


def run_bulk(megabytes: int, mtus: list[int], progress: Callable[[str], None] | None = None,
             run: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]] = asyncio.run,
             faults: list[FaultRule] | None = None, ipv6: bool = False) -> dict[str, Any]:
    """Every case in turn; `run` runs each stack case's coroutine (the CLI passes one that Ctrl-C
    can cancel, stack/cli/interrupt.py). `faults` apply between the stack and the kernel in every
    stack case (each case starts a fresh engine, so the same rules and seeds give the same run). With
    `ipv6` the stack cases and kernel to kernel (over ::1) run over IPv6; the raw TUN loop stays IPv4."""
    nbytes = megabytes * CHUNK
    result: dict[str, Any] = {"megabytes": megabytes, "family": "ipv6" if ipv6 else "ipv4"}
    if faults:
        result["faults"] = [rule.text for rule in faults]
    say = progress or (lambda line: None)
    for mtu in mtus:
        say(f"MTU {mtu} with offloads: {megabytes} MB each way ...")
        result[f"mtu{mtu}"] = run(_through_stack(mtu, True, nbytes, faults, ipv6=ipv6))
        if mtu == 1500:
            say(f"MTU 1500 without offloads: {megabytes // 4} MB each way ...")
            result["mtu1500_no_offload"] = run(_through_stack(mtu, False, nbytes // 4, faults, ipv6=ipv6))
    say("kernel to kernel ...")
    result["kernel_to_kernel"] = kernel_flows(1, nbytes, ipv6)
    say("raw TUN loop ...")
    result["raw_tun"] = {f"mtu{mtu}": _raw_tun(mtu, min(nbytes, 256 * CHUNK)) for mtu in mtus}
    return result


def format_result(r: dict[str, Any]) -> list[str]:
    """Two tables, one row per case: through the stack, then the references without it."""
    through = [
        Column("to the stack", "MB/s", lambda v: v["to_stack_MBps"], ",.1f"),
        Column("from the stack", "MB/s", lambda v: v["from_stack_MBps"], ",.1f"),
        Column("took, to", "s", lambda v: v["to_stack_seconds"], ",.3f"),
        Column("took, from", "s", lambda v: v["from_stack_seconds"], ",.3f"),
        Column("stack CPU, to", "cores", lambda v: v["to_stack_cpu"], ".2f"),
        Column("stack CPU, from", "cores", lambda v: v["from_stack_cpu"], ".2f"),
        Column("retransmitted", "segments", lambda v: v["to_stack_retransmits"] + v["from_stack_retransmits"]),
    ]
    over = " over IPv6" if r.get("family") == "ipv6" else ""
    lines = [f"bulk, {r['megabytes']} MB each way{over} (the no-offload case: a quarter of it)"]
    if r.get("faults"):
        lines.append("faults: " + "; ".join(r["faults"]))
    lines.append("")
    lines += render(through, [(key, v) for key, v in r.items() if key.startswith("mtu")])
    references = [Column("throughput", "MB/s", lambda v: v["MBps"], ",.1f"),
                  Column("what", "", lambda v: v.get("path") or v.get("note"))]
    rows = [("kernel_to_kernel", r["kernel_to_kernel"])]
    rows += [(f"raw_tun {key}", v) for key, v in r["raw_tun"].items()]
    lines += ["", "references, without tcpstack:", "", *render(references, rows)]
    return lines


def print_result(r: dict[str, Any]) -> None:
    print("\n".join(format_result(r)))
