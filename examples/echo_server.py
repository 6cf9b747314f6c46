"""An echo server on tcpstack, reachable from the kernel inside the stack's private namespace.

    sudo .venv/bin/python examples/echo_server.py [--seconds 30]

It prints the namespace name; from another shell, talk to it with a kernel socket:

    sudo ip netns exec tcps-XXXX-1 python3 -c "import socket; s=socket.create_connection(('198.18.0.2', 7)); \
s.sendall(b'hi'); s.shutdown(1); print(s.recv(100))"

Every state change of every connection is printed as it happens. Stops after --seconds or Ctrl-C,
and the namespace goes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from stack.cli import interrupt
from stack.cli.common import OneLineParser, positive_float, require_kernel_link
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.events import StateChanged


def show_state(kind: str, when: float, *rest: object) -> None:
    if kind == "state":
        change = rest[0]
        assert isinstance(change, StateChanged)
        la, lp, ra, rp = change.four_tuple
        print(f"{when:12.6f}  {la}:{lp} <-> {ra}:{rp}  {change.old} -> {change.new}  ({change.cause})", flush=True)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main(seconds: float) -> None:
    async with Stack(config=Config(msl=5.0)) as stack:
        stack.observers.append(show_state)
        await stack.start_server(echo, 7)
        print(f"echo server on 198.18.0.2:7 in network namespace {stack.netns} (for {seconds:g} s)", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), seconds)


def cli(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="echo_server.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=positive_float, default=30.0, help="how long to serve (default 30)")
    args = parser.parse_args(argv)

    def serve() -> None:
        require_kernel_link()
        interrupt.run(main(args.seconds))

    return interrupt.guarded("echo_server.py", serve)


if __name__ == "__main__":
    sys.exit(cli())
