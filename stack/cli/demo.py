"""`tcpstack demo`: the TCP close between the Linux kernel and tcpstack, segment by segment.

In a private namespace a kernel client talks to the stack three times: the kernel closes first,
then the stack closes first (through TIME-WAIT and its 2MSL expiry), then both close at once
(through CLOSING). For every segment it prints the time, the direction, the flags, the relative
seq/ack and both ends' states after it: the stack's from its own transitions, the kernel's from the
kernel itself (sock_diag, what `ss` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from stack.cli import interrupt
from stack.cli.common import (
    CliError,
    UsageError,
    add_fault_arguments,
    add_offload_argument,
    check_writable,
    fault_engine,
    require_kernel_link,
)
from stack.cli.knobs import add_config_arguments, config_from_args
from stack.faults import FaultEngine
from stack.link.nsenter import netns_socket
from stack.link.steering import owner
from stack.link.tun import IPV6_MIN_MTU
from stack.observe.conversation import Conversations, plain_cause
from stack.observe.ladder import render_text
from stack.observe.ladder_svg import render_svg
from stack.observe.sockdiag import SockDiag
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.states import State

STACK_ADDR = "198.18.0.2"
KERNEL_ADDR = "198.18.0.1"
STACK_ADDR6 = "2001:2::2"
KERNEL_ADDR6 = "2001:2::1"
DEMO_DEFAULTS = {"msl": 1.0}
PROGRESS_EVERY = 5.0  # seconds between "still waiting" lines during a long 2MSL


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="show the four-way close against the Linux kernel, segment by segment",
                       description=__doc__)
    p.add_argument("--svg", metavar="FILE", help="also draw the ladder diagrams into this SVG file")
    p.add_argument("--pcap", metavar="FILE", help="also record every packet, live (classic pcap)")
    p.add_argument("--trace", metavar="FILE", help="also write state changes, segments and faults as JSON lines")
    p.add_argument("--workers", type=int, choices=range(1, 9), default=1, metavar="N",
                   help="run the stack as N worker processes on a multi-queue TUN device; part i runs on "
                        "worker i mod N (default 1)")
    p.add_argument("--ipv6", action="store_true",
                   help=f"the kernel connects over IPv6: {KERNEL_ADDR6} -> {STACK_ADDR6} (default IPv4)")
    add_fault_arguments(p)
    add_offload_argument(p)
    # The demo's MSL is 1 s (2MSL = 2 s; Linux uses 60 s for 2MSL), so TIME-WAIT ends during it.
    add_config_arguments(p, DEMO_DEFAULTS)
    p.set_defaults(func=run)


def _rfc(ss_name: str) -> str:
    return {"ESTAB": "ESTABLISHED", "SYN-RECV": "SYN-RECEIVED", "UNCONN": "CLOSED"}.get(ss_name, ss_name)


# Inside worker `index` of `count` (demo --workers): the kernel's client binds a source port the
# steering sends to this worker (stack.link.steering).
_WORKER: tuple[int, int] | None = None


async def _kernel_client(netns: str, addr: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    sock = netns_socket(netns, socket.AF_INET6 if ":" in addr else socket.AF_INET)
    if _WORKER is not None:
        index, count = _WORKER
        kport = next(p for p in range(40000 + 100 * index, 65536) if owner(p, port, count) == index)
        sock.bind(("", kport))  # any address of the family: connect picks the kernel side's
    await asyncio.get_running_loop().sock_connect(sock, (addr, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return reader, writer, sock.getsockname()[1]


# The stack's side of each part: plain protocols, so no task is left behind when a fault keeps a
# close from finishing (a stuck stream handler would be cancelled at exit, and asyncio prints that).
class _EchoThenClose(asyncio.Protocol):
    """Echo until EOF, then close after a visible pause in CLOSE-WAIT (passive close)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        asyncio.get_running_loop().call_later(0.05, self.transport.close)
        return True


class _ReplyClose(_EchoThenClose):
    """Answer the first message and close at once (the stack closes first)."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]
        self.transport.close()


class _Hold(_EchoThenClose):
    """Keep the connection for the demo to close when it wants."""

    held: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.held.append(transport)

    def eof_received(self) -> bool:
        return True


@dataclass
class Part:
    port: int
    title: str
    svg_title: str
    protocol: type[asyncio.Protocol]


PARTS = (
    Part(7, "1. The kernel closes first: kernel FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT, tcpstack CLOSE-WAIT -> "
            "LAST-ACK", "1. The kernel closes first", _EchoThenClose),
    Part(8, "2. tcpstack closes first: tcpstack FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT -> (2MSL) -> CLOSED",
         "2. tcpstack closes first", _ReplyClose),
    Part(9, "3. Simultaneous close: both FIN-WAIT-1 -> CLOSING -> TIME-WAIT", "3. Simultaneous close", _Hold),
)


async def _kernel_side(part: Part, stack: Stack, netns: str, stack_addr: str, kport: list[int]) -> None:
    """What the kernel's socket does in each part (its port goes to `kport` once connected)."""
    r, w, port = await _kernel_client(netns, stack_addr, part.port)
    kport.append(port)
    try:
        if part.port == 7:
            w.write(b"hello")
            await r.readexactly(5)
            w.close()  # the kernel's active close
            await r.read()
        elif part.port == 8:
            w.write(b"hello")
            while await r.read(65536):  # the reply, then our FIN
                pass
            await asyncio.sleep(0.05)  # a visible pause in the kernel's CLOSE-WAIT
            w.close()
        else:
            await _until(lambda: bool(_Hold.held), 5.0)
            stack.pause_input()  # the kernel's FIN waits in the TUN queue while ours goes out
            w.close()
            await asyncio.sleep(0.02)
            _Hold.held.pop().close()
            await asyncio.sleep(0.02)
            stack.resume_input()
    finally:
        w.close()


def _gone(stack: Stack, port: int, kernel_addr: str, kport: list[int]) -> bool:
    """The stack's connection of this part has left every table (CLOSED, TIME-WAIT over)."""
    if not kport or stack.host is None:
        return False
    # The listener answers for a 4-tuple nobody holds: that reads as gone, too (state_of says None).
    return stack.state_of(port, (kernel_addr, kport[0])) is None


async def _run_part(part: Part, stack: Stack, ends: tuple[str, str], rec: Conversations, diag: SockDiag, msl: float,
                    faults: bool, out: TextIO, progress: Callable[[float], None] | None = None) -> tuple[bool, str]:
    """Run one part to its end, or for a bounded time when faults keep it from ending; print its
    ladder and what really happened. Returns (finished, svg). `progress` hears of a long wait for
    the end (TIME-WAIT's 2MSL) every PROGRESS_EVERY seconds. `ends` is (stack address, kernel address)."""
    assert stack.netns is not None and stack.host is not None
    stack_addr, kernel_addr = ends
    server = await stack.create_server(part.protocol, part.port)
    kport: list[int] = []
    budget = 4 * msl + 5  # the whole close, 2MSL included, with room for retransmissions
    loop = asyncio.get_running_loop()
    start = loop.time()
    client_error: BaseException | None = None
    try:
        await asyncio.wait_for(_kernel_side(part, stack, stack.netns, stack_addr, kport), budget)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        client_error = exc
    if kport and part.port == 8:
        await _until(lambda: _gone(stack, part.port, kernel_addr, kport)
                     or (stack.host is not None and bool(stack.host.time_wait)),
                     max(0.1, budget - (loop.time() - start)), quiet=True)
        tw = len(stack.host.time_wait)
        if tw:
            print(f"  tcpstack is in TIME-WAIT: {tw} connection(s); waiting 2MSL = {2 * msl:g} s ...", file=out)
    finished = bool(kport) and await _until(lambda: _gone(stack, part.port, kernel_addr, kport),
                                            max(0.1, budget - (loop.time() - start)), quiet=True,
                                            progress=progress)
    server.close()
    if not kport:
        print(f"{part.title}\n\n  the kernel could not connect: {client_error!r}\n", file=out)
        return False, ""
    stack_state = stack.state_of(part.port, (kernel_addr, kport[0]))  # None: gone, or only the listener
    kernel_state = diag.state_of(kport[0], None)
    if not finished:
        # A fault kept this close from ending: reset what is left, so the next part starts clean.
        for handle in stack.connections():
            if handle.four_tuple[1] == part.port:
                handle.abort(stack.now())
        stack.kick()
        await asyncio.sleep(0.05)
    entries, marks = rec.entries(part.port, kport[0]), rec.marks(part.port, kport[0])
    print(render_text(entries, left="tcpstack", right="kernel", title=part.title, marks=marks), file=out)
    for line in _what_happened(part, rec, kport[0], msl):
        print(f"  {line}", file=out)
    if not finished:
        cause = "the fault rules kept it from ending" if faults else "it did not end"
        print(f"  not finished after {budget:g} s ({cause}): tcpstack was in {stack_state or 'CLOSED'}, the "
              f"kernel in {_rfc(kernel_state) if kernel_state else 'CLOSED'}; tcpstack reset its side.", file=out)
    if client_error is not None and not isinstance(client_error, TimeoutError):
        print(f"  the kernel's socket reported: {client_error!r}", file=out)
    print(file=out)
    return finished, render_svg(entries, left="tcpstack", right="kernel", title=part.svg_title, marks=marks)


def _what_happened(part: Part, rec: Conversations, kport: int, msl: float) -> list[str]:
    """The closing summary, from the recorded state changes (what ended each state, and when)."""
    lines = rec.story(part.port, kport)
    tw = rec.time_in(part.port, kport, State.TIME_WAIT)
    if tw is not None:
        held, ended = tw
        if ended.cause == "timeout = 2MSL":
            kernel = rec.kernel_path(kport)
            tail = f"; the kernel went {' -> '.join(kernel[-2:])}" if len(kernel) >= 2 else ""
            lines.append(f"2MSL expired: TIME-WAIT -> CLOSED after {held:.2f} s{tail}.")
        else:
            lines.append(f"TIME-WAIT ended early, after {held:.2f} s of its 2MSL = {2 * msl:g} s: "
                         f"{plain_cause(ended.cause)}.")
    elif part.port == 7:
        kernel = rec.kernel_path(kport)
        if kernel and kernel[-1] == "TIME-WAIT":
            lines.append("the kernel holds TIME-WAIT for 2MSL (Linux: 60 s); tcpstack went straight to CLOSED.")
    return lines


async def _demo(config: Config, svg_path: str | None, faults: FaultEngine | None = None, offload: bool = True,
                pcap: str | None = None, trace: str | None = None, ipv6: bool = False) -> int:
    msl = config.msl
    out = sys.stdout
    ends = (STACK_ADDR6, KERNEL_ADDR6) if ipv6 else (STACK_ADDR, KERNEL_ADDR)
    async with Stack(config=config, addr=STACK_ADDR, peer_addr=KERNEL_ADDR, faults=faults, offload=offload,
                     pcap=pcap, trace=trace) as stack:
        netns = stack.netns
        assert netns is not None and stack.host is not None
        diag = SockDiag(netns)

        def kernel_state(port: int) -> str | None:
            state = diag.state_of(port, None)
            return _rfc(state) if state else None

        rec = Conversations(kernel_state)
        stack.observers.append(rec.observe)
        stack.after_write.append(rec.written)
        if faults is not None:
            faults.listeners.append(rec.fault)
        print("tcpstack demo: the TCP close between the Linux kernel and tcpstack", file=out)
        print(f"  kernel   {ends[1]}  (a real Linux socket in network namespace {netns})", file=out)
        print(f"  tcpstack {ends[0]}  (this process, on the namespace's TUN device)", file=out)
        shortened = "shortened to " if msl < 30 else ""
        print(f"  tcpstack's MSL is {shortened}{msl:g} s here, so its TIME-WAIT (2MSL = {2 * msl:g} s) ends "
              "during the demo;\n  the kernel keeps TIME-WAIT for Linux's fixed 60 s.", file=out)
        if faults is not None:
            print("  fault rules: " + "; ".join(rule.text for rule in faults.rules), file=out)
        print(file=out, flush=True)
        svgs: list[str] = []

        def waiting(seconds: float) -> None:
            print(f"  ... {seconds:.0f} s of {2 * msl:g} s in TIME-WAIT", file=out, flush=True)

        finished = []
        for part in PARTS:
            done, svg = await _run_part(part, stack, ends, rec, diag, msl, faults is not None, out, waiting)
            finished.append(done)
            if svg:
                svgs.append(svg)
        kernel_tw = sum(1 for s in diag.dump() if s.state == "TIME-WAIT")
        print(f"TIME-WAIT count now: tcpstack {len(stack.host.time_wait)} (its 2MSL of {2 * msl:g} s expired), "
              f"kernel {kernel_tw} (Linux's 60 s are still running).", file=out)
        diag.close()
    if svg_path and svgs:
        _write_svgs(svg_path, svgs)
        print(f"ladder diagrams written to {svg_path}", file=out)
    # With fault rules a close that never ends is a result worth seeing, not a failure of the demo.
    return 0 if faults is not None or all(finished) else 1


async def _until(predicate: Callable[[], bool], timeout: float = 5.0, *, quiet: bool = False,
                 progress: Callable[[float], None] | None = None) -> bool:
    """Wait for `predicate`; False after `timeout` seconds (or an error, unless `quiet`).
    `progress(seconds waited)` every PROGRESS_EVERY seconds, if given."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + timeout
    next_progress = start + PROGRESS_EVERY
    while not predicate():
        now = loop.time()
        if now > end:
            if quiet:
                return False
            raise CliError("the demo's connection did not reach the expected state in time")
        if progress is not None and now >= next_progress:
            progress(now - start)
            next_progress += PROGRESS_EVERY
        await asyncio.sleep(0.005)
    return True


def _write_svgs(path: str, svgs: list[str]) -> None:
    """Stack the three diagrams in one SVG file (nested <svg> elements, one under the other)."""
    parts: list[str] = []
    y = 0.0
    width = 0.0
    for svg in svgs:
        w = float(re.search(r'width="([\d.]+)', svg).group(1))  # type: ignore[union-attr]
        h = float(re.search(r'height="([\d.]+)', svg).group(1))  # type: ignore[union-attr]
        body = re.sub(r"^<\?xml[^>]*>\s*", "", svg)
        parts.append(body.replace("<svg ", f'<svg y="{y:g}" ', 1))
        y += h + 20
        width = max(width, w)
    doc = (f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
           f'width="{width:g}" height="{y:g}" viewBox="0 0 {width:g} {y:g}">\n' + "\n".join(parts) + "\n</svg>\n")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args, DEMO_DEFAULTS)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    faults = fault_engine(args)
    for option, value in (("--pcap", args.pcap), ("--trace", args.trace)):
        if value == "-":
            raise UsageError(f"{option} -: the demo prints its ladders on stdout; give a file")
    for option, value in (("--svg", args.svg), ("--pcap", args.pcap), ("--trace", args.trace)):
        if value:
            check_writable(value, option)
    require_kernel_link()
    if args.ipv6 and config.mtu < IPV6_MIN_MTU:
        raise UsageError(f"--ipv6 needs --mtu {IPV6_MIN_MTU} at least (IPv6's minimum), not {config.mtu}")
    if args.workers > 1:
        from stack.cli.demo_workers import demo_workers

        return interrupt.run(demo_workers(args.workers, config, args.svg, faults, args.offload, args.pcap,
                                          args.trace, args.ipv6))
    return interrupt.run(_demo(config, args.svg, faults, args.offload, args.pcap, args.trace, args.ipv6))
