"""Two packet links joined back to back inside one event loop, for stacks that talk to each other
without a kernel (experiments, and the runtime's own tests). Packets are real IPv4 bytes, so the
wire layer is exercised exactly as over TUN."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable


class PipeEnd:
    def __init__(self) -> None:
        self.peer: PipeEnd | None = None
        self._inbox: deque[bytes] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_readable: Callable[[], None] | None = None
        self._scheduled = False
        self.mtu = 65535

    def attach(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[[], None]) -> None:
        self._loop = loop
        self._on_readable = on_readable
        if self._inbox:
            self._wake()

    def detach(self) -> None:
        self._on_readable = None

    def read_batch(self, max_packets: int = 256) -> list[bytes]:
        inbox = self._inbox
        n = min(max_packets, len(inbox))
        return [inbox.popleft() for _ in range(n)]

    def write_batch(self, packets: Iterable[bytes]) -> int:
        peer = self.peer
        if peer is None:
            return 0
        count = 0
        for packet in packets:
            peer._inbox.append(packet)
            count += 1
        if count:
            peer._wake()
        return count

    def _wake(self) -> None:
        if self._scheduled or self._loop is None or self._on_readable is None:
            return
        self._scheduled = True
        self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        if self._on_readable is not None and self._inbox:
            self._on_readable()
            if self._inbox:
                self._wake()

    def close(self) -> None:
        self.detach()


def pipe_pair() -> tuple[PipeEnd, PipeEnd]:
    a, b = PipeEnd(), PipeEnd()
    a.peer, b.peer = b, a
    return a, b
