"""An orphan facing a kernel that never reads: the stack probes the zero window, the kernel answers
every probe, and the stack still gives the connection up, as Linux does with its own orphans
(tcp_probe_timer with tcp_orphan_retries = 0: once the probe backoff reaches the RTO maximum).
rto_max is lowered so that this takes seconds instead of minutes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from stack.tcp.config import Config
from stack.tcp.states import State
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import Fam, kernel_socket, kernel_state_of, run_test, running_stack, wait_for

pytestmark = [requires_kernel_link, pytest.mark.kernel, pytest.mark.usefixtures("stack_workers")]
S = State
PORT = 7


def test_zero_window_orphan_is_aborted_though_the_kernel_answers_probes(fam: Fam) -> None:
    async def main() -> None:
        cfg = Config(msl=0.5, rto_max=1.0, secret=b"z" * 16)
        async with running_stack(cfg) as (stack, log):
            ns = stack.netns
            assert ns is not None and stack.host is not None
            closed = asyncio.Event()

            async def flood_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(b"z" * (2 << 20))  # far more than the kernel's small buffer takes
                writer.close()  # the application is gone: an orphan with data still to send
                closed.set()

            await stack.start_server(flood_then_close, PORT)
            sock = kernel_socket(ns, PORT, fam.stack)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it is never read
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (fam.stack, PORT))
            kport = sock.getsockname()[1]
            await closed.wait()
            host = stack.host
            await wait_for(lambda: host.counters["TCPZeroWindowProbes"] >= 2, timeout=10)
            await wait_for(lambda: log.path(PORT, kport)[-1:] == [S.CLOSED], timeout=20)
            assert S.FIN_WAIT_1 in log.path(PORT, kport)
            assert host.counters["TCPAbortOnTimeout"] == 1
            assert host.counters["OutRsts"] == 0  # dropped silently, as Linux's tcp_write_err
            assert kernel_state_of(ns, kport) == "ESTAB"  # the kernel was told nothing
            sock.close()

    run_test(main(), 60)
