"""TUN offloads (IFF_VNET_HDR + TSO/checksum offload): the kernel hands the stack 64 KB GSO
segments at MTU 1500 and splits the stack's large segments itself (TSO4 and TSO6); bytes arrive intact both ways,
with faults too (a corrupt fault must still be caught although the kernel leaves checksums partial)."""

from __future__ import annotations

from functools import partial

import pytest

from stack.faults import FaultEngine
from stack.tcp.config import Config
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import Fam, echo_until_eof, kernel_connect, run_test, running_stack, send_and_read_back

pytestmark = [requires_kernel_link, pytest.mark.kernel, pytest.mark.usefixtures("stack_workers")]


@pytest.mark.parametrize("faults", [None, "corrupt in p=0.02 seed=5"])
def test_offloaded_echo_of_8_megabytes(faults: str | None, fam: Fam) -> None:
    async def main() -> None:
        engine = FaultEngine(faults) if faults else None
        async with running_stack(Config(msl=0.5, secret=b"o" * 16), offload=True, faults=engine) as (stack, _log):
            assert stack.netns is not None and stack.host is not None
            sizes: list[int] = []
            stack.observers.append(lambda kind, t, *rest: sizes.append(len(rest[0].payload))
                                   if kind in ("in", "out") else None)
            await stack.start_server(partial(echo_until_eof, chunk=1 << 20), 7)
            r, w, _ = await kernel_connect(stack.netns, 7, fam.stack)
            blob = bytes((i * 7) & 0xFF for i in range(8 << 20))
            got = await send_and_read_back(r, w, blob)
            w.close()
            assert got == blob
            assert max(sizes) > 10 * 1460  # GSO: segments far beyond the MTU, both ways
            if engine is not None:
                assert engine.counters["FaultCorrupt"] > 0
                assert stack.host.counters["InCsumErrors"] == engine.counters["FaultCorrupt"]

    run_test(main(), 60)
