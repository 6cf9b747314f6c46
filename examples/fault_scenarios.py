"""Break TCP on purpose against the Linux kernel and watch the teardown cope: the eight fault
scenarios of tcpstack (ten runs with the variants 3b and 8b), each in its own private namespace.

    sudo .venv/bin/python examples/fault_scenarios.py            # all of them
    sudo .venv/bin/python examples/fault_scenarios.py 3 8b       # some of them
    sudo .venv/bin/python examples/fault_scenarios.py --list     # what each one does

Each prints what happened; tests/kernel/test_fault_scenarios.py runs the same functions and
asserts on what they return.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any

from stack.cli.common import require_kernel_link
from stack.faults import FaultEngine
from stack.link.nsenter import netns_socket
from stack.observe.sockdiag import SockDiag
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.events import StateChanged
from stack.wire.segment import FIN, Segment

STACK, KERNEL = "198.18.0.2", "198.18.0.1"
Result = dict[str, Any]


class Run:
    """A stack with fault rules in a fresh namespace, and what it saw."""

    def __init__(self, rules: str, config: Config | None = None) -> None:
        self.engine = FaultEngine(rules, seed=1)
        self.stack = Stack(config=config or Config(msl=1.0), faults=self.engine)
        self.applied: list[tuple[float, str, str, Segment]] = []  # faults as they happened
        self.changes: list[StateChanged] = []
        self.segments: list[tuple[float, str, Segment]] = []  # what actually crossed
        self.engine.listeners.append(lambda t, action, d, seg, rule: self.applied.append((t, action, d, seg)))
        self.stack.observers.append(self._observe)

    def _observe(self, kind: str, when: float, *rest: Any) -> None:
        if kind == "state":
            self.changes.append(rest[0])
        else:
            self.segments.append((when, kind, rest[0]))

    async def __aenter__(self) -> Run:
        await self.stack.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()

    @property
    def netns(self) -> str:
        assert self.stack.netns is not None
        return self.stack.netns

    def path(self, port: int) -> list[str]:
        """The states the stack's connection to kernel port `port` went through."""
        mine = [c for c in self.changes if c.four_tuple[3] == port]
        return [mine[0].old.value, *(c.new.value for c in mine)] if mine else []

    def kernel_state(self, port: int) -> str | None:
        with SockDiag(self.netns) as diag:
            return diag.state_of(port)

    async def connect(self, port: int, nodelay: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        sock = netns_socket(self.netns)
        if nodelay:  # every write its own segment: Nagle would merge them
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, (STACK, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return reader, writer, sock.getsockname()[1]


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise TimeoutError("the scenario did not reach its end state in time")
        await asyncio.sleep(0.01)


async def reply_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(65536))
    writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


# ---------------------------------------------------------------------------------------------
async def lost_final_ack() -> Result:
    """1. Drop the stack's first ACK in TIME-WAIT: the kernel in LAST-ACK retransmits its FIN, the
    stack re-ACKs and restarts 2MSL, and the kernel reaches CLOSED. (This is why TIME-WAIT exists.)"""
    async with Run("drop out state=TIME-WAIT nth=1") as run:
        await run.stack.start_server(reply_close, 7)
        r, w, kport = await run.connect(7)
        w.write(b"hello")
        await r.read()
        w.close()  # the kernel closes second: LAST-ACK
        host = run.stack.host
        assert host is not None
        await until(lambda: len(host.time_wait) == 1)
        await until(lambda: run.kernel_state(kport) is None)  # the retransmitted FIN got its ACK
        tw = next(iter(host.time_wait.values()))
        kernel_fins = [s for _, d, s in run.segments if d == "in" and s.flags & FIN]
        return {"dropped": [(a, d, s.summary()) for _, a, d, s in run.applied],
                "kernel_fins": len(kernel_fins), "kernel_state": run.kernel_state(kport),
                "time_wait_restarted_by": round(tw.deadline - tw.entered - 2.0, 3), "stack_path": run.path(kport)}


async def kernel_fin_lost() -> Result:
    """2. Drop the kernel's FIN once: it is retransmitted and the close completes."""
    async with Run("drop in flags=F nth=1") as run:
        await run.stack.start_server(echo, 7)
        r, w, kport = await run.connect(7)
        w.write(b"hello")
        await r.readexactly(5)
        w.close()
        # Both ends done: the kernel in TIME-WAIT, and its last ACK taken by the stack (LAST-ACK -> CLOSED).
        await until(lambda: run.kernel_state(kport) == "TIME-WAIT" and run.path(kport)[-1:] == ["CLOSED"])
        fins = [t for t, d, s in run.segments if d == "in" and s.flags & FIN]
        return {"dropped": len(run.applied), "fins_received": len(fins), "stack_path": run.path(kport),
                "kernel_state": run.kernel_state(kport)}


async def stack_fin_lost(times: int | None = 4) -> Result:
    """3. Drop the stack's FIN four times: the first resend is a tail loss probe (as Linux sends
    one), then the retransmission timer resends it with backoff, same sequence number each time;
    the kernel stays ESTABLISHED until one gets through, then goes CLOSE-WAIT.

    `times` FINs are dropped; with times=None every one is (scenario 3b)."""
    rule = "drop out flags=F" + (f" first={times}" if times else "")
    # The server closes fully, so the connection is an orphan: its retry limit is orphan_retries.
    async with Run(rule, Config(msl=1.0, orphan_retries=3)) as run:
        closed: list[BaseException | None] = []

        async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError as exc:
                closed.append(exc)

        await run.stack.start_server(close_first, 7)
        r, _w, kport = await run.connect(7)
        states = []
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while loop.time() < end:
            states.append(run.kernel_state(kport))
            if times and states[-1] == "CLOSE-WAIT" and run.path(kport)[-1:] == ["FIN-WAIT-2"]:
                break
            if not times and run.path(kport)[-1:] == ["CLOSED"]:
                break
            await asyncio.sleep(0.05)
        drops = [(t, s.seq) for t, _, _, s in run.applied]
        gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(drops)]
        conn_events = [c for c in run.changes if c.four_tuple[3] == kport]
        result: Result = {"fin_drops": len(drops), "same_seq": len({seq for _, seq in drops}) == 1,
                          "backoff_gaps": gaps, "kernel_states_seen": list(dict.fromkeys(states)),
                          "stack_path": run.path(kport), "last_cause": conn_events[-1].cause if conn_events else ""}
        host = run.stack.host
        assert host is not None
        result["loss_probes"] = host.counters["TCPLossProbes"]
        if not times:
            result["rst_sent"] = host.counters["OutRsts"]
            result["timeouts"] = host.counters["TCPAbortOnTimeout"]
            result["kernel_state_after"] = run.kernel_state(kport)  # it was told nothing
            _w.write(b"hello?")  # the kernel speaks: a connection the stack no longer has
            try:
                await asyncio.wait_for(r.read(), 2)
                result["kernel_saw"] = "EOF"
            except ConnectionResetError:
                result["kernel_saw"] = "ECONNRESET"
        return result


async def fin_ahead_of_data() -> Result:
    """4. Reorder the kernel's FIN ahead of its last data: all data still arrives before EOF."""
    async with Run("reorder in payload=yes nth=2 hold=1") as run:
        got: list[bytes] = []

        async def read_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read())  # all data, then EOF
            writer.close()

        await run.stack.start_server(read_all, 7)
        _r, w, _kport = await run.connect(7, nodelay=True)
        w.write(b"first ")
        await asyncio.sleep(0.05)
        w.write(b"last")  # this segment is held until the FIN behind it has passed
        await asyncio.sleep(0.05)
        w.close()
        await until(lambda: bool(got))
        order = [("FIN" if s.flags & FIN else s.payload.decode()) for _, d, s in run.segments
                 if d == "in" and (s.payload or s.flags & FIN)]
        return {"arrival_order": order, "delivered": got[0].decode(), "reordered": len(run.applied)}


async def echo_through(run: Run, size: int) -> tuple[bytes, bytes]:
    """A kernel client sends `size` bytes to an echo server on the stack; (sent, echoed)."""
    await run.stack.start_server(echo, 7)
    r, w, _kport = await run.connect(7)
    payload = bytes(range(256)) * (size // 256)
    w.write(payload)
    w.write_eof()
    back = await r.read()
    w.close()
    return payload, back


async def duplicate_everything() -> Result:
    """5. Duplicate every segment both ways: no byte is delivered twice."""
    async with Run("dup in\ndup out") as run:
        payload, back = await echo_through(run, 256_000)
        return {"sent": len(payload), "echoed": len(back), "intact": back == payload,
                "duplicated": run.engine.counters["FaultDup"]}


async def lossy_many(connections: int = 100, size: int = 100_000) -> Result:
    """6. 10% random loss both ways, 100 connections x 100 KB: every byte intact, all closed."""
    async with Run("drop in p=0.1 seed=11\ndrop out p=0.1 seed=12", Config(msl=1.0)) as run:
        await run.stack.start_server(echo, 7)
        sem = asyncio.Semaphore(25)

        async def one(i: int) -> bool:
            async with sem:
                r, w, _ = await run.connect(7)
                payload = bytes([i]) * size
                w.write(payload)
                w.write_eof()
                back = await r.read()
                w.close()
                await w.wait_closed()
                return back == payload

        results = await asyncio.gather(*(one(i) for i in range(connections)))
        host = run.stack.host
        assert host is not None
        await until(lambda: not host.connections, timeout=60)
        return {"connections": connections, "intact": sum(results), "dropped": run.engine.counters["FaultDrop"],
                "stack_retransmissions": host.counters["RetransSegs"], "open_left": len(host.connections)}


async def corruption() -> Result:
    """7. Corrupt 5% of what the kernel sends: counted as checksum errors, repaired by retransmission."""
    async with Run("corrupt in p=0.05 seed=3") as run:
        payload, back = await echo_through(run, 512_000)
        host = run.stack.host
        assert host is not None
        return {"corrupted": run.engine.counters["FaultCorrupt"], "InCsumErrors": host.counters["InCsumErrors"],
                "intact": back == payload}


def _sysctl_rfc1337(netns: str, on: bool) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv4.tcp_rfc1337={int(on)}"], check=True)


async def rst_into_time_wait(rfc1337: bool) -> Result:
    """8. An RST injected into TIME-WAIT closes it with rfc1337 off and is ignored with it on — on
    the stack (its TIME-WAIT after closing first) and on the kernel (its TIME-WAIT), the same way."""
    cfg = Config(msl=5.0, rfc1337=rfc1337)
    # Stack side: an exact RST right behind the kernel's FIN lands in the stack's fresh TIME-WAIT.
    async with Run("inject in rst seq=+0 flags=F", cfg) as run:
        await run.stack.start_server(reply_close, 7)
        r, w, kport = await run.connect(7)
        w.write(b"x")
        await r.read()
        w.close()
        await asyncio.sleep(0.2)
        host = run.stack.host
        assert host is not None
        stack_tw = len(host.time_wait)
    # Kernel side: the kernel closes first; an exact RST behind the stack's FIN hits its TIME-WAIT.
    async with Run("inject out rst seq=+0 flags=F", cfg) as run:
        _sysctl_rfc1337(run.netns, rfc1337)
        await run.stack.start_server(echo, 7)
        r, w, kport = await run.connect(7)
        w.write_eof()
        await r.read()
        await asyncio.sleep(0.2)
        kernel_tw = run.kernel_state(kport) == "TIME-WAIT"
        w.close()
    return {"rfc1337": rfc1337, "stack_time_wait_left": stack_tw, "kernel_time_wait_left": int(kernel_tw)}


async def stack_fin_always_lost() -> Result:
    """3b. Drop every FIN of the stack: after its retry limit it gives up silently, as Linux does
    (no RST: a peer that answers nothing would not get it), and reports the connection timed out;
    the kernel, still ESTABLISHED, sees ECONNRESET when it next writes."""
    return await stack_fin_lost(None)


async def rst_into_time_wait_rfc1337_off() -> Result:
    """8. An RST injected into TIME-WAIT, RFC 1337 off (Linux's default): the RST ends TIME-WAIT
    early, on the stack and on the kernel alike."""
    return await rst_into_time_wait(False)


async def rst_into_time_wait_rfc1337_on() -> Result:
    """8b. The same RST with RFC 1337 protection on (`rfc1337`, Linux `tcp_rfc1337`): TIME-WAIT
    ignores it and runs its full 2MSL, on both sides."""
    return await rst_into_time_wait(True)


SCENARIOS: dict[str, Callable[[], Coroutine[Any, Any, Result]]] = {
    "1": lost_final_ack,
    "2": kernel_fin_lost,
    "3": stack_fin_lost,
    "3b": stack_fin_always_lost,
    "4": fin_ahead_of_data,
    "5": duplicate_everything,
    "6": lossy_many,
    "7": corruption,
    "8": rst_into_time_wait_rfc1337_off,
    "8b": rst_into_time_wait_rfc1337_on,
}


def heading(name: str) -> str:
    """The scenario's description: the first paragraph of its docstring, without the number."""
    doc = inspect.getdoc(SCENARIOS[name]) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return re.sub(r"^\w+\.\s*", "", first)


def main(argv: list[str]) -> int:
    from stack.cli import interrupt
    from stack.cli.common import OneLineParser

    parser = OneLineParser(prog="fault_scenarios.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", metavar="SCENARIO",
                        help=f"which to run ({', '.join(SCENARIOS)}; default: all)")
    parser.add_argument("--list", action="store_true", help="print what each scenario does and exit")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenario if name not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {unknown[0]!r} (choose from {', '.join(SCENARIOS)})")
    if args.list:
        for name in SCENARIOS:
            print(textwrap.fill(heading(name), 100, initial_indent=f"{name:>3}. ", subsequent_indent="     "))
        return 0

    def run_all() -> None:
        require_kernel_link()
        for name in args.scenario or list(SCENARIOS):
            print("\n" + textwrap.fill(heading(name), 100, initial_indent=f"{name}. ", subsequent_indent="   "),
                  flush=True)
            for key, value in interrupt.run(SCENARIOS[name]()).items():
                print(f"   {key}: {value}", flush=True)

    return interrupt.guarded("fault_scenarios.py", run_all)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
