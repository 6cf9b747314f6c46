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
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

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
from stack.observe.ladder import entries_from_segments, render_svg, render_text
from stack.observe.sockdiag import SockDiag
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.events import StateChanged
from stack.wire.segment import Segment

STACK_ADDR = "198.18.0.2"
KERNEL_ADDR = "198.18.0.1"
DEMO_DEFAULTS = {"msl": 1.0}
PROGRESS_EVERY = 5.0  # seconds between "still waiting" lines during a long 2MSL


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="show the four-way close against the Linux kernel, segment by segment",
                       description=__doc__)
    p.add_argument("--svg", metavar="FILE", help="also draw the ladder diagrams into this SVG file")
    add_fault_arguments(p)
    add_offload_argument(p)
    # The demo's MSL is 1 s (2MSL = 2 s; Linux uses 60 s for 2MSL), so TIME-WAIT ends during it.
    add_config_arguments(p, DEMO_DEFAULTS)
    p.set_defaults(func=run)


@dataclass
class Recorder:
    """Segments of the demo's connections, the stack's transitions and the kernel's states."""

    diag: SockDiag
    segments: list[tuple[float, str, Segment]] = field(default_factory=list)
    changes: list[StateChanged] = field(default_factory=list)
    kernel: dict[int, list[tuple[float, str]]] = field(default_factory=dict)  # kernel port -> timeline
    _last_out: list[tuple[float, int]] = field(default_factory=list)

    def observe(self, kind: str, when: float, *rest: object) -> None:
        if kind == "state":
            change = rest[0]
            assert isinstance(change, StateChanged)
            self.changes.append(change)
            return
        seg = rest[0]
        assert isinstance(seg, Segment)
        self.segments.append((when, kind, seg))
        kernel_port = seg.src_port if kind == "in" else seg.dst_port
        if kind == "in":
            # The kernel has sent this segment: its state now is its state after it.
            self._note_kernel(when, kernel_port)
        else:
            self._last_out.append((when, kernel_port))

    def written(self, when: float) -> None:
        # The kernel has processed what we just wrote: read its state for those segments.
        for seg_time, port in self._last_out:
            self._note_kernel(seg_time, port)
        self._last_out.clear()

    def _note_kernel(self, when: float, kernel_port: int) -> None:
        state = self.diag.state_of(kernel_port, None)
        timeline = self.kernel.setdefault(kernel_port, [])
        name = _rfc(state) if state else "CLOSED"
        if not timeline or timeline[-1][1] != name:
            timeline.append((when, name))

    def ladder(self, stack_port: int, kernel_port: int):  # type: ignore[no-untyped-def]
        segs = [(t, d, s) for t, d, s in self.segments
                if {s.src_port, s.dst_port} == {stack_port, kernel_port}]
        mine = [c for c in self.changes if c.four_tuple[1] == stack_port and c.four_tuple[3] in (kernel_port, 0)]
        return entries_from_segments(segs, stack_port, stack_states=mine,
                                     kernel_states=self.kernel.get(kernel_port, []))


def _rfc(ss_name: str) -> str:
    return {"ESTAB": "ESTABLISHED", "SYN-RECV": "SYN-RECEIVED", "UNCONN": "CLOSED"}.get(ss_name, ss_name)


async def _kernel_client(netns: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    sock = netns_socket(netns)
    await asyncio.get_running_loop().sock_connect(sock, (STACK_ADDR, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return reader, writer, sock.getsockname()[1]


async def _demo(config: Config, svg_path: str | None, faults: FaultEngine | None = None,
                offload: bool = True) -> int:
    msl = config.msl
    out = sys.stdout
    async with Stack(config=config, addr=STACK_ADDR, peer_addr=KERNEL_ADDR, faults=faults, offload=offload) as stack:
        netns = stack.netns
        assert netns is not None and stack.host is not None
        host = stack.host
        rec = Recorder(SockDiag(netns))
        stack.observers.append(rec.observe)
        stack.after_write.append(rec.written)
        print("tcpstack demo: the TCP close between the Linux kernel and tcpstack", file=out)
        print(f"  kernel   {KERNEL_ADDR}  (a real Linux socket in network namespace {netns})", file=out)
        print(f"  tcpstack {STACK_ADDR}  (this process, on the namespace's TUN device)", file=out)
        shortened = "shortened to " if msl < 30 else ""
        print(f"  tcpstack's MSL is {shortened}{msl:g} s here, so its TIME-WAIT (2MSL = {2 * msl:g} s) ends "
              "during the demo;\n  the kernel keeps TIME-WAIT for Linux's fixed 60 s.\n", file=out, flush=True)
        svgs: list[str] = []

        def waiting(seconds: float) -> None:
            print(f"  ... {seconds:.0f} s of {2 * msl:g} s in TIME-WAIT", file=out, flush=True)

        # 1. The kernel closes first; the stack echoes until EOF, then closes (passive close).
        async def echo_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
            await asyncio.sleep(0.05)  # a visible pause in CLOSE-WAIT before our FIN
            writer.close()

        await stack.start_server(echo_then_close, 7)
        r, w, kport = await _kernel_client(netns, 7)
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        w.close()  # the kernel's active close
        assert await r.read() == b""
        await _until(lambda: stack.state_of(7, (KERNEL_ADDR, kport)) is None)
        title = ("1. The kernel closes first: kernel FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT,"
                 " tcpstack CLOSE-WAIT -> LAST-ACK")
        entries = rec.ladder(7, kport)
        print(render_text(entries, left="tcpstack", right="kernel", title=title), file=out)
        ktw = [s for s in rec.diag.dump() if s.local[1] == kport]
        if ktw:
            print(f"  the kernel holds TIME-WAIT for 2MSL (its timer: {ktw[0].expires_ms / 1000:.1f} s left); "
                  "tcpstack went straight to CLOSED.\n", file=out)
        svgs.append(render_svg(entries, left="tcpstack", right="kernel", title="1. The kernel closes first"))

        # 2. The stack closes first: reply, FIN; the kernel reads EOF and closes second.
        async def reply_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(65536)
            writer.write(data)
            writer.close()  # our active close

        await stack.start_server(reply_close, 8)
        r, w, kport = await _kernel_client(netns, 8)
        w.write(b"hello")
        assert await r.read() == b"hello"  # reply, then our FIN
        await asyncio.sleep(0.05)  # a visible pause in the kernel's CLOSE-WAIT
        w.close()
        await _until(lambda: stack.state_of(8, (KERNEL_ADDR, kport)) is not None and len(host.time_wait) == 1)
        entered = stack.now()
        print(f"  tcpstack is in TIME-WAIT: {len(stack.host.time_wait)} connection(s); waiting 2MSL = "
              f"{2 * msl:g} s ...", file=out, flush=True)
        await _until(lambda: not host.time_wait, timeout=4 * msl + 5, progress=waiting)
        waited = stack.now() - entered
        title = "2. tcpstack closes first: tcpstack FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT -> (2MSL) -> CLOSED"
        entries = rec.ladder(8, kport)
        print(render_text(entries, left="tcpstack", right="kernel", title=title), file=out)
        print(f"  2MSL expired: TIME-WAIT -> CLOSED after {waited:.2f} s; the kernel went LAST-ACK -> CLOSED.\n",
              file=out)
        svgs.append(render_svg(entries, left="tcpstack", right="kernel",
                               title=f"2. tcpstack closes first (2MSL = {2 * msl:g} s)"))

        # 3. Both close at once: the FINs cross, both ends pass through CLOSING.
        writers: list[asyncio.StreamWriter] = []

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)

        await stack.start_server(hold, 9)
        r, w, kport = await _kernel_client(netns, 9)
        await _until(lambda: bool(writers))
        stack.pause_input()  # the kernel's FIN waits in the TUN queue while ours goes out
        w.close()
        await asyncio.sleep(0.02)
        writers[0].close()
        await asyncio.sleep(0.02)
        stack.resume_input()
        await _until(lambda: not host.time_wait and stack.state_of(9, (KERNEL_ADDR, kport)) is None,
                     timeout=4 * msl + 5, progress=waiting)
        title = "3. Simultaneous close: both FIN-WAIT-1 -> CLOSING -> TIME-WAIT"
        entries = rec.ladder(9, kport)
        print(render_text(entries, left="tcpstack", right="kernel", title=title), file=out)

        kernel_tw = sum(1 for s in rec.diag.dump() if s.state == "TIME-WAIT")
        print(f"TIME-WAIT count now: tcpstack {len(stack.host.time_wait)} (its 2MSL of {2 * msl:g} s expired), "
              f"kernel {kernel_tw} (Linux's 60 s are still running).", file=out)
        svgs.append(render_svg(entries, left="tcpstack", right="kernel", title="3. Simultaneous close"))
        rec.diag.close()
    if svg_path:
        _write_svgs(svg_path, svgs)
        print(f"ladder diagrams written to {svg_path}", file=out)
    return 0


async def _until(predicate: Callable[[], bool], timeout: float = 5.0,
                 progress: Callable[[float], None] | None = None) -> None:
    """Wait for `predicate`; `progress(seconds waited)` every PROGRESS_EVERY seconds, if given."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + timeout
    next_progress = start + PROGRESS_EVERY
    while not predicate():
        now = loop.time()
        if now > end:
            raise CliError("the demo's connection did not reach the expected state in time")
        if progress is not None and now >= next_progress:
            progress(now - start)
            next_progress += PROGRESS_EVERY
        await asyncio.sleep(0.005)


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
    if args.svg:
        check_writable(args.svg, "--svg")
    require_kernel_link()
    return interrupt.run(_demo(config, args.svg, faults, args.offload))
