"""The applications `tcpstack serve` can put on a port, chosen to exercise both ways of closing.

* `echo`: sends back everything until the peer's FIN, then closes: the PEER closes first, so the
  stack goes CLOSE-WAIT -> LAST-ACK -> CLOSED and the peer keeps the TIME-WAIT.
* `reply-close`: reads one message (whatever the first read returns), sends it back and closes at
  once: the STACK closes first (active close) and ends in TIME-WAIT.
* `discard`: reads and drops everything until the peer's FIN, then closes (peer closes first).
* `abort`: reads one message, sends it back and closes with linger 0 (SO_LINGER {1, 0}): an RST
  instead of a FIN, so no TIME-WAIT on either side -- and no protection against old duplicates.
* `half-close`: reads everything until the peer's FIN (the peer has half-closed), only then sends
  it all back and closes: data flows toward a peer in FIN-WAIT-2 while the stack sits in CLOSE-WAIT.
* `hold`: reads until the peer's FIN and never closes: every connection stays in CLOSE-WAIT (the
  classic leak of a server that forgets close()), the peer's in FIN-WAIT-2. They pile up until
  the serve stops.
* `sink`: for bulk transfers: reads everything until the peer's FIN, then answers one line,
  `N bytes in T s`, and closes.

Each is an asyncio streams callback, so they run unchanged on the stack's `start_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

App = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

READ_SIZE = 64 * 1024
# Errors a peer can cause (reset, timeout): they end the connection, not the server.
_PEER_ERRORS = (ConnectionError, TimeoutError, OSError)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(*_PEER_ERRORS):
        await writer.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()  # back-pressure: stop reading while the peer does not read
    except _PEER_ERRORS:
        pass
    finally:
        await _close(writer)


async def reply_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await reader.read(READ_SIZE)
        if data:
            writer.write(data)
    except _PEER_ERRORS:
        pass
    finally:
        # close() sends our FIN after the reply: the active close this app exists for.
        await _close(writer)


async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(READ_SIZE):
            pass
    except _PEER_ERRORS:
        pass
    finally:
        await _close(writer)


async def abort(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await reader.read(READ_SIZE)
        if data:
            writer.write(data)
            await writer.drain()  # the reply leaves before the RST (it discards what is unsent)
    except _PEER_ERRORS:
        pass
    finally:
        # SO_LINGER {1, 0} (TcpTransport.set_linger0): close() resets instead of closing in order.
        writer.transport.set_linger0()  # type: ignore[attr-defined]
        await _close(writer)


async def half_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await reader.read()  # everything, up to the peer's FIN
        writer.write(data)  # sent while we are in CLOSE-WAIT, the peer in FIN-WAIT-2
        await writer.drain()
    except _PEER_ERRORS:
        pass
    finally:
        await _close(writer)


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*_PEER_ERRORS):
        while await reader.read(READ_SIZE):
            pass
    # Never close(): the connection stays in CLOSE-WAIT until the serve stops (which resets it).
    await asyncio.Event().wait()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    received = 0
    started = time.monotonic()
    try:
        while data := await reader.read(READ_SIZE):
            received += len(data)
        seconds = time.monotonic() - started
        writer.write(f"{received} bytes in {seconds:.3f} s\n".encode())
    except _PEER_ERRORS:
        pass
    finally:
        await _close(writer)


APPS: dict[str, App] = {"echo": echo, "reply-close": reply_close, "discard": discard, "abort": abort,
                        "half-close": half_close, "hold": hold, "sink": sink}
