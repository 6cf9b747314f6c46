"""Two worker processes on one multi-queue TUN device (stack.runtime.workers): the kernel steers every
flow to the worker that owns it, for both directions of opening, across many connections, and after
the connections sat idle longer than tun's own flow table keeps a flow (3 s), over IPv4 and IPv6
(the steering program reads the ports behind either header).
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from functools import partial
from typing import Any

import pytest

from stack.bench.loadgen import EchoServer
from stack.link.steering import owner
from stack.runtime.stack import Stack
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import Fam

pytestmark = [requires_kernel_link]

PORT = 7000  # the stack's echo servers: PORT..PORT+3
KERNEL_PORT = 9000  # the kernel's echo server
PER_WORKER = 60  # connections each worker opens toward the kernel
FROM_KERNEL = 120  # connections the kernel opens toward the stack
IDLE = 3.5  # longer than TUN_FLOW_EXPIRE (3 s)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False


async def _serve_and_connect(kernel: str, stack: Stack) -> dict[str, Any]:
    """In every worker: echo servers on PORT..PORT+3, and PER_WORKER connections to the kernel at
    `kernel` that talk, sit idle past the flow-table expiry, talk again and close."""
    for i in range(4):
        await stack.create_server(Echo, PORT + i)
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

