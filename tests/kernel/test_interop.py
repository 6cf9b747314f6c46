"""The stack over TUN against real Linux sockets, each case in its own namespace, asserting both
sides: the stack's recorded transitions and the kernel socket's state from `ss -tanH`. Every case
runs over IPv4 and over IPv6 (the `fam` fixture)."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.states import State
from tests.kernel import peer
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import (
    Fam,
    echo_until_eof,
    kernel_connect,
    kernel_server,
    kernel_states,
    running_stack,
    send_and_read_back,
    wait_for,
    wait_kernel_state,
)

# Every test twice: in this process, and inside a worker of a pool of two (conftest.stack_workers).
pytestmark = [requires_kernel_link, pytest.mark.kernel, pytest.mark.usefixtures("stack_workers")]
S = State
PORT = 7


def run(coro):  # type: ignore[no-untyped-def]
    peer.run_test(coro, 60)


def test_1_kernel_client_closes_first(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, log):
            ns = stack.netns
            assert ns is not None
            release = asyncio.Event()

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                assert await reader.read() == b"hello"  # to EOF
                await release.wait()
                writer.close()

            await stack.start_server(app, PORT)
            _r, w, kport = await kernel_connect(ns, PORT, fam.stack)
            w.write(b"hello")
            w.close()  # the kernel closes first
            await wait_kernel_state(ns, kport, "FIN-WAIT-2")
            assert stack.state_of(PORT, (fam.kernel, kport)) is S.CLOSE_WAIT
            release.set()
            await wait_kernel_state(ns, kport, "TIME-WAIT")
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) is None)
            assert log.path(PORT, kport) == [S.LISTEN, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT,
                                             S.LAST_ACK, S.CLOSED]
            assert not stack.host.time_wait  # type: ignore[union-attr]

    run(main())


def test_2_stack_closes_first(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack(Config(msl=0.25, secret=b"t" * 16)) as (stack, log):
            ns = stack.netns
            assert ns is not None

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(b"bye")
                writer.close()  # the stack closes first

            await stack.start_server(app, PORT)
            r, w, kport = await kernel_connect(ns, PORT, fam.stack)
            assert await r.read() == b"bye"
            await wait_kernel_state(ns, kport, "CLOSE-WAIT")
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) is S.FIN_WAIT_2)
            w.close()
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) is S.TIME_WAIT)
            assert kernel_states(ns) == [] or all(st != "ESTAB" for st, _, _ in kernel_states(ns))
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) is None, timeout=3)
            assert log.path(PORT, kport) == [S.LISTEN, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1,
                                             S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED]
            assert kernel_states(ns) == []  # the kernel went LAST-ACK -> CLOSED

    run(main())


@pytest.mark.parametrize("first", ["stack", "kernel"])
def test_3_stack_as_client_of_kernel_server(first: str, fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, log):
            ns = stack.netns
            assert ns is not None
            done = asyncio.Event()

            async def kernel_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                data = await reader.readexactly(4)
                writer.write(data.upper())
                await writer.drain()
                if first == "kernel":
                    writer.close()
                else:
                    await reader.read()  # wait for the stack's FIN
                    writer.close()
                done.set()

            server = await kernel_server(ns, 8080, kernel_app, fam.kernel)
            r, w = await stack.open_connection(fam.kernel, 8080)
            lport = w.get_extra_info("sockname")[1]
            w.write(b"ping")
            assert await r.readexactly(4) == b"PING"
            if first == "stack":
                w.close()
                await done.wait()
                await wait_for(lambda: stack.state_of(lport, (fam.kernel, 8080)) in (S.TIME_WAIT, None))
                expected = [S.CLOSED, S.SYN_SENT, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT]
            else:
                assert await r.read() == b""
                w.close()
                await wait_for(lambda: stack.state_of(lport, (fam.kernel, 8080)) is None)
                expected = [S.CLOSED, S.SYN_SENT, S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED]
                states = [st for st, local, _ in kernel_states(ns) if local.endswith(":8080") and st != "LISTEN"]
                assert states == ["TIME-WAIT"]
            assert log.path(lport, 8080)[: len(expected)] == expected
            server.close()

    run(main())


def test_4_simultaneous_close(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, log):
            ns = stack.netns
            assert ns is not None
            conns: list[asyncio.StreamWriter] = []

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                conns.append(writer)

            await stack.start_server(app, PORT)
            _r, w, kport = await kernel_connect(ns, PORT, fam.stack)
            await wait_for(lambda: bool(conns))
            stack.pause_input()  # the kernel's FIN waits in the TUN queue ...
            w.close()
            await asyncio.sleep(0.05)
            conns[0].close()  # ... while ours crosses it
            await asyncio.sleep(0.05)
            stack.resume_input()
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) in (S.TIME_WAIT, None))
            assert log.path(PORT, kport)[2:] == [S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSING, S.TIME_WAIT]
            await wait_kernel_state(ns, kport, "TIME-WAIT")  # the kernel went through CLOSING too

    run(main())


def test_5_half_close_both_ways(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            result: dict[str, bytes] = {}

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                # The kernel half-closed: keep sending toward it after its FIN.
                result["request"] = await reader.read()
                for i in range(50):
                    writer.write(b"%04d" % i * 256)
                    await writer.drain()
                writer.close()

            await stack.start_server(app, PORT)
            r, w, _kport = await kernel_connect(ns, PORT, fam.stack)
            w.write(b"request")
            w.write_eof()
            got = await r.read()
            assert result["request"] == b"request"
            assert got == b"".join(b"%04d" % i * 256 for i in range(50))
            w.close()

            # The other way: the stack half-closes, the kernel keeps sending to it.
            async def kernel_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                assert await reader.read() == b"done sending"
                writer.write(b"k" * 100_000)
                await writer.drain()
                writer.close()

            server = await kernel_server(ns, 8081, kernel_app, fam.kernel)
            sr, sw = await stack.open_connection(fam.kernel, 8081)
            sw.write(b"done sending")
            sw.write_eof()
            assert await sr.read() == b"k" * 100_000
            sw.close()
            server.close()

    run(main())


def test_6a_close_with_unread_data_resets_the_kernel(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            writers: list[asyncio.StreamWriter] = []

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.transport.pause_reading()  # data stays unread in the stack
                writers.append(writer)

            await stack.start_server(app, PORT)
            r, w, _kport = await kernel_connect(ns, PORT, fam.stack)
            await wait_for(lambda: bool(writers))
            w.write(b"never read")
            await w.drain()
            await asyncio.sleep(0.05)
            writers[0].close()
            with pytest.raises(ConnectionResetError):
                await r.read()
            assert stack.host.counters["TCPAbortOnClose"] == 1  # type: ignore[union-attr]

    run(main())


def test_6b_abort_and_kernel_linger_zero(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            writers: list[asyncio.StreamWriter] = []
            lost: list[BaseException | None] = []

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writers.append(writer)
                try:
                    await reader.read()
                except ConnectionResetError as exc:
                    lost.append(exc)

            await stack.start_server(app, PORT)
            # abort() -> RST -> the kernel reads ECONNRESET
            r, _w, _kport = await kernel_connect(ns, PORT, fam.stack)
            await wait_for(lambda: len(writers) == 1)
            writers[0].transport.abort()
            with pytest.raises(ConnectionResetError):
                await r.read()
            # The kernel closes with SO_LINGER {1, 0} -> RST -> the stack sees a reset.
            _r2, w2, kport2 = await kernel_connect(ns, PORT, fam.stack, linger0=True)
            await wait_for(lambda: len(writers) == 2)
            w2.close()
            await wait_for(lambda: bool(lost))
            assert isinstance(lost[0], ConnectionResetError)
            assert stack.state_of(PORT, (fam.kernel, kport2)) is None

    run(main())


def test_7_data_after_stack_fully_closed_gets_rst(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.close()

            await stack.start_server(app, PORT)
            loop = asyncio.get_running_loop()
            sock = peer.kernel_socket(ns, PORT, fam.stack)
            await loop.sock_connect(sock, (fam.stack, PORT))
            kport = sock.getsockname()[1]
            assert await loop.sock_recv(sock, 100) == b""  # our FIN: the kernel is in CLOSE-WAIT
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) is S.FIN_WAIT_2)
            await loop.sock_sendall(sock, b"too late")
            await wait_for(lambda: stack.state_of(PORT, (fam.kernel, kport)) is None)
            assert stack.host.counters["TCPAbortOnData"] == 1  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
            with pytest.raises(OSError) as failure:
                sock.send(b"again")
            assert failure.value.errno in (errno.EPIPE, errno.ECONNRESET)
            sock.close()

    run(main())


def test_8_isn_near_wrap_one_megabyte_each_way(fam: Fam) -> None:
    async def main() -> None:
        cfg = Config(msl=0.25, isn=lambda ft, now: 2**32 - 50, secret=b"t" * 16)
        async with running_stack(cfg) as (stack, _log):
            ns = stack.netns
            assert ns is not None
            await stack.start_server(echo_until_eof, PORT)
            r, w, _kport = await kernel_connect(ns, PORT, fam.stack)
            blob = bytes((i * 31) & 0xFF for i in range(1 << 20))
            got = await send_and_read_back(r, w, blob)
            assert got == blob
            w.close()
            await wait_for(lambda: not stack.host.connections)  # type: ignore[union-attr]

    run(main())


def test_9_many_echo_connections(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack(Config(msl=30.0, secret=b"t" * 16)) as (stack, _log):
            ns = stack.netns
            assert ns is not None
            await stack.start_server(echo_until_eof, PORT)

            async def one(i: int) -> None:
                r, w, _ = await kernel_connect(ns, PORT, fam.stack)
                payload = b"%06d:" % i + bytes([i & 0xFF]) * (i % 3000)
                w.write(payload)
                w.write_eof()  # the kernel closes first
                assert await r.read() == payload
                w.close()
                await w.wait_closed()

            for i in range(1000):
                await one(i)
            sem = asyncio.Semaphore(200)

            async def limited(i: int) -> None:
                async with sem:
                    await one(i)

            await asyncio.gather(*(limited(1000 + i) for i in range(200)))
            host = stack.host
            assert host is not None
            await wait_for(lambda: not host.connections, timeout=10)
            assert not host.time_wait  # the stack closed second: no TIME-WAIT here
            states = kernel_states(ns)
            assert len(states) == 1200 and all(st == "TIME-WAIT" for st, _, _ in states)

    run(main())


def test_10_syn_to_closed_port_is_refused(fam: Fam) -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            with pytest.raises(ConnectionRefusedError):
                await kernel_connect(ns, 9999, fam.stack)
            assert stack.host.counters["TCPRcvNoListener"] == 1  # type: ignore[union-attr]
            # And the stack's own connect to a closed kernel port.
            with pytest.raises(ConnectionRefusedError):
                await stack.open_connection(fam.kernel, 9999)

    run(main())


def test_namespace_is_removed() -> None:
    async def main() -> str:
        async with Stack() as stack:
            assert stack.netns is not None
            return stack.netns

    name = asyncio.run(main())  # a plain Stack: what it made, it removes
    import subprocess

    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert socket is not None
