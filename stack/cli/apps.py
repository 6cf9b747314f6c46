"""The applications `tcpstack serve` can put on a port, chosen to exercise both ways of closing.

* `echo`: sends back everything until the peer's FIN, then closes: the PEER closes first, so the
  stack goes CLOSE-WAIT -> LAST-ACK -> CLOSED and the peer keeps the TIME-WAIT.
* `reply-close`: reads one message (whatever the first read returns), sends it back and closes at
  once: the STACK closes first (active close) and ends in TIME-WAIT.
* `discard`: reads and drops everything until the peer's FIN, then closes (peer closes first).

Each is an asyncio streams callback, so they run unchanged on the stack's `start_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
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


APPS: dict[str, App] = {"echo": echo, "reply-close": reply_close, "discard": discard}
