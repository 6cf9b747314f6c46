"""TIME-WAIT at scale against real Linux sockets: the cap, tw_reuse and linger-0.

* the cap: with `Config(max_time_wait=50)`, 200 connections the stack closes first leave exactly
  50 TIME-WAIT records and count 150 TCPTimeWaitOverflow;
* tw_reuse: the stack as client reconnects from the same local port >= 1 s after the first
  connection entered TIME-WAIT -- accepted with `tw_reuse=True` (TWRecycled), refused or skipped
  without it (and refused with it while the record is younger than 1 s);
* linger-0: `set_linger0()` then close sends a RST and leaves no TIME-WAIT on either side.

Each case runs in its own namespace; the file takes a few seconds (one 1 s wait for tw_reuse).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stack.link.nsenter import netns_socket
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.host import PortInUse
from stack.tcp.states import State
from stack.wire.segment import FIN, RST, Segment
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import Fam, kernel_server, kernel_states, running_stack, wait_for

pytestmark = [requires_kernel_link, pytest.mark.kernel]
SECRET = b"s" * 16
MSL = 30.0  # 2MSL = 60 s: nothing may expire during a test, so every count is exact


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


class ReplyClose(asyncio.Protocol):
    """Replies to one message and closes first; with `linger0`, closes with a RST."""

    linger0 = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        if self.linger0:
            self.transport.set_linger0()
        self.transport.close()


class ReplyAbort(ReplyClose):
    linger0 = True


async def kernel_exchange(netns: str, port: int, local_port: int, fam: Fam) -> bytes:
    """A kernel client from `local_port`: send, read to EOF (the stack closes first), close."""
    loop = asyncio.get_running_loop()
    sock = netns_socket(netns, fam.family)
    try:
        # A fixed local port per connection: the kernel never reuses one of its ports toward us
        # while the stack still holds that 4-tuple in TIME-WAIT (which would reopen it, RFC 6191).
        sock.bind((fam.kernel, local_port))
        await loop.sock_connect(sock, (fam.stack, port))
        await loop.sock_sendall(sock, b"ping")
        data = b""
        while chunk := await loop.sock_recv(sock, 4096):
            data += chunk
        return data
    finally:
        sock.close()


def test_max_time_wait_caps_the_table(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack(Config(msl=MSL, max_time_wait=50, secret=SECRET)) as (stack, _log):
            assert stack.netns is not None and stack.host is not None
            await stack.create_server(ReplyClose, 8)
            for batch in range(10):  # 200 connections, 20 at a time
                replies = await asyncio.gather(*(kernel_exchange(stack.netns, 8, 41000 + batch * 20 + i, fam)
                                                 for i in range(20)))
                assert replies == [b"ping"] * 20
            host = stack.host
            await wait_for(lambda: not host.connections)
            assert len(host.time_wait) == 50
            assert host.counters["TCPTimeWaitOverflow"] == 150
            assert host.counters["TW"] == 50
            assert host.counters["TCPTimeWaitReopen"] == 0

    run(main())


async def _echo_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(4096):
        writer.write(data)
    writer.close()


async def _stack_exchange(stack: Stack, port: int, fam: Fam, local_port: int | None = None) -> int:
    """The stack as client: connect, echo, close first; returns its local port once in TIME-WAIT."""
    reader, writer = await stack.open_connection(fam.kernel, port, local_port=local_port)
    lport = writer.get_extra_info("sockname")[1]
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    writer.close()  # the stack closes first: its 4-tuple goes to TIME-WAIT
    await wait_for(lambda: stack.state_of(lport, (fam.kernel, port)) is State.TIME_WAIT)
    return int(lport)


def test_tw_reuse_takes_a_time_wait_port_after_one_second(fam: Fam) -> None:
    async def main() -> None:
        cfg = Config(msl=MSL, tw_reuse=True, timestamps=True, secret=SECRET)
        async with running_stack(cfg) as (stack, _log):
            assert stack.netns is not None and stack.host is not None
            server = await kernel_server(stack.netns, 9, _echo_until_eof, fam.kernel)
            try:
                lport = await _stack_exchange(stack, 9, fam, 45000)
                # Younger than 1 s: even tw_reuse refuses the 4-tuple.
                with pytest.raises(PortInUse):
                    await stack.open_connection(fam.kernel, 9, local_port=lport)
                await asyncio.sleep(1.05)
                await _stack_exchange(stack, 9, fam, lport)  # the same 4-tuple again
                assert stack.host.counters["TWRecycled"] == 1
                assert len(stack.host.time_wait) == 1  # the second connection's own TIME-WAIT
            finally:
                server.close()

    run(main())


def test_without_tw_reuse_the_port_is_refused_or_skipped(fam: Fam) -> None:
    async def main() -> None:
        cfg = Config(msl=MSL, tw_reuse=False, ephemeral_ports=(45100, 45101), secret=SECRET)
        async with running_stack(cfg) as (stack, _log):
            assert stack.netns is not None and stack.host is not None
            server = await kernel_server(stack.netns, 9, _echo_until_eof, fam.kernel)
            try:
                lport = await _stack_exchange(stack, 9, fam, 45100)
                await asyncio.sleep(1.05)  # older than tw_reuse's 1 s: still refused without it
                with pytest.raises(PortInUse):  # asked for explicitly: refused
                    await stack.open_connection(fam.kernel, 9, local_port=lport)
                assert await _stack_exchange(stack, 9, fam) == 45101  # chosen by the stack: skipped
                with pytest.raises(PortInUse):  # both ports in TIME-WAIT: EADDRNOTAVAIL
                    await stack.open_connection(fam.kernel, 9)
                assert stack.host.counters["TWRecycled"] == 0
            finally:
                server.close()

    run(main())


def test_linger0_close_sends_rst_and_leaves_no_time_wait(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack(Config(msl=MSL, secret=SECRET)) as (stack, _log):
            assert stack.netns is not None and stack.host is not None
            sent: list[Segment] = []
            stack.observers.append(lambda kind, _t, *rest: sent.append(rest[0]) if kind == "out" else None)
            await stack.create_server(ReplyAbort, 8)
            loop = asyncio.get_running_loop()
            sock = netns_socket(stack.netns, fam.family)
            try:
                await loop.sock_connect(sock, (fam.stack, 8))
                kport = sock.getsockname()[1]
                await loop.sock_sendall(sock, b"ping")
                await wait_for(lambda: any(seg.flags & RST for seg in sent))
                # The reply came before the RST (the data was already sent when close() ran);
                # reading on reports the reset, not an orderly EOF.
                assert await loop.sock_recv(sock, 4096) == b"ping"
                with pytest.raises(ConnectionResetError):
                    await loop.sock_recv(sock, 4096)
            finally:
                sock.close()
            host = stack.host
            assert not host.connections
            assert len(host.time_wait) == 0 and host.counters["TW"] == 0
            assert host.counters["TCPAbortOnLinger"] == 1
            assert not any(seg.flags & FIN for seg in sent), "a FIN was sent: that was an orderly close"
            # Had the kernel not taken the RST, its close() above would have sent a FIN and left a
            # FIN-WAIT socket; it leaves nothing, so neither side holds a TIME-WAIT.
            kernel = [row for row in kernel_states(stack.netns) if row[1].endswith(f":{kport}")]
            assert kernel == [], kernel

    run(main())
