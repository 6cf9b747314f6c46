"""`tcpstack demo --workers N`: the demo's three closes with the stack as N worker processes.

The device has N queues and each worker a whole stack (stack.runtime.workers); part i runs in worker
i mod N: its kernel client binds a source port the steering sends to that worker, and the worker
records and renders the ladder (its own observers, its own view of the kernel through sock_diag),
which the parent prints in order. Every worker listens on every part's port, as `serve --workers`.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from stack.cli import demo
from stack.faults import FaultEngine
from stack.observe.conversation import Conversations
from stack.observe.sockdiag import SockDiag
from stack.runtime import Stack
from stack.runtime.workers import WorkerOptions, Workers
from stack.tcp.config import Config

# In a worker: the recorder and the kernel's socket view of its parts.
_STATE: dict[str, Any] = {}


def _setup(stack: Stack) -> None:
    """Each worker's application: record every segment and state change like the one-process demo."""
    demo._WORKER = (stack.worker, stack.workers)
    assert stack.netns is not None
    diag = SockDiag(stack.netns)

    def kernel_state(port: int) -> str | None:
        state = diag.state_of(port, None)
        return demo._rfc(state) if state else None

    rec = Conversations(kernel_state)
    stack.observers.append(rec.observe)
    stack.after_write.append(rec.written)
    if stack.faults is not None:
        stack.faults.listeners.append(rec.fault)
    _STATE.update(rec=rec, diag=diag)


async def _part(stack: Stack, index: int, ends: tuple[str, str], msl: float, faults: bool) -> tuple[bool, str, str]:
    """One part, run in this worker: (finished, svg, the text it printed)."""
    out = io.StringIO()

    def waiting(seconds: float) -> None:
        print(f"  ... {seconds:.0f} s of {2 * msl:g} s in TIME-WAIT", file=out)

    print(f"  (worker {stack.worker} of {stack.workers})", file=out)
    finished, svg = await demo._run_part(demo.PARTS[index], stack, ends, _STATE["rec"], _STATE["diag"], msl, faults,
                                         out, waiting)
    return finished, svg, out.getvalue()


async def demo_workers(workers: int, config: Config, svg_path: str | None, faults: FaultEngine | None = None,
                       offload: bool = True, pcap: str | None = None, trace: str | None = None,
                       ipv6: bool = False) -> int:
    msl = config.msl
    ends = (demo.STACK_ADDR6, demo.KERNEL_ADDR6) if ipv6 else (demo.STACK_ADDR, demo.KERNEL_ADDR)
    out = sys.stdout
    opts = WorkerOptions(config=config, addr=demo.STACK_ADDR, peer_addr=demo.KERNEL_ADDR, offload=offload,
                         faults=faults, pcap=pcap, trace=trace)
    async with Workers(workers, _setup, opts) as pool:
        netns = pool.netns
        assert netns is not None
        print("tcpstack demo: the TCP close between the Linux kernel and tcpstack", file=out)
        print(f"  kernel   {ends[1]}  (a real Linux socket in network namespace {netns})", file=out)
        print(f"  tcpstack {ends[0]}  ({workers} worker processes, one per queue of the namespace's "
              "multi-queue TUN device)", file=out)
        print(f"  tcpstack's MSL is {'shortened to ' if msl < 30 else ''}{msl:g} s here, so its TIME-WAIT "
              f"(2MSL = {2 * msl:g} s) ends during the demo;\n  the kernel keeps TIME-WAIT for Linux's fixed 60 s.",
              file=out)
        if faults is not None:
            print("  fault rules (each worker's seed derived from the run's): "
                  + "; ".join(rule.text for rule in faults.rules), file=out)
        print(file=out, flush=True)
        finished, svgs = [], []
        for index in range(len(demo.PARTS)):
            done, svg, text = await pool.call(index % workers, _part, index, ends, msl, faults is not None,
                                              timeout=8 * msl + 30)
            print(text, end="", file=out, flush=True)
            finished.append(done)
            if svg:
                svgs.append(svg)
        counters = await pool.counters()
        diag = SockDiag(netns)
        kernel_tw = sum(1 for s in diag.dump() if s.state == "TIME-WAIT")
        diag.close()
        print(f"TIME-WAIT count now: tcpstack {counters.get('TimeWait', 0)} in all workers (its 2MSL of "
              f"{2 * msl:g} s expired), kernel {kernel_tw} (Linux's 60 s are still running); misrouted "
              f"segments: {counters.get('TCPMisrouted', 0)}.", file=out)
    if svg_path and svgs:
        demo._write_svgs(svg_path, svgs)
        print(f"ladder diagrams written to {svg_path}", file=out)
    return 0 if faults is not None or all(finished) else 1
