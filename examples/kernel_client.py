"""A kernel client against tcpstack, both in this process: the stack serves, a real Linux socket
(opened inside the stack's namespace) connects, sends, half-closes and reads the reply. Prints the
stack's state changes and the kernel socket's state as `ss` sees it.

    sudo .venv/bin/python examples/kernel_client.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from stack.cli import interrupt
from stack.cli.common import OneLineParser, require_kernel_link
from stack.link.nsenter import netns_socket
from stack.observe.sockdiag import SockDiag
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.events import StateChanged


async def main() -> None:
    async with Stack(config=Config(msl=1.0)) as stack:
        assert stack.netns is not None
        changes: list[StateChanged] = []
        stack.observers.append(lambda kind, when, *rest: changes.append(rest[0]) if kind == "state" else None)

        async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # until the kernel's FIN
            writer.write(data.upper())
            writer.close()  # we close second: CLOSE-WAIT -> LAST-ACK -> CLOSED

        await stack.start_server(shout, 7)
        sock = netns_socket(stack.netns)
        await asyncio.get_running_loop().sock_connect(sock, ("198.18.0.2", 7))
        kernel_port = sock.getsockname()[1]
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"hello from the kernel")
        writer.write_eof()  # the kernel closes first (FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT)
        print("reply:", (await reader.read()).decode())
        writer.close()
        await asyncio.sleep(0.1)
        for c in changes:
            if c.four_tuple[3] in (kernel_port, 0):
                print(f"  tcpstack {c.four_tuple[1]}: {c.old} -> {c.new}  ({c.cause})")
        with SockDiag(stack.netns) as diag:
            print(f"  kernel :{kernel_port}: {diag.state_of(kernel_port)} (as ss shows it)")


def cli(argv: list[str] | None = None) -> int:
    OneLineParser(prog="kernel_client.py", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)

    def run() -> None:
        require_kernel_link()
        interrupt.run(main())

    return interrupt.guarded("kernel_client.py", run)


if __name__ == "__main__":
    sys.exit(cli())
