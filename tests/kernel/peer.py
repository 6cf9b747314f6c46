"""The kernel side of interop tests: its sockets (opened in the namespace from this process), its
view of them (`ss`), and the stack's transitions recorded per connection."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from stack.link.nsenter import netns_socket
from stack.link.steering import owner
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.events import StateChanged
from stack.tcp.states import State

STACK_ADDR = "198.18.0.2"
KERNEL_ADDR = "198.18.0.1"
STACK_ADDR6 = "2001:2::2"
KERNEL_ADDR6 = "2001:2::1"


@dataclass(frozen=True)
class Fam:
    """One address family of the link: the stack's address, the kernel side's, the socket family."""

    name: str
    stack: str
    kernel: str
    family: int


FAMILIES = (Fam("ipv4", STACK_ADDR, KERNEL_ADDR, socket.AF_INET),
            Fam("ipv6", STACK_ADDR6, KERNEL_ADDR6, socket.AF_INET6))


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


class Transitions:
    """Every state change of the stack, by (local port, remote port)."""

    def __init__(self) -> None:
        self.by_ports: dict[tuple[int, int], list[tuple[State, State]]] = defaultdict(list)

    def __call__(self, kind: str, when: float, *rest: object) -> None:
        if kind == "state":
            change = rest[0]
            assert isinstance(change, StateChanged)
            _, lport, _, rport = change.four_tuple
            self.by_ports[(lport, rport)].append((change.old, change.new))

    def path(self, local_port: int, remote_port: int) -> list[State]:
        """The states a connection went through, starting from its first recorded one."""
        changes = self.by_ports[(local_port, remote_port)]
        return [changes[0][0], *(new for _, new in changes)] if changes else []


# Set inside worker TARGET of a pool while a test runs there (run_test with workers=2): the queue
# link of that worker, its index and the worker count.
_IN_WORKER: tuple[Any, int, int] | None = None
_MISROUTED = [0]  # what the test's stacks in the worker counted
WORKERS = [1]  # the interop suite sets 2 to run each test inside a worker of a 2-worker pool
TARGET = 1  # the worker the test runs in (not 0: queue 0 is also where anything not TCP goes)


@asynccontextmanager
async def running_stack(config: Config | None = None, **kw: object) -> AsyncIterator[tuple[Stack, Transitions]]:
    log = Transitions()
    link = None
    if _IN_WORKER is not None:
        link, index, count = _IN_WORKER
    stack = Stack(link, config=config or Config(msl=0.5, secret=b"t" * 16), **kw)  # type: ignore[arg-type]
    stack.observers.append(log)
    async with stack:
        if _IN_WORKER is not None:
            assert stack.host is not None
            stack.host.owns_flow = lambda lport, rport: owner(lport, rport, count) == index
        try:
            yield stack, log
        finally:
            if stack.host is not None:
                _MISROUTED[0] += stack.host.counters["TCPMisrouted"]


def run_test(coro: Coroutine[Any, Any, None], timeout: float = 60) -> None:
    """Run a test's coroutine: in this process, or (WORKERS = 2) inside worker TARGET of a pool of
    two on a multi-queue TUN device, where `running_stack` makes its stack on that worker's queue
    and `kernel_connect` picks kernel ports the steering maps to it. Every worker must count no
    misrouted segment."""
    if WORKERS[0] == 1:
        asyncio.run(asyncio.wait_for(coro, timeout))
        return
    from stack.runtime.workers import Workers

    async def app(stack: Stack) -> int:
        if stack.worker != TARGET:
            return 0
        global _IN_WORKER
        stack.pause_input()  # the test's own stack reads this queue now
        _IN_WORKER = (stack.link, stack.worker, stack.workers)
        await asyncio.wait_for(coro, timeout)
        return _MISROUTED[0]

    async def main() -> None:
        async with Workers(WORKERS[0], app) as pool:
            results = await pool.ask("result", timeout + 10)
            counters = await pool.counters()
        for result in results:
            if not isinstance(result, int):
                raise AssertionError(f"in the worker: {result}")
        assert sum(results) + counters["TCPMisrouted"] == 0

    try:
        asyncio.run(main())
    finally:
        coro.close()  # this process's copy never ran: the worker's did


def kernel_states(netns: str) -> list[tuple[str, str, str]]:
    """(state, local, peer) of every TCP socket of the kernel in the namespace, from `ss -tanH`."""
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-tanH"], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5:
            rows.append((parts[0], parts[3], parts[4]))
    return rows


def kernel_state_of(netns: str, kernel_port: int) -> str | None:
    for state, local, _peer in kernel_states(netns):
        if local.endswith(f":{kernel_port}"):
            return state
    return None


async def wait_kernel_state(netns: str, kernel_port: int, wanted: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    seen = None
    while loop.time() < end:
        seen = kernel_state_of(netns, kernel_port)
        if seen == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"kernel socket :{kernel_port} is {seen}, not {wanted}")


async def kernel_connect(netns: str, port: int, addr: str = STACK_ADDR,
                         linger0: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A kernel client connected to the stack; returns the streams and the kernel's local port."""
    sock = netns_socket(netns, family_of(addr))
    if _IN_WORKER is not None:
        _bind_owned(sock, port)
    if linger0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (addr, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return reader, writer, sock.getsockname()[1]


def _bind_owned(sock: socket.socket, port: int) -> None:
    """Bind a kernel client to a source port whose flow the steering sends to this worker."""
    assert _IN_WORKER is not None
    _link, index, count = _IN_WORKER
    local = KERNEL_ADDR6 if sock.family == socket.AF_INET6 else KERNEL_ADDR
    for kport in random.sample(range(20000, 60000), 40000):
        if owner(kport, port, count) != index:
            continue
        try:
            sock.bind((local, kport))
            return
        except OSError:
            continue
    raise AssertionError("no free kernel port for this worker")


def kernel_socket(netns: str, port: int, addr: str = STACK_ADDR) -> socket.socket:
    """A kernel socket in `netns` about to connect to the stack's `port` at `addr` (bound to a port
    of the test's worker when the test runs in one)."""
    sock = netns_socket(netns, family_of(addr))
    if _IN_WORKER is not None:
        _bind_owned(sock, port)
    return sock


async def kernel_server(netns: str, port: int, handler, addr: str = KERNEL_ADDR):  # type: ignore[no-untyped-def]
    sock = netns_socket(netns, family_of(addr))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(512)
    return await asyncio.start_server(handler, sock=sock)


async def echo_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int = 65536) -> None:
    """The stack's echo server of these tests: echo what comes, close after the peer's FIN."""
    while data := await reader.read(chunk):
        writer.write(data)
        await writer.drain()
    writer.close()


async def send_and_read_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, blob: bytes) -> bytes:
    """Write `blob` and the kernel's FIN while reading the echo to its end, at the same time (one
    after the other, both sides' buffers would fill and stall); what came back."""

    async def send() -> None:
        writer.write(blob)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = await reader.read()
    await sender
    return got


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
