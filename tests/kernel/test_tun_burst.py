"""A burst at the TUN device (issue 19): many kernel connections to the stack close at once.

The kernel sends all their FINs in one go into the device's queue toward the stack. With the
kernel's default queue for TUN (500 packets) most are dropped and wait for the kernel's
retransmission backoff; the link's default queue (`DEFAULT_TXQUEUELEN`) holds the burst, so
nothing is dropped at the device and every FIN reaches the stack at once.
(benchmarks/bench_tun_burst.py measures 20,000 connections, before and after.)
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from stack.link.nsenter import netns_socket
from stack.link.tun import DEFAULT_TXQUEUELEN, TunLink
from stack.runtime import Stack
from stack.tcp.config import Config
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import STACK_ADDR

pytestmark = [requires_kernel_link, pytest.mark.kernel]
CONNECTIONS = 3000
PORT = 7100


def tun_tx(link: TunLink) -> tuple[int, int]:
    stats = json.loads(link.namespace.ip("-s", "-j", "link", "show", "dev", str(link.name)))[0]["stats64"]["tx"]
    return stats["packets"], stats["dropped"]


class Holder(asyncio.Protocol):
    eofs = 0

    def eof_received(self) -> bool:
        Holder.eofs += 1
        return False  # close our side too


async def burst(link: TunLink) -> tuple[int, float | None]:
    """(packets dropped at the device, seconds until the stack saw every FIN or None)."""
    Holder.eofs = 0
    loop = asyncio.get_running_loop()
    async with Stack(link=link, config=Config(secret=b"t" * 16, msl=0.5)) as stack:
        await stack.create_server(Holder, PORT)
        socks = []
        try:
            for first in range(0, CONNECTIONS, 200):
                batch = [netns_socket(link.netns) for _ in range(first, min(first + 200, CONNECTIONS))]
                socks += batch
                await asyncio.gather(*(loop.sock_connect(s, (STACK_ADDR, PORT)) for s in batch))
            await asyncio.sleep(0.2)
            _, dropped_before = tun_tx(link)
            t0 = time.monotonic()
        finally:
            for s in socks:  # all at once, without letting the stack read in between
                s.close()
        seen = None
        while time.monotonic() - t0 < 20:
            if Holder.eofs >= CONNECTIONS:
                seen = time.monotonic() - t0
                break
            await asyncio.sleep(0.01)
        _, dropped_after = tun_tx(link)
    return dropped_after - dropped_before, seen


def test_the_default_queue_is_the_links_and_absorbs_a_burst_of_fins() -> None:
    with TunLink(offload=True) as link:
        assert link.name is not None
        shown = link.run_in_netns(["ip", "-o", "link", "show", "dev", link.name], capture_output=True, text=True,
                                  check=True).stdout
        assert f" qlen {DEFAULT_TXQUEUELEN}" in shown
        dropped, seen = asyncio.run(asyncio.wait_for(burst(link), 90))
    assert dropped == 0
    assert seen is not None and seen < 5.0, seen


def test_the_kernels_default_queue_drops_such_a_burst() -> None:
    """The contrast: with 500 packets of queue the same burst loses FINs at the device."""
    with TunLink(offload=True, txqueuelen=500) as link:
        dropped, _ = asyncio.run(asyncio.wait_for(burst(link), 90))
    assert dropped > 0
