"""The asyncio runtime between two stacks on an in-loop pipe: real packets through the wire layer,
real timers, asyncio streams and protocols on top — no kernel needed."""

from __future__ import annotations

import asyncio

import pytest

from stack.link.pipe import pipe_pair
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.states import State


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 30))


async def two_stacks(cfg: Config | None = None):  # type: ignore[no-untyped-def]
    a_end, b_end = pipe_pair()
    cfg = cfg or Config(msl=0.2, secret=b"r" * 16)
    return Stack(a_end, addr="198.18.0.1", config=cfg), Stack(b_end, addr="198.18.0.2", config=cfg)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_streams_echo_a_megabyte_and_close_through_time_wait() -> None:
    async def main() -> None:
        a, b = await two_stacks()
        async with a, b:
            await b.start_server(echo, 7)
            r, w = await a.open_connection("198.18.0.2", 7)
            assert w.get_extra_info("peername") == ("198.18.0.2", 7)
            assert w.get_extra_info("tcp_state") == "ESTABLISHED"
            blob = bytes(range(256)) * 4096
            w.write(blob)
            await w.drain()
            w.write_eof()
            assert await r.read() == blob
            w.close()
            await w.wait_closed()
            assert a.host is not None and b.host is not None
            assert len(a.host.time_wait) == 1  # the client closed first
            await asyncio.sleep(0.5)  # 2MSL = 0.4 s
            assert not a.host.time_wait and not a.host.connections and not b.host.connections
            assert a.host.pending_timers() == 0 and b.host.pending_timers() == 0

    run(main())


def test_protocol_api_and_flow_control() -> None:
    class Collect(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = bytearray()
            self.eof = asyncio.Event()
            self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.data += data

        def eof_received(self) -> bool:
            self.eof.set()
            return True  # keep the transport open: half-close

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.set_result(exc)

    async def main() -> None:
        a, b = await two_stacks(Config(msl=0.2, recv_buffer=64 * 1024, secret=b"r" * 16))
        async with a, b:
            server_protos: list[Collect] = []

            def factory() -> Collect:
                p = Collect()
                server_protos.append(p)
                return p

            await b.create_server(factory, 9)
            transport, proto = await a.create_connection(Collect, "198.18.0.2", 9)
            await asyncio.sleep(0.01)
            server = server_protos[0]
            server.transport.pause_reading()  # type: ignore[attr-defined]
            transport.write(b"q" * 300_000)  # more than the 64 KiB receive window
            await asyncio.sleep(0.2)
            assert len(server.data) == 0
            sender = transport.get_extra_info("connection")
            receiver = server.transport.get_extra_info("connection")  # type: ignore[attr-defined]
            # Unread data fills the receiver's window and no more: the rest waits at the sender.
            assert 0 < receiver.recv_queue_len <= 64 * 1024
            assert sender.info().snd_wnd < 1460 and sender.send_queue_len >= 300_000 - 64 * 1024
            server.transport.resume_reading()  # type: ignore[attr-defined]
            transport.write_eof()
            await asyncio.wait_for(server.eof.wait(), 5)
            assert bytes(server.data) == b"q" * 300_000
            server.transport.write(b"reply after EOF")  # type: ignore[attr-defined]
            server.transport.close()  # type: ignore[attr-defined]
            await asyncio.wait_for(proto.eof.wait(), 5)
            assert bytes(proto.data) == b"reply after EOF"
            transport.close()
            assert await asyncio.wait_for(proto.lost, 5) is None

    run(main())


def test_abort_resets_peer() -> None:
    async def main() -> None:
        a, b = await two_stacks()
        async with a, b:
            errors: list[BaseException] = []

            async def reader_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await reader.read()
                except ConnectionResetError as exc:
                    errors.append(exc)

            await b.start_server(reader_app, 7)
            _r, w = await a.open_connection("198.18.0.2", 7)
            await asyncio.sleep(0.01)
            w.transport.abort()
            await asyncio.sleep(0.05)
            assert errors and isinstance(errors[0], ConnectionResetError)
            assert a.host is not None and not a.host.time_wait

    run(main())


def test_refused_and_state_of() -> None:
    async def main() -> None:
        a, b = await two_stacks()
        async with a, b:
            with pytest.raises(ConnectionRefusedError):
                await a.open_connection("198.18.0.2", 4444)
            await b.start_server(echo, 7)
            _r, w = await a.open_connection("198.18.0.2", 7)
            port = w.get_extra_info("sockname")[1]
            await asyncio.sleep(0.01)  # the handshake's last ACK reaches b
            assert b.state_of(7, ("198.18.0.1", port)) is State.ESTABLISHED
            w.close()

    run(main())


def test_connect_without_awaiting() -> None:
    """Stack.connect: connection_made once ESTABLISHED, connection_lost(exc) on failure; no future."""

    class Ping(asyncio.Protocol):
        def __init__(self) -> None:
            self.made = asyncio.Event()
            self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
            self.data = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(b"ping")  # type: ignore[attr-defined]
            transport.write_eof()  # type: ignore[attr-defined]
            self.made.set()

        def data_received(self, data: bytes) -> None:
            self.data += data

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.set_result(exc)

    async def main() -> None:
        a, b = await two_stacks()
        async with a, b:
            await b.start_server(echo, 7)
            good = Ping()
            a.connect(good, "198.18.0.2", 7)
            await asyncio.wait_for(good.made.wait(), 5)
            refused = Ping()
            a.connect(refused, "198.18.0.2", 4444)
            assert isinstance(await asyncio.wait_for(refused.lost, 5), ConnectionRefusedError)
            assert not refused.made.is_set()
            await asyncio.sleep(0.1)
            assert good.data == b"ping"

    run(main())
