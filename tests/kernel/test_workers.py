"""Two worker processes on one multi-queue TUN device (stack.runtime.workers): the kernel steers every
flow to the worker that owns it, for both directions of opening, across many connections, and after
the connections sat idle longer than tun's own flow table keeps a flow (3 s), over IPv4 and IPv6
(the steering program reads the ports behind either header).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import platform
import shutil
import socket
import struct
import sys
import textwrap
from functools import partial
from typing import Any

import pytest

from stack.bench.cps import EchoProtocol
from stack.bench.loadgen import EchoServer
from stack.link.nsenter import netns_socket
from stack.link.steering import flow_hash, load_steering_program, owner
from stack.runtime.stack import Stack
from stack.wire import ACK, Segment, build_packet
from stack.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REQUEST,
    ICMP_FRAG_NEEDED,
    ICMP_PORT_UNREACH,
    ICMPV6_DEST_UNREACH,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG,
    IcmpMessage,
    build_icmp,
)
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import Fam

pytestmark = [requires_kernel_link]

PORT = 7000  # the stack's echo servers: PORT..PORT+3
KERNEL_PORT = 9000  # the kernel's echo server
PER_WORKER = 60  # connections each worker opens toward the kernel
FROM_KERNEL = 120  # connections the kernel opens toward the stack
IDLE = 3.5  # longer than TUN_FLOW_EXPIRE (3 s)


async def _serve_and_connect(kernel: str, stack: Stack) -> dict[str, Any]:
    """In every worker: echo servers on PORT..PORT+3, and PER_WORKER connections to the kernel at
    `kernel` that talk, sit idle past the flow-table expiry, talk again and close."""
    for i in range(4):
        await stack.create_server(EchoProtocol, PORT + i)
    await asyncio.sleep(0.5)  # the parent starts the kernel's echo server meanwhile
    streams = []
    ports = []
    for _ in range(PER_WORKER):
        reader, writer = await stack.open_connection(kernel, KERNEL_PORT)
        local_port = writer.get_extra_info("connection").local_address[1]
        ports.append(local_port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        streams.append((reader, writer))
    await asyncio.sleep(IDLE)
    ok = 0
    for reader, writer in streams:
        writer.write(b"b")
        if await asyncio.wait_for(reader.readexactly(1), 5) == b"b":
            ok += 1
        writer.close()
    return {"worker": stack.worker, "ok": ok, "ports": ports}


KERNEL_CLIENT = textwrap.dedent("""
    import socket, sys, time
    addr, port, n, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    socks = []
    for i in range(n):
        s = socket.create_connection((addr, port + i % 4), timeout=5)
        s.sendall(b"x"); assert s.recv(1) == b"x"
        socks.append(s)
    time.sleep(idle)
    ok = 0
    for s in socks:
        s.sendall(b"y")
        ok += s.recv(1) == b"y"
        s.close()
    print(ok, " ".join(str(s) for s in ()))
""")


@pytest.mark.kernel
def test_two_workers_steer_both_directions_and_after_idle(_kernel_link_session: None, fam: Fam) -> None:
    async def main() -> tuple[list[Any], int, dict[str, int], list[dict[str, int]]]:
        async with Stack(workers=2, app=partial(_serve_and_connect, fam.kernel)) as front:
            pool = front.pool
            netns = pool.netns
            assert front.addr6 == "2001:2::2"  # the pool's link carries IPv6 too
            async with EchoServer(netns, fam.kernel, KERNEL_PORT, 1, max_seconds=60, impl="python"):
                client = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", netns, sys.executable, "-c", KERNEL_CLIENT, fam.stack, str(PORT),
                    str(FROM_KERNEL), str(IDLE), stdout=asyncio.subprocess.PIPE)
                results = await pool.ask("result", timeout=60)
                out, _ = await asyncio.wait_for(client.communicate(), 60)
                await asyncio.sleep(0.2)
                per_worker = await pool.ask("stats")
                total = await pool.counters()
                with pytest.raises(RuntimeError, match="2 worker processes: ask them"):
                    front.counters()  # the front has no host: it says where the counters are
        return results, int(out.split()[0]), total, per_worker

    results, kernel_ok, total, per_worker = asyncio.run(main())
    for r in results:
        assert isinstance(r, dict), r
        assert r["ok"] == PER_WORKER  # every stack-opened connection answered after the idle time
        # ... and each used local ports the steering function maps to its own worker
        assert all(owner(p, KERNEL_PORT, 2) == r["worker"] for p in r["ports"])
    assert kernel_ok == FROM_KERNEL
    assert total["TCPMisrouted"] == 0
    assert total["OutRsts"] == 0
    assert total["PassiveOpens"] == FROM_KERNEL
    assert total["ActiveOpens"] == 2 * PER_WORKER
    # The kernel's connections were spread over both workers, not all steered to one.
    assert all(stats["PassiveOpens"] > FROM_KERNEL // 5 for stats in per_worker)


async def _refuse(stack: Stack) -> None:
    raise OSError("port 7 is taken")


def _fault_seed(stack: Stack) -> int:
    assert stack.faults is not None
    return stack.faults.seed


@pytest.mark.kernel
def test_an_application_failing_at_start_fails_the_pool_and_leaves_nothing(_kernel_link_session: None) -> None:
    from stack.link.netns import live_namespaces
    from stack.runtime.workers import WorkerGone

    before = set(live_namespaces())

    async def main() -> None:
        async with Stack(workers=2, app=_refuse):
            pass

    with pytest.raises(WorkerGone, match="port 7 is taken"):
        asyncio.run(main())
    assert set(live_namespaces()) <= before


@pytest.mark.kernel
def test_fault_rules_run_in_every_worker_with_a_seed_of_its_own(_kernel_link_session: None) -> None:
    from stack.faults import FaultEngine
    from stack.runtime.workers import derive_seed

    async def main() -> list[int]:
        engine = FaultEngine("drop in p=1%", seed=42)
        async with Stack(workers=2, app=lambda stack: None, faults=engine) as front:
            return [await front.pool.call(i, _fault_seed) for i in range(2)]

    assert asyncio.run(main()) == [derive_seed(42, 0), derive_seed(42, 1)]


def _steer(prog_fd: int, packet: bytes) -> int:
    """What the loaded steering program returns for `packet`, run by the kernel (BPF_PROG_TEST_RUN,
    which wants an Ethernet header in front and hands the program the packet behind it)."""
    data = ctypes.create_string_buffer(b"\0" * 12 + (b"\x86\xdd" if packet[0] >> 4 == 6 else b"\x08\x00") + packet)
    out = ctypes.create_string_buffer(len(data.raw) + 256)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIIIQQII", attr, 0, prog_fd, 0, len(data.raw) - 1, len(out.raw), ctypes.addressof(data),
                     ctypes.addressof(out), 1, 0)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    nr = {"x86_64": 321, "aarch64": 280}[platform.machine()]
    if libc.syscall(nr, 10, attr, len(attr)) < 0:  # BPF_PROG_TEST_RUN
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(struct.unpack_from("<I", attr, 4)[0])


@pytest.mark.kernel
@pytest.mark.parametrize("version", [4, 6])
def test_the_steering_program_hashes_tcp_and_the_tcp_an_icmp_error_quotes(
        _kernel_link_session: None, version: int) -> None:
    ours, theirs = ("198.18.0.2", "198.18.0.1") if version == 4 else ("2001:2::2", "2001:2::1")
    sent = build_packet(Segment(ours, theirs, 40123, 80, 1000, 1, ACK, 512, payload=b"x" * 100))
    received = build_packet(Segment(theirs, ours, 80, 40123, 1, 1100, ACK, 512))
    if version == 4:
        error = IcmpMessage(4, theirs, ours, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu=1200, body=sent[:28])
        echo = IcmpMessage(4, theirs, ours, ICMP_ECHO_REQUEST, identifier=1, sequence=1, body=sent[:28])
    else:
        error = IcmpMessage(6, theirs, ours, ICMPV6_PACKET_TOO_BIG, mtu=1280, body=sent)
        echo = IcmpMessage(6, theirs, ours, ICMPV6_ECHO_REQUEST, identifier=1, sequence=1, body=sent)
    prog = load_steering_program()
    try:
        want = flow_hash(40123, 80)
        assert want != 0
        assert _steer(prog, received) == want
        assert _steer(prog, sent) == want  # symmetric
        assert _steer(prog, build_icmp(error)) == want  # to the worker whose segment it quotes
        assert _steer(prog, build_icmp(echo)) == 0  # an echo quotes nothing, whatever its data
        # Cut short after the source port (the kernel runs no program on less than an IP header):
        # the read past the end ends the program with 0.
        assert _steer(prog, received[:(20 if version == 4 else 40) + 2]) == 0
    finally:
        os.close(prog)


async def _listen(stack: Stack) -> None:
    await stack.create_server(EchoProtocol, PORT)


@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("ping") is None, reason="ping (iputils-ping) is not installed")
def test_a_pool_answers_ping_and_an_icmp_error_reaches_the_worker_it_is_about(
        _kernel_link_session: None, fam: Fam) -> None:
    async def main() -> list[dict[str, int]]:
        async with Stack(workers=2, app=_listen) as front:
            pool = front.pool
            netns = pool.netns
            ping = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", netns, "ping", "-c", "2", "-i", "0.2", "-W", "2", fam.stack,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await ping.communicate()
            assert ping.returncode == 0, out.decode()  # queue 0's worker answers: it has the addresses
            loop = asyncio.get_running_loop()
            sock = netns_socket(netns, fam.family)
            kport = next(p for p in range(41000, 60000) if owner(PORT, p, 2) == 1)
            sock.bind((fam.kernel, kport))
            await loop.sock_connect(sock, (fam.stack, PORT))
            await loop.sock_sendall(sock, b"a")
            assert await loop.sock_recv(sock, 1) == b"a"
            # An error about worker 1's connection, sent from the kernel's side as a router would.
            quoted = build_packet(Segment(fam.stack, fam.kernel, PORT, kport, 12345, 0, ACK, 1000))
            if fam.family == socket.AF_INET:
                msg = IcmpMessage(4, fam.kernel, fam.stack, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, body=quoted[:28])
            else:
                msg = IcmpMessage(6, fam.kernel, fam.stack, ICMPV6_DEST_UNREACH, 4, body=quoted)  # port unreachable
            raw = netns_socket(netns, fam.family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            raw.sendto(build_icmp(msg), (fam.stack, 0))
            raw.close()
            section = "Icmp" if fam.family == socket.AF_INET else "Icmp6"
            for _ in range(50):
                stats = await pool.ask("stats")
                if stats[1][section + "InDestUnreachs"]:
                    break
                await asyncio.sleep(0.05)
            sock.close()
            return [dict(s) for s in stats]

    stats = asyncio.run(main())
    section = "Icmp" if fam.family == socket.AF_INET else "Icmp6"
    assert stats[1][section + "InDestUnreachs"] == 1  # the owner got it ...
    assert stats[0][section + "InDestUnreachs"] == 0 and stats[0][section + "InErrors"] == 0  # ... not queue 0
    assert stats[1]["OutOfWindowIcmps"] == 1  # and checked its SEQ (RFC 5927 §5.1): far outside, ignored
    assert sum(s["TCPMisrouted"] for s in stats) == 0
