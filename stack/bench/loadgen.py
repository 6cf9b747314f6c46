"""The kernel-side peer of `tcpstack bench cps`: a short-connection load generator and an echo server,
each in its own process inside the benchmark's network namespace.

Two implementations with one command line and one JSON result:

* `loadgen.c` beside this module (package data, so an installed wheel has it too), compiled at run
  time with the system `cc` into a temporary directory (it is not part of the cffi module). The
  default.
* this module's pure-Python epoll loop (`python -m stack.bench.loadgen ...`), used when there is no
  C compiler. `describe()` says which one runs, and why.

Measured on the 2-core development VM (4 s runs, concurrency 16): against a kernel echo server in the
namespace the C client reached ~48k connections/s and the Python one ~42k (the kernel's own work
per connection dominates both); against the stack's echo server both reached the stack's ~5.9k/s
using 0.07 (C) and 0.10 (Python) of a core. Either is far from being the bottleneck; C is the
default because it leaves more of the second core to the kernel.

Both live in their own process, so they never compete with the stack for the GIL, and the stack
process's CPU time is the stack's alone (plus the kernel's receive path of what it writes to TUN,
which runs in its write(2)).

    client ADDR PORT NPORTS SECONDS CONCURRENCY SIZE WAIT_EOF BUCKET_MS [REQUESTS]
    echo ADDR PORT NPORTS MAX_SECONDS
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

SOURCE = Path(__file__).resolve().with_name("loadgen.c")
IMPLS = ("auto", "c", "python")
# Children in a process group of their own: a terminal's Ctrl-C reaches only the parent, which
# stops them (stack/cli/interrupt.py).
CHILD_GROUP: dict[str, Any] = {"process_group": 0}
# How long past its run a generator may take to report before it is killed (start-up included).
GRACE = 15.0

_built: dict[str, Path | None] = {}
_why_not: dict[str, str] = {}  # "bin" -> why the C generator is not available


def native_binary() -> Path | None:
    """The compiled C generator (built once per process), or None (`_why_not` says why)."""
    if "bin" in _built:
        return _built["bin"]
    path: Path | None = None
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        _why_not["bin"] = "no C compiler (cc, gcc or clang) on PATH"
    elif not SOURCE.is_file():
        _why_not["bin"] = f"{SOURCE} is missing from this installation"
    else:
        tmp = tempfile.mkdtemp(prefix="tcpstack-loadgen-")
        atexit.register(shutil.rmtree, tmp, True)
        out = Path(tmp) / "loadgen"
        proc = subprocess.run([cc, "-O2", "-o", str(out), str(SOURCE)], capture_output=True, text=True,
                              timeout=60, check=False)
        if proc.returncode == 0:
            path = out
        else:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            _why_not["bin"] = f"{cc} could not build {SOURCE.name}: {last}"
    _built["bin"] = path
    return path


def describe(impl: str) -> str:
    """Which generator `impl` (auto/c/python) runs, and why: one line for the user.

    Raises RuntimeError for `c` when the C generator cannot be had."""
    which = command(impl, [])[1]
    if which == "c":
        return f"C ({SOURCE.name} built with the system compiler)"
    if impl == "python":
        return "Python (--loadgen python)"
    return f"Python, because the C one cannot be used: {_why_not.get('bin', 'unknown reason')}"


def command(impl: str, args: list[str]) -> tuple[list[str], str]:
    """argv for the generator (`impl` auto/c/python) and which one it is."""
    if impl not in IMPLS:
        raise ValueError(f"unknown load generator {impl!r} (choose from {', '.join(IMPLS)})")
    if impl != "python":
        binary = native_binary()
        if binary is not None:
            return [str(binary), *args], "c"
        if impl == "c":
            raise RuntimeError(f"the C load generator cannot be used: {_why_not.get('bin', 'unknown reason')}")
    return [sys.executable, "-m", "stack.bench.loadgen", *args], "python"


def _in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


async def run_client(netns: str, addr: str, port: int, nports: int, seconds: float, concurrency: int,
                     *, size: int = 100, wait_eof: bool = False, bucket_ms: int = 100, requests: int = 1,
                     impl: str = "auto") -> dict[str, Any]:
    """Run the generator in `netns` against addr:port..port+nports-1 and return its JSON result.

    `wait_eof`: close only after the peer's FIN (so the peer closes first); `requests`: exchanges
    per connection (more than 1: persistent connections)."""
    argv, which = command(impl, ["client", addr, str(port), str(nports), f"{seconds:.3f}", str(concurrency),
                                 str(size), "1" if wait_eof else "0", str(bucket_ms), str(requests)])
    proc = await asyncio.create_subprocess_exec(*_in_netns(netns, argv), stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **CHILD_GROUP)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + GRACE)
    except BaseException:
        # Timeout, Ctrl-C or cancellation: the generator must not outlive us (namespace deletion
        # would kill it too, but not before the next case starts).
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed (exit {proc.returncode}): {err.decode().strip()}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["impl"] = which
    return result


class EchoServer:
    """A kernel echo server in `netns` on addr:port..port+nports-1, for as long as the `async with`.

    It exits on its own when its stdin closes (our end of the pipe), so it cannot outlive us.
    """

    def __init__(self, netns: str, addr: str, port: int, nports: int, *, max_seconds: float,
                 impl: str = "auto") -> None:
        self.argv, self.impl = command(impl, ["echo", addr, str(port), str(nports), f"{max_seconds:.3f}"])
        self.netns = netns
        self.proc: asyncio.subprocess.Process | None = None
        self._t0 = 0.0

    async def __aenter__(self) -> EchoServer:
        self.proc = await asyncio.create_subprocess_exec(*_in_netns(self.netns, self.argv), stdin=subprocess.PIPE,
                                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                         **CHILD_GROUP)
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), GRACE)
        except BaseException:
            await self.stop()
            raise
        if line.strip() != b"ready":
            await self.stop()
            raise RuntimeError(f"kernel echo server did not start: {line!r}")
        self._t0 = time.monotonic()
        return self

    def cpu_seconds(self) -> float:
        """User+system CPU of the server process so far (from /proc; 0 if it is gone)."""
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


# ---------------------------------------------------------------- the pure-Python implementation
def namespace_time_wait(netns: str) -> int:
    """The kernel's TIME-WAIT count in `netns` (what `ss -s` reports as timewait), -1 if unreadable."""
    from stack.link.nsenter import entered

    # /proc/thread-self/net follows the calling thread's namespace, which `entered` switches.
    with entered(netns):
        return _sockstat_tw("/proc/thread-self/net/sockstat")


def _sockstat_tw(path: str = "/proc/net/sockstat") -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()
                    return int(parts[parts.index("tw") + 1])
    except (OSError, ValueError):
        pass
    return -1


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def py_client(addr: str, port: int, nports: int, seconds: float, concurrency: int, size: int, wait_eof: bool,
              bucket_ms: int, requests: int = 1) -> dict[str, Any]:
    """The same loop as loadgen.c's client, in Python (see the module docstring for its speed)."""
    ep = select.epoll()
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    payload = b"x" * size
    nb = int(seconds * 1000 / bucket_ms) + 2
    buckets = [0] * nb
    lat: list[float] = []
    socks: dict[int, socket.socket] = {}
    phase: dict[int, int] = {}  # fd -> 0 connecting, 1 reading, 2 waiting for EOF
    got: dict[int, int] = {}
    reqs: dict[int, int] = {}
    exchanges = 0
    started: dict[int, float] = {}
    errors = {"connect_errors": 0, "addr_unavailable": 0, "reset_errors": 0, "short_reads": 0}
    idle = concurrency
    next_port = 0
    peak_tw = 0
    clock = time.monotonic
    t0 = clock()
    end = t0 + seconds
    next_sample = t0
    cpu0 = _cpu()
    while True:
        t = clock()
        if t >= end:
            break
        if t >= next_sample:
            peak_tw = max(peak_tw, _sockstat_tw())
            next_sample = t + 0.1
        failed_now = 0
        while idle > failed_now:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((addr, port + next_port % nports))
            next_port += 1
            if rc not in (0, errno.EINPROGRESS):
                errors["addr_unavailable" if rc == errno.EADDRNOTAVAIL else "connect_errors"] += 1
                s.close()
                failed_now += 1
                continue
            fd = s.fileno()
            socks[fd], phase[fd], got[fd], reqs[fd], started[fd] = s, 0, 0, 0, clock()
            ep.register(fd, select.EPOLLOUT)
            idle -= 1
        timeout = 0.001 if idle else max(0.0, min(next_sample, end) - clock())
        for fd, ev in ep.poll(timeout):
            s = socks[fd]
            done = fail = False
            if phase[fd] == 0:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or ev & (select.EPOLLERR | select.EPOLLHUP):
                    errors["connect_errors"] += 1
                    fail = True
                else:
                    s.send(payload)
                    phase[fd] = 1
                    ep.modify(fd, select.EPOLLIN)
            else:
                while True:
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        errors["reset_errors"] += 1
                        fail = True
                        break
                    if not data:
                        if phase[fd] == 2:
                            done = True
                        else:
                            errors["short_reads"] += 1
                            fail = True
                        break
                    got[fd] += len(data)
                    if phase[fd] == 1 and got[fd] >= size:
                        exchanges += 1
                        reqs[fd] += 1
                        if reqs[fd] < requests:  # persistent: the next request on this connection
                            got[fd] -= size
                            s.send(payload)
                            continue
                        if not wait_eof:
                            done = True
                            break
                        phase[fd] = 2
            if done:
                t1 = clock()
                buckets[min(nb - 1, int((t1 - t0) * 1000 / bucket_ms))] += 1
                lat.append((t1 - started[fd]) * 1e6)
            if done or fail:
                ep.unregister(fd)
                s.close()  # the client closes first (after the peer's FIN with wait_eof)
                del socks[fd], phase[fd], got[fd], reqs[fd], started[fd]
                idle += 1
    elapsed = clock() - t0
    cpu = _cpu() - cpu0
    peak_tw = max(peak_tw, _sockstat_tw())
    in_flight = len(socks)
    for s in socks.values():
        s.close()
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

    last = min(nb - 1, int(elapsed * 1000 / bucket_ms))
    return {"connections": len(lat), "requests": exchanges, "elapsed": elapsed, "bucket_ms": bucket_ms,
            "buckets": buckets[:last + 1],
            **errors, "in_flight_at_end": in_flight, "peak_time_wait": peak_tw, "cpu_seconds": cpu,
            "latency_us": {"mean": sum(lat) / len(lat) if lat else 0.0, "p50": pct(0.5), "p90": pct(0.9),
                           "p99": pct(0.99)}, "impl": "python"}


def py_echo(addr: str, port: int, nports: int, max_seconds: float) -> None:
    """Echo until EOF, then close (the client closes first); stops on stdin EOF or after max_seconds."""
    ep = select.epoll()
    listeners: dict[int, socket.socket] = {}
    for i in range(nports):
        ls = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port + i))
        ls.listen(4096)
        ls.setblocking(False)
        listeners[ls.fileno()] = ls
        ep.register(ls.fileno(), select.EPOLLIN)
    ep.register(0, select.EPOLLIN)  # stdin: EOF means the parent is done or gone
    conns: dict[int, socket.socket] = {}
    print("ready", flush=True)
    end = time.monotonic() + max_seconds
    while time.monotonic() < end:
        for fd, _ev in ep.poll(0.2):
            if fd == 0:
                return
            if fd in listeners:
                while True:
                    try:
                        c, _ = listeners[fd].accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                with contextlib.suppress(OSError):
                    c.send(data)
                continue
            ep.unregister(fd)
            c.close()
            del conns[fd]


def main(argv: list[str]) -> int:
    if len(argv) in (9, 10) and argv[0] == "client":
        addr, port, nports, seconds, conc, size, wait_eof, bucket_ms = argv[1:9]
        result = py_client(addr, int(port), int(nports), float(seconds), int(conc), int(size), wait_eof == "1",
                           int(bucket_ms), int(argv[9]) if len(argv) == 10 else 1)
        print(json.dumps(result), flush=True)
        return 0
    if len(argv) == 5 and argv[0] == "echo":
        _, addr, port, nports, max_seconds = argv
        py_echo(addr, int(port), int(nports), float(max_seconds))
        return 0
    print("usage: python -m stack.bench.loadgen client ADDR PORT NPORTS SECONDS CONCURRENCY SIZE WAIT_EOF "
          "BUCKET_MS [REQUESTS] | echo ADDR PORT NPORTS MAX_SECONDS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
