"""Short connections per second: connect / send 100 B / receive the echo / close, against the kernel.

Four cases, each in a fresh stack (and so a fresh private namespace), first at the requested
concurrency and then at concurrency 1 (latency-bound; a shorter pass, see `c1_seconds_for`):

* `kernel_closes_first`: the kernel generator against an echo server on the stack; the kernel
  closes first, so the TIME-WAITs pile up in the kernel (counted from /proc/net/sockstat).
* `stack_closes_first`: against reply-close on the stack (read 100 B, reply, close); the generator
  waits for the stack's FIN before it closes, so the stack holds the TIME-WAITs for 2MSL -- except
  where the kernel client, which holds none, reuses a port and its SYN reopens the stack's record
  (RFC 6191; counted as TCPTimeWaitReopen).
* `stack_as_client`: the stack connects to a kernel echo server in the namespace and closes first
  (TIME-WAIT on the stack again). Its ports: it picks ephemeral ports toward `ports` kernel server
  ports in turn, and runs with `tw_reuse=True` (timestamps on) as a safety net; both are reported.
* `kernel_to_kernel`: the same generator against a kernel echo server in the same namespace: the
  ceiling that shows the generator is not what limits the other three.

The generator runs in its own process (native/loadgen.c, or a Python fallback; see loadgen.py),
so `cpu` (user+system seconds of this process / wall time) is the stack's own cost. The stack side
uses plain asyncio Protocols (not streams), so the numbers are the stack's, not StreamReader's.

Every destination is spread over `ports` consecutive ports because one 4-tuple space is only the
28k ephemeral ports of the namespace: at thousands of connections/s the kernel client (holding
TIME-WAIT in `kernel_closes_first` and `kernel_to_kernel`) would run out within 2MSL. It slows down
long before: Linux's connect() tries ports of one parity first, so once ~14k of them are in
TIME-WAIT it searches; measured with a single port, `kernel_closes_first` fell from 5.2k to 0.5k
connections/s within 4 s, all of it in the generator's connect(). The kernel's own TIME-WAIT table
in the namespace is capped by `tcp_max_tw_buckets` (131072 here), which `kernel_to_kernel` reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
import time
from collections.abc import Callable, Iterable
from typing import Any

from stack.bench.loadgen import GRACE, EchoServer, namespace_time_wait, run_client
from stack.bench.table import Column, render
from stack.runtime.stack import Stack
from stack.tcp.config import Config
from stack.tcp.host import PortInUse

CASES = ("kernel_closes_first", "stack_closes_first", "stack_as_client", "kernel_to_kernel")
SIZE = 100
PAYLOAD = b"x" * SIZE
DEFAULT_PORTS = 16
BASE_PORT = {"kernel_closes_first": 7000, "stack_closes_first": 8000, "stack_as_client": 9000,
             "kernel_to_kernel": 10000}
# Counters worth seeing beside the rates: anything unexpected (retransmissions, resets, internal
# errors) means the rate was not measured on a clean run.
COUNTERS = ("ActiveOpens", "PassiveOpens", "TW", "TCPTimeWaitOverflow", "TWRecycled", "TCPTimeWaitReopen",
            "RetransSegs", "OutRsts", "AttemptFails", "EstabResets", "ListenDrops", "InternalErrors")

Progress = Callable[[str], None]


def c1_seconds_for(seconds: float) -> float:
    """The concurrency-1 pass: a quarter of the run, at least 1 s and at most 5 s. Its rate is
    latency-bound and settles within a second, so a full-length pass would only cost time."""
    return max(1.0, min(5.0, seconds / 4))


class EchoProtocol(asyncio.Protocol):
    """The echo server as a bare Protocol: echoes, and closes once the peer's FIN arrived."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # the transport closes: our FIN goes second (CLOSE-WAIT -> LAST-ACK)


class ReplyCloseProtocol(asyncio.Protocol):
    """Reads one 100-byte message, replies and closes first (the stack ends in TIME-WAIT); with
    `linger0` it resets instead (SO_LINGER {1, 0}: RST, no TIME-WAIT)."""

    linger0 = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.got = 0

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        self.transport.write(data)
        if self.got >= SIZE:
            if self.linger0:
                self.transport.set_linger0()
            self.transport.close()


async def start_servers(case: str, base: int, ports: int, stack: Stack) -> None:
    """The servers of a case where the kernel connects to the stack, on `ports` ports from `base`:
    echo (the kernel closes first) or reply-close (the stack closes first)."""
    proto = EchoProtocol if case == "kernel_closes_first" else ReplyCloseProtocol
    for i in range(ports):
        await stack.create_server(proto, base + i, backlog=1024)


class _CallbackClient(asyncio.Protocol):
    """One client connection of stack_client_load: write the request on connect, close first once
    the echo is back, and report (exactly once) either way."""

    def __init__(self, report: Callable[[float, bool], None], started: float) -> None:
        self.report = report
        self.started = started
        self.got = 0
        self.reported = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport: Any = transport
        transport.write(PAYLOAD)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= SIZE and not self.reported:
            self.reported = True
            self.transport.close()  # we close first: the stack holds the TIME-WAIT
            self.report(self.started, True)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reported:
            self.reported = True
            self.report(self.started, False)


class TimeWaitTimeline:
    """TIME-WAIT counts (the stack's, and the kernel's in the namespace) and the stack's RSS,
    sampled every `period` seconds while a case runs: peaks, and a timeline to read the growth
    from. `sample` says where the counts come from (one process, or every worker)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.peak_tw = 0
        self.peak_rss = 0
        self.timeline: list[tuple[float, int, int]] = []  # (time, stack TIME-WAIT, kernel TIME-WAIT)
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    def record(self, stack_tw: int, kernel_tw: int) -> None:
        self.peak_tw = max(self.peak_tw, stack_tw)
        self.timeline.append((time.monotonic() - self._t0, stack_tw, kernel_tw))

    async def sample(self) -> None:
        raise NotImplementedError

    def by_tenth(self, seconds: float, column: int) -> list[int]:
        """The count at the end of each tenth of the run (the last sample at or before it, within
        half a sampling period)."""
        out = []
        for k in range(1, 11):
            at = k * seconds / 10
            before = [int(row[column]) for row in self.timeline if row[0] <= at + self.period / 2]
            out.append(before[-1] if before else 0)
        return out

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.period)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the sampling and wait for it to end."""
        self.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _Sampler(TimeWaitTimeline):
    """The timeline of the stack in this process, every 50 ms (and once more at the end)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(0.05)
        self.stack = stack
        self._page = os.sysconf("SC_PAGE_SIZE")

    def sample_now(self) -> None:
        host = self.stack.host
        stack_tw = len(host.time_wait) if host is not None else 0
        kernel_tw = namespace_time_wait(self.stack.netns) if self.stack.netns else -1
        self.record(stack_tw, kernel_tw)
        self.peak_rss = max(self.peak_rss, rss_bytes(self._page))

    async def sample(self) -> None:
        self.sample_now()

    def __enter__(self) -> _Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
        self.sample_now()


def rss_bytes(page: int | None = None) -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (page or os.sysconf("SC_PAGE_SIZE"))


def _cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def machine_ticks() -> tuple[int, int, int]:
    """(busy, softirq, total) clock ticks of all CPUs from /proc/stat. The kernel's receive path of
    what the stack writes to TUN runs as softirq inside our write(2) and, with IRQ time accounting,
    is charged to no process: this is where it shows."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already part of user
    return total - idle, values[6], total


async def settle(quiet_cores: float = 0.15, interval: float = 0.25, longest: float = 15.0) -> float:
    """Wait until the machine is quiet (below `quiet_cores` busy over one `interval`), at most
    `longest` seconds; returns how long that took. Deleting the previous case's namespace leaves
    the kernel freeing its sockets (10^5 TIME-WAIT of them after kernel_to_kernel) for seconds in
    kernel workers: measured, that ran into the next case's first tenth and made a 60 s run look
    faster at its end than at its start."""
    start = time.monotonic()
    before = machine_ticks()
    ncpu = os.cpu_count() or 1
    while time.monotonic() - start < longest:
        await asyncio.sleep(interval)
        now = machine_ticks()
        busy = ncpu * (now[0] - before[0]) / ((now[2] - before[2]) or 1)
        before = now
        if busy < quiet_cores:
            break
    return time.monotonic() - start


def bucket_ms_for(seconds: float) -> int:
    return max(1, int(seconds * 10))  # 100 buckets per run: a tenth is 10 of them


def tenths(buckets: list[int], bucket_ms: int, seconds: float) -> tuple[float, float]:
    """Rates (per second) in the first and the last tenth of a run, from completions per bucket."""
    n = max(1, round(seconds * 1000 / bucket_ms))
    tenth = max(1, n // 10)
    span = tenth * bucket_ms / 1000
    return sum(buckets[:tenth]) / span, sum(buckets[n - tenth:n]) / span


def load_figures(gen: dict[str, Any], bucket_ms: int, seconds: float, **more: Any) -> dict[str, Any]:
    """The start of a case's result, from what the load generator reports: the rate over the run
    and in its first and last tenth, the connections, then `more` (in order), the errors and the
    latency."""
    first, last = tenths(gen["buckets"], bucket_ms, seconds)
    conns = gen["connections"]
    return {
        "cps": conns / (gen["elapsed"] or seconds),
        "first_tenth_cps": first,
        "last_tenth_cps": last,
        "connections": conns,
        **more,
        "errors": {k: gen.get(k, 0) for k in ("connect_errors", "addr_unavailable", "reset_errors", "short_reads")
                   if gen.get(k)},
        "latency_us": {k: round(v, 1) for k, v in gen["latency_us"].items()},
    }


def segments_per_conn(stats: dict[str, int], conns: int) -> dict[str, float]:
    """The stack's segments in and out per connection (4 in / 3 out for a clean short connection
    the stack closes first)."""
    return {"in": round(stats.get("InSegs", 0) / conns, 2), "out": round(stats.get("OutSegs", 0) / conns, 2)}


def _config(case: str, msl: float) -> Config:
    if case == "stack_as_client":
        return Config(msl=msl, tw_reuse=True, timestamps=True)
    return Config(msl=msl)


async def stack_client_load(stack: Stack, port: int, ports: int, seconds: float, concurrency: int,
                        bucket_ms: int, peer: str | None = None) -> dict[str, Any]:
    """`concurrency` connect / send / receive / close loops from the stack for `seconds`.

    Driven by callbacks (Stack.connect and a Protocol), not a coroutine per connection: like the
    server side of the other cases, the client costs what an event-driven application costs."""
    loop = asyncio.get_running_loop()
    peer = peer or stack.peer_addr
    nb = int(seconds * 1000 / bucket_ms) + 2
    buckets = [0] * nb
    errors = {"connect_errors": 0, "addr_unavailable": 0, "reset_errors": 0}
    latencies: list[float] = []
    turn = itertools.count()
    t0 = loop.time()
    end = t0 + seconds
    finished = loop.create_future()
    in_flight = [0]

    def start_one() -> None:
        if loop.time() >= end:
            if in_flight[0] == 0 and not finished.done():
                finished.set_result(None)
            return
        try:
            stack.connect(_CallbackClient(done_one, loop.time()), peer, port + next(turn) % ports)
        except PortInUse:
            errors["addr_unavailable"] += 1
            loop.call_later(0.001, start_one)  # no free 4-tuple: wait for TIME-WAITs to age, not spin
            return
        except OSError:
            errors["connect_errors"] += 1
            loop.call_soon(start_one)
            return
        in_flight[0] += 1

    def done_one(started: float, ok: bool) -> None:
        in_flight[0] -= 1
        if ok:
            t1 = loop.time()
            if t1 < end:
                buckets[int((t1 - t0) * 1000 / bucket_ms)] += 1
                latencies.append((t1 - started) * 1e6)
        else:
            errors["reset_errors"] += 1
        start_one()

    for _ in range(concurrency):
        start_one()
    # A connection stuck on a lost segment would wait for its retransmission; the run ends on time.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(finished), seconds + 2.0)
    elapsed = min(loop.time(), end) - t0
    latencies.sort()
    lat = {"mean": sum(latencies) / len(latencies) if latencies else 0.0}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        lat[name] = latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
    return {"connections": len(latencies), "elapsed": elapsed, "bucket_ms": bucket_ms, "buckets": buckets,
            **errors, "latency_us": lat, "impl": "stack (asyncio Protocol)"}


async def run_case(case: str, seconds: float, concurrency: int, *, msl: float = 30.0,
                   ports: int = DEFAULT_PORTS, impl: str = "auto", ipv6: bool = False) -> dict[str, Any]:
    """One case at one concurrency in a fresh stack; the measurements of that run (over IPv6: the
    kernel and the stack use their 2001:2:: addresses)."""
    if case not in CASES:
        raise ValueError(f"unknown case {case!r} (choose from {', '.join(CASES)})")
    cfg = _config(case, msl)
    bucket_ms = bucket_ms_for(seconds)
    base = BASE_PORT[case]
    settled = await settle()
    async with Stack(config=cfg) as stack:
        netns = stack.netns
        assert netns is not None and stack.host is not None
        ours, theirs = (stack.addr6, stack.peer_addr6) if ipv6 else (stack.addr, stack.peer_addr)
        assert ours is not None and theirs is not None
        server_cpu: Callable[[], float] | None = None
        async with contextlib.AsyncExitStack() as resources:
            if case in ("kernel_closes_first", "stack_closes_first"):
                await start_servers(case, base, ports, stack)
            else:
                srv = await resources.enter_async_context(
                    EchoServer(netns, theirs, base, ports, max_seconds=seconds + 2 * GRACE, impl=impl))
                server_cpu = srv.cpu_seconds
            with _Sampler(stack) as sampler:
                srv_cpu0 = server_cpu() if server_cpu else 0.0
                m0 = machine_ticks()
                u0, s0 = _cpu()
                w0 = time.monotonic()
                if case == "stack_as_client":
                    gen = await stack_client_load(stack, base, ports, seconds, concurrency, bucket_ms, theirs)
                else:
                    target = theirs if case == "kernel_to_kernel" else ours
                    gen = await run_client(netns, target, base, ports, seconds, concurrency, size=SIZE,
                                           wait_eof=case == "stack_closes_first", bucket_ms=bucket_ms, impl=impl)
                wall = time.monotonic() - w0
                u1, s1 = _cpu()
                m1 = machine_ticks()
                srv_cpu = (server_cpu() - srv_cpu0) if server_cpu else 0.0
            stack_tw_end = len(stack.host.time_wait)
            stats = stack.host.stats()
            stats["InternalErrors"] = stack.internal_errors
    elapsed = gen["elapsed"] or seconds
    conns = gen["connections"]
    cpu_s = (u1 - u0) + (s1 - s0)
    result = load_figures(gen, bucket_ms, seconds, misrouted=stats.get("TCPMisrouted", 0))
    if case in ("stack_closes_first", "stack_as_client"):
        result.update(peak_time_wait=sampler.peak_tw, time_wait_side="stack", time_wait_at_end=stack_tw_end,
                      time_wait_by_tenth=sampler.by_tenth(seconds, 1))
    else:
        result.update(peak_time_wait=gen.get("peak_time_wait", -1), time_wait_side="kernel (/proc/net/sockstat)",
                      time_wait_by_tenth=sampler.by_tenth(seconds, 2))
    if case == "kernel_to_kernel":
        # Nothing runs in the stack here: the CPU worth reporting is the kernel echo server's.
        result.update(cpu=srv_cpu / wall, cpu_of="kernel echo server process")
    else:
        result.update(cpu=cpu_s / wall, cpu_user=(u1 - u0) / wall, cpu_sys=(s1 - s0) / wall,
                      cpu_of="stack process", cpu_us_per_conn=cpu_s / conns * 1e6 if conns else None)
        if server_cpu is not None:
            result["kernel_server_cpu"] = srv_cpu / wall
    result["rss_mb"] = sampler.peak_rss / 2**20
    ticks = (m1[2] - m0[2]) or 1
    ncpu = os.cpu_count() or 1
    # Whole-machine view (other processes included): busy cores, and the softirq share of them.
    busy = ncpu * (m1[0] - m0[0]) / ticks
    softirq = ncpu * (m1[1] - m0[1]) / ticks  # the kernel's packet processing of this run's traffic
    ours = cpu_s / wall + srv_cpu / wall + gen.get("cpu_seconds", 0.0) / elapsed + softirq
    # `other_cores` well above 0 means something else ran on the machine: the rates are low.
    result["machine"] = {"busy_cores": round(busy, 2), "softirq_cores": round(softirq, 2),
                         "other_cores": round(max(0.0, busy - ours), 2), "cpus": ncpu,
                         "settle_seconds": round(settled, 2)}
    if conns and case != "kernel_to_kernel":
        result["segments_per_conn"] = segments_per_conn(stats, conns)
    if "cpu_seconds" in gen:
        result["loadgen_cpu"] = gen["cpu_seconds"] / elapsed
    result["loadgen"] = gen["impl"]
    result["stack_counters"] = {k: stats.get(k, 0) for k in COUNTERS if stats.get(k)}
    if case == "stack_as_client":
        result["ports_note"] = (f"stack-chosen ephemeral ports toward {ports} kernel ports, "
                                "Config(tw_reuse=True, timestamps=True)")
    return result


async def run_cps(seconds: float = 10.0, concurrency: int = 16, *, c1_seconds: float | None = None,
                  cases: Iterable[str] = CASES, msl: float = 30.0, ports: int = DEFAULT_PORTS, impl: str = "auto",
                  progress: Progress | None = None, workers: list[int] | None = None,
                  ipv6: bool = False) -> dict[str, Any]:
    """Every case at `concurrency` for `seconds`, then at concurrency 1 for `c1_seconds`.

    Returns the contract object of `tcpstack bench cps --json`: one entry per case with `cps`,
    `first_tenth_cps`, `last_tenth_cps`, `peak_time_wait`, `cpu`, `rss_mb`, `c1_cps` (and more),
    plus `seconds` and `concurrency`.
    """
    if seconds <= 0 or concurrency < 1 or ports < 1:
        raise ValueError("seconds, concurrency and ports must be positive")
    c1 = c1_seconds if c1_seconds is not None else c1_seconds_for(seconds)
    report: dict[str, Any] = {}
    for case in cases:
        if progress:
            progress(f"{case}: {seconds:g} s at concurrency {concurrency} ...")
        result = await run_case(case, seconds, concurrency, msl=msl, ports=ports, impl=impl, ipv6=ipv6)
        if progress:
            progress(f"{case}: {result['cps']:,.0f} conn/s; {c1:g} s at concurrency 1 ...")
        single = await run_case(case, c1, 1, msl=msl, ports=ports, impl=impl, ipv6=ipv6)
        result["c1_cps"] = single["cps"]
        result["c1_latency_us"] = single["latency_us"]
        result["c1_cpu"] = single["cpu"]
        report[case] = result
    report.update(family="ipv6" if ipv6 else "ipv4", seconds=seconds, concurrency=concurrency, c1_seconds=c1, msl=msl,
                  time_wait_seconds=2 * msl, ports_per_destination=ports, payload_bytes=SIZE)
    if "kernel_to_kernel" in report:
        k2k = report["kernel_to_kernel"]["cps"]
        report["kernel_to_kernel_ratio"] = {case: (k2k / report[case]["cps"] if report[case]["cps"] else None)
                                            for case in CASES[:3] if case in report}
    if workers:
        from stack.bench.cps_workers import add_worker_runs

        await add_worker_runs(report, workers, seconds, concurrency, cases, msl=msl, ports=ports, impl=impl,
                              progress=progress, ipv6=ipv6)
    return report


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    """The human-readable form of a `run_cps` report."""
    lines = [
        f"tcpstack bench cps: connect / send {report.get('payload_bytes', SIZE)} B / echo / close, "
        f"{'over IPv6, ' if report.get('family') == 'ipv6' else ''}"
        f"{report['seconds']:g} s at concurrency {report['concurrency']}, "
        f"{report.get('c1_seconds', 0):g} s at concurrency 1; 2MSL = {report.get('time_wait_seconds', 0):g} s",
        "",
    ]
    columns = [
        Column("rate", "conn/s", lambda r: r["cps"]),
        Column("first 10%", "conn/s", lambda r: r["first_tenth_cps"]),
        Column("last 10%", "conn/s", lambda r: r["last_tenth_cps"]),
        Column("peak TIME-WAIT", "sockets", lambda r: r["peak_time_wait"]),
        Column("TIME-WAIT on", "", lambda r: "stack" if r.get("time_wait_side") == "stack" else "kernel"),
        Column("stack CPU", "cores", lambda r: r["cpu"], ".2f"),
        Column("CPU per conn", "us", lambda r: r.get("cpu_us_per_conn")),
        Column("stack RSS", "MB", lambda r: r["rss_mb"]),
        Column("load gen CPU", "cores", lambda r: r.get("loadgen_cpu"), ".2f"),
        Column("rate at c=1", "conn/s", lambda r: r["c1_cps"]),
        Column("latency at c=1", "us, mean", lambda r: r.get("c1_latency_us", {}).get("mean")),
    ]
    lines += render(columns, [(case, report[case]) for case in CASES if case in report])
    lines.append("")
    ratio = report.get("kernel_to_kernel_ratio")
    if ratio:
        lines.append("kernel_to_kernel / case: " + ", ".join(f"{c} {_fmt(v, '.1f')}x" for c, v in ratio.items()))
    for case in CASES:
        r = report.get(case)
        if r and r.get("errors"):
            lines.append(f"{case} errors: " + ", ".join(f"{k}={v}" for k, v in r["errors"].items()))
    disturbed = [c for c in CASES if c in report and report[c].get("machine", {}).get("other_cores", 0) > 0.25]
    if disturbed:
        lines.append(f"note: other processes used CPU during {', '.join(disturbed)}: those rates are low")
    lines.append("stack CPU = user+system seconds / wall seconds of the stack process (for kernel_to_kernel: of "
                 "the kernel echo server); load gen CPU = the load generator's; first/last 10% = the rate in the "
                 "first and last tenth of the run.")
    if "stack_as_client" in report:
        lines.append(f"stack_as_client ports: {report['stack_as_client'].get('ports_note', '')}; "
                     f"TWRecycled={report['stack_as_client']['stack_counters'].get('TWRecycled', 0)}")
    loadgens = {report[c].get("loadgen") for c in CASES if c in report and c != "stack_as_client"}
    lines.append(f"load generator: {', '.join(sorted(str(g) for g in loadgens))}, in its own process in the "
                 "namespace; destinations spread over "
                 f"{report.get('ports_per_destination', DEFAULT_PORTS)} ports each")
    return "\n".join(lines)
