"""What `Stack.create_server` / `Stack.start_server` return: the shape of asyncio.Server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from stack.tcp.host import Listener

if TYPE_CHECKING:
    from stack.runtime.stack import Stack


class Server:
    """What `create_server`/`start_server` return (the shape of asyncio.Server)."""

    def __init__(self, stack: Stack, listener: Listener, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._stack = stack
        self.listener = listener
        self.factory = factory
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        return self.listener.port

    def close(self) -> None:
        if not self._closed.is_set():
            self.listener.close(self._stack.now())
            self._stack.servers.pop(self.listener.port, None)
            self._stack.kick()
            self._closed.set()

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
