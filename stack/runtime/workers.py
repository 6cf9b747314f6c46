"""N worker processes on one multi-queue TUN device: a whole stack per core, sharing nothing.

Python's interpreter lock makes a process, not a thread, the unit that runs on a core. So, as mTCP
and F-Stack do per core, each worker owns one queue of the device (stack.link.tun, IFF_MULTI_QUEUE)
and a whole `Host` — its own timer wheel, TIME-WAIT table and connections — with the application's
listeners in every worker. The kernel steers each TCP flow to the queue `(sport ^ dport) % N`
(stack.link.steering); a worker connecting out picks a local port that maps to itself, and a segment
that reaches a worker with no state for it while the function names another worker is counted as
`TCPMisrouted` (never answered with a RST, which would kill the owner's connection).

The application is a callable `app(stack)` (an `async def` or a plain function) run in every worker
with that worker's `Stack` (its `.worker` and `.workers` say which one it is); it starts servers or
clients the way a single-process program does. Workers are forked after the device is open, so the
callable may be a closure; keeping it a module-level function leaves room for a spawn start later.

The parent keeps every queue's fd open (a queue whose last fd closes leaves the device, and the
modulo would then move every flow), talks to each worker over a pipe (`ask`: counters, socket rows,
CPU time, the application's result), notices a worker that died (`dead()`) while the others serve on,
and on `aclose` stops them all (SIGTERM, then SIGKILL), closes the device and deletes the namespace.
Captures: each worker writes its own pcap/trace beside the target; `aclose` merges them into the
target in time order (stack.observe.merge).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from stack.faults.engine import FaultEngine
from stack.link.steering import owner
from stack.runtime.stack import Stack
from stack.tcp.config import Config

log = logging.getLogger("tcpstack")

App = Callable[[Stack], Awaitable[Any] | Any]
STOP_GRACE = 3.0  # seconds a worker gets to stop on SIGTERM before SIGKILL
ASK_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def worker_count(text: str | int) -> int:
    """`--workers N` or `auto` (one per core)."""
    if text == "auto":
        return len(os.sched_getaffinity(0))
    n = int(text)
    if not 1 <= n <= 64:
        raise ValueError(f"workers {n} out of range 1..64")
    return n


def part_path(path: str, index: int) -> str:
    """Where worker `index` writes its share of a capture file that is merged at the end."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.w{index}")


def derive_seed(seed: int, index: int) -> int:
    """Worker `index`'s fault seed: different per worker, the same on every run with `seed`."""
    return random.Random(f"tcpstack-worker/{seed}/{index}").getrandbits(63)


@dataclass
class WorkerOptions:
    """What every worker builds its Stack from (everything but the queue)."""

    config: Config = field(default_factory=Config)
    addr: str = "198.18.0.2"
    peer_addr: str = "198.18.0.1"
    prefix: int = 24
    # The same device carries IPv6 (None: IPv4 only; the link drops the defaults below MTU 1280).
    addr6: str | None = "2001:2::2"
    peer_addr6: str | None = "2001:2::1"
    prefix6: int = 64
    offload: bool = True
    faults: FaultEngine | None = None
    pcap: str | None = None  # a path; "-" is merged to standard output at the end
    trace: str | None = None


class Workers:
    """The pool: the device, the namespace and N worker processes (see the module docstring)."""

    def __init__(self, count: int, app: App, options: WorkerOptions | None = None, *,
                 netns: str | None = None, steering: str = "ports", hold: bool = False) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self.count = count
        self.app = app
        self.options = options or WorkerOptions()
        self.steering = steering
        # hold: the application starts only on `go()` (a benchmark first starts the kernel side
        # in the namespace the pool made); else at once, and "ready" waits for its first turn.
        self.hold = hold
        self._netns_name = netns
        self.link: Any = None
        self._own_netns: Any = None
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._reported_dead: set[int] = set()
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._owner: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._ready: list[asyncio.Future[Any]] = []
        self.started_wall = time.time()

    @property
    def netns(self) -> str | None:
        return getattr(self.link, "netns", None)

    @property
    def pids(self) -> list[int | None]:
        return [p.pid for p in self._procs]

    async def __aenter__(self) -> Workers:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        from stack.link.netns import Netns
        from stack.link.tun import TunLink

        opts = self.options
        ns = Netns(self._netns_name) if self._netns_name else None
        if ns is not None:
            ns.create()
        self._own_netns = ns
        link = TunLink(ns, addr=opts.addr, peer_addr=opts.peer_addr, prefix=opts.prefix, mtu=opts.config.mtu,
                       addr6=opts.addr6, peer_addr6=opts.peer_addr6, prefix6=opts.prefix6,
                       offload=opts.offload, queues=self.count, steering=self.steering)
        try:
            link.open()
        except BaseException:
            if ns is not None:
                ns.delete()
            raise
        self.link = link
        # What the link settled on (no IPv6 below MTU 1280) is what every worker's host answers as.
        opts = self.options = replace(opts, addr6=link.addr6, peer_addr6=link.peer_addr6)
        ctx = multiprocessing.get_context("fork")
        loop = asyncio.get_running_loop()
        try:
            for index in range(self.count):
                parent_end, child_end = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, name=f"tcpstack-worker-{index}", daemon=True,
                                   args=(index, self.count, link, child_end, self.app, opts, self.steering,
                                         self.hold))
                proc.start()
                child_end.close()
                self._procs.append(proc)
                self._pipes.append(parent_end)
                self._ready.append(loop.create_future())
                self._listen(index)
            # Each worker says "ready" once its listeners exist: only then may the kernel connect.
            for reply in await all_within(self._ready, ASK_TIMEOUT):
                if isinstance(reply, BaseException):
                    raise reply
        except BaseException:
            await self.aclose()
            raise

    # ------------------------------------------------------------------ talking to workers
    # Requests are (id, cmd), replies (id, value): a slow answer ("result" waits for the
    # application) does not hold up others on the same pipe. The first message is "ready".
    def _listen(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        pipe = self._pipes[index]

        def on_readable() -> None:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                loop.remove_reader(pipe.fileno())
                self._fail_pending(index, WorkerGone(f"worker {index} is gone"))
                return
            fut: asyncio.Future[Any] | None
            if message == "ready" or isinstance(message, WorkerGone):  # started, or failed to
                fut = self._ready[index]
            else:
                ident, message = message
                fut = self._pending.pop(ident, None)
            if fut is not None and not fut.done():
                fut.set_result(message)

        loop.add_reader(pipe.fileno(), on_readable)

    def _fail_pending(self, index: int, exc: WorkerGone) -> None:
        if not self._ready[index].done():
            self._ready[index].set_result(exc)
        for ident, (worker, fut) in list(self._owner.items()):
            if worker == index:
                self._owner.pop(ident, None)
                self._pending.pop(ident, None)
                if not fut.done():
                    fut.set_result(exc)

    async def ask(self, cmd: Any, timeout: float = ASK_TIMEOUT, only: int | None = None) -> list[Any]:
        """Every worker's answer to `cmd` ("stats", "rows", "cpu", "rss", "result", "go"), in order
        of the workers (or worker `only`'s alone); a dead worker's entry is a WorkerGone."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for index, pipe in enumerate(self._pipes):
            if only is not None and index != only:
                continue
            fut: asyncio.Future[Any] = loop.create_future()
            futures.append(fut)
            if not self._procs[index].is_alive():
                fut.set_result(WorkerGone(f"worker {index} is not running"))
                continue
            ident = next(self._ids)
            self._pending[ident] = fut
            self._owner[ident] = (index, fut)
            try:
                pipe.send((ident, cmd))
            except OSError as exc:
                fut.set_result(WorkerGone(str(exc)))
        try:
            return await all_within(futures, timeout)
        finally:
            for fut in futures:
                for ident, (_w, f) in list(self._owner.items()):
                    if f is fut:
                        self._owner.pop(ident, None)
                        self._pending.pop(ident, None)

    async def call(self, index: int, fn: Callable[..., Any], *args: Any, timeout: float = ASK_TIMEOUT) -> Any:
        """`fn(stack, *args)` (awaited if it is a coroutine function) in worker `index`, with that
        worker's Stack; its return value, or a WorkerGone raised. `fn` and the arguments travel
        by pickle: a module-level function."""
        reply = (await self.ask(("call", fn, args), timeout, only=index))[0]
        if isinstance(reply, WorkerGone):
            raise reply
        return reply

    async def go(self) -> None:
        """Start the application in every worker of a pool made with hold=True."""
        await self.ask("go")

    async def counters(self) -> dict[str, int]:
        """Every worker's counters summed (gauges like CurrEstab and TimeWait add up too)."""
        total: dict[str, int] = {}
        for stats in await self.ask("stats"):
            if isinstance(stats, dict):
                for name, value in stats.items():
                    total[name] = total.get(name, 0) + value
        return total

    async def rows(self) -> list[dict[str, Any]]:
        """Every worker's socket rows (stack.observe.snapshot), concatenated."""
        rows: list[dict[str, Any]] = []
        for part in await self.ask("rows"):
            if isinstance(part, list):
                rows.extend(part)
        return rows

    async def cpu_seconds(self) -> float:
        """User + system CPU seconds of every worker process so far."""
        return sum(x for x in await self.ask("cpu") if isinstance(x, float))

    def dead(self) -> list[tuple[int, int | None]]:
        """(worker, exit code) of every worker that is no longer running."""
        return [(i, p.exitcode) for i, p in enumerate(self._procs) if not p.is_alive()]

    def report_dead(self) -> list[tuple[int, int | None]]:
        """The workers that died since the last call (for a supervisor to log once each)."""
        new = [(i, code) for i, code in self.dead() if i not in self._reported_dead]
        self._reported_dead.update(i for i, _ in new)
        return new

    # ------------------------------------------------------------------ teardown
    async def aclose(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            while proc.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.is_alive():
                proc.kill()
            proc.join(1.0)
        loop = asyncio.get_running_loop()
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(pipe.fileno())
            pipe.close()
        self._pipes = []
        if self.link is not None:
            self.link.close()
            self.link = None
        if self._own_netns is not None:
            self._own_netns.delete()
            self._own_netns = None
        opts = self.options
        if opts.pcap is not None or opts.trace is not None:
            from stack.observe.merge import merge_pcaps, merge_traces

            if opts.pcap is not None:
                merge_pcaps([part_path(opts.pcap, i) for i in range(self.count)], opts.pcap)
            if opts.trace is not None:
                merge_traces([part_path(opts.trace, i) for i in range(self.count)], opts.trace)


async def all_within(futures: list[asyncio.Future[Any]], timeout: float) -> list[Any]:
    """Every future's result, within `timeout` seconds. When the wait ends early (a timeout, or
    the caller was cancelled: the live sampler is, at the end of every benchmark run), wait_for
    cancels the gathered future and never looks at its outcome; looking at it here keeps asyncio
    from reporting "_GatheringFuture exception was never retrieved" on the terminal."""
    gathered = asyncio.gather(*futures)
    try:
        return list(await asyncio.wait_for(gathered, timeout))
    finally:
        if gathered.done() and not gathered.cancelled():
            gathered.exception()


class WorkerGone(Exception):
    """A worker did not answer: it exited (or died) before or while asked."""


# ---------------------------------------------------------------------- inside a worker
def _worker_main(index: int, count: int, link: Any, pipe: multiprocessing.connection.Connection, app: App,
                 opts: WorkerOptions, steering: str, hold: bool) -> None:
    # Forked from a process that may be inside its event loop: nothing of its loop is ours (its
    # epoll fd and signal wake-up fd are shared with the parent: touching them would wake it).
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    asyncio.set_event_loop_policy(None)
    asyncio._set_running_loop(None)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # the parent killed outright: do not linger
    from stack.link.tun import TunQueue

    fds = link.queue_fds()
    for i, fd in enumerate(fds):
        if i != index:
            with contextlib.suppress(OSError):
                os.close(fd)
    queue = TunQueue(fds[index], index, name=link.name, netns=link.netns, offload=link.offload)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(index, count, queue, pipe, app, opts, steering, hold))
    finally:
        loop.close()
    os._exit(0)


async def _serve(index: int, count: int, queue: Any, pipe: multiprocessing.connection.Connection, app: App,
                 opts: WorkerOptions, steering: str, hold: bool) -> None:
    loop = asyncio.get_running_loop()
    faults = opts.faults
    if faults is not None:
        faults = FaultEngine(faults.rules, seed=derive_seed(faults.seed, index))
    stack = Stack(queue, config=opts.config, addr=opts.addr, peer_addr=opts.peer_addr, prefix=opts.prefix,
                  addr6=opts.addr6, peer_addr6=opts.peer_addr6, prefix6=opts.prefix6,
                  faults=faults, pcap=part_path(opts.pcap, index) if opts.pcap else None,
                  trace=part_path(opts.trace, index) if opts.trace else None)
    stop = loop.create_future()

    def on_sigterm() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    await stack.start()
    stack.worker = index  # after start: a Stack with workers > 1 would start a pool of its own
    stack.workers = count
    assert stack.host is not None
    if count > 1:
        # Also with steering="automq" (kept to measure it): the function still splits the local
        # ports between the workers, and counts what tun delivered elsewhere than it says.
        stack.host.owns_flow = lambda lport, rport: owner(lport, rport, count) == index
    result: asyncio.Future[Any] = loop.create_future()
    go = asyncio.Event()
    if not hold:
        go.set()

    async def run_app() -> None:
        await go.wait()
        try:
            value = app(stack)
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            result.set_result(value)
        except Exception as exc:
            log.exception("worker %d: the application failed", index)
            result.set_result(WorkerGone(f"application failed: {type(exc).__name__}: {exc}"))

    app_task = loop.create_task(run_app())
    # "ready" once the application had its first turn (its listeners exist).
    await asyncio.sleep(0)
    for _ in range(3):
        if app_task.done():
            break
        await asyncio.sleep(0)
    # An application that failed at once (a port in use) fails the start of the whole pool.
    failed = result.result() if result.done() and isinstance(result.result(), WorkerGone) else None
    pipe.send(failed or "ready")

    answering: set[asyncio.Task[None]] = set()  # referenced until done (asyncio keeps weak ones)

    def on_request() -> None:
        # Read here, not in the task: the fd stays readable until the request is read.
        try:
            cmd = pipe.recv()
        except (EOFError, OSError):
            loop.remove_reader(pipe.fileno())
            if not stop.done():
                stop.set_result(None)  # the parent is gone
            return
        ident, cmd = cmd
        if cmd == "go":
            go.set()
        task = loop.create_task(_answer(ident, cmd, pipe, stack, result))
        answering.add(task)
        task.add_done_callback(answering.discard)

    loop.add_reader(pipe.fileno(), on_request)
    try:
        await stop
    finally:
        loop.remove_reader(pipe.fileno())
        app_task.cancel()
        with contextlib.suppress(BaseException):
            await app_task
        await stack.aclose()


async def _answer(ident: int, cmd: Any, pipe: multiprocessing.connection.Connection, stack: Stack,
                  result: asyncio.Future[Any]) -> None:
    reply: Any
    if cmd == "stats":
        reply = stack.counters()
    elif cmd == "rows":
        from stack.observe.snapshot import socket_rows

        assert stack.host is not None
        reply = [row.to_json() for row in socket_rows(stack.host, stack.now())]
    elif cmd == "cpu":
        ru = resource.getrusage(resource.RUSAGE_SELF)
        reply = ru.ru_utime + ru.ru_stime
    elif cmd == "rss":
        with open("/proc/self/statm") as f:
            reply = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    elif cmd == "result":
        reply = await result
    elif cmd == "go":
        reply = True
    elif isinstance(cmd, tuple) and cmd[0] == "call":
        _, fn, args = cmd
        try:
            reply = fn(stack, *args)
            if asyncio.iscoroutine(reply):
                reply = await reply
        except Exception as exc:
            log.exception("worker %d: %s failed", stack.worker, getattr(fn, "__name__", fn))
            reply = WorkerGone(f"{getattr(fn, '__name__', fn)} failed: {type(exc).__name__}: {exc}")
    else:
        reply = WorkerGone(f"unknown request {cmd!r}")
    with contextlib.suppress(OSError):
        pipe.send((ident, reply))
