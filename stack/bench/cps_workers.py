"""`bench cps --workers 1,2`: the cps cases with the stack in N worker processes (stack.runtime.workers).

One worker count is the stack as `run_case` measures it (one process, the stack in the benchmark's own
process). More than one: a multi-queue TUN device and N worker processes, each with the case's
application: the servers of `kernel_closes_first` / `stack_closes_first` in every worker, or for
`stack_as_client` a share of the concurrency (`concurrency // N`, the rest to the first workers)
from every worker. The CPU per connection is the user+system time of ALL the worker processes over
the run, divided by the connections; `misrouted` is the workers' summed TCPMisrouted (a flow that
reached a worker that does not own it), which must stay 0.

The report (`run_cps(..., workers=[1, 2])`) holds, beside what a plain run holds:

    "workers": {"1": {CASE: {"cps", "misrouted", "cpu_us_per_conn", ...}, ...}, "2": {...}},
    "kernel_to_kernel": {"cps": ...}   (measured once, in the same run)
    "workers_ratio": {"1": {CASE: stack cps / kernel_to_kernel cps}, "2": {...}}
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from stack.bench.cps import (
    BASE_PORT,
    COUNTERS,
    SIZE,
    TimeWaitTimeline,
    _config,
    bucket_ms_for,
    load_figures,
    machine_ticks,
    segments_per_conn,
    settle,
    stack_client_load,
    start_servers,
)
from stack.bench.loadgen import GRACE, EchoServer, namespace_time_wait, run_client
from stack.runtime.stack import Stack
from stack.runtime.workers import WorkerOptions, Workers


async def _clients(base: int, ports: int, seconds: float, concurrency: int, workers: int, bucket_ms: int,
                   ipv6: bool, stack: Stack) -> dict[str, Any]:
    share = concurrency // workers + (1 if stack.worker < concurrency % workers else 0)
    peer = stack.peer_addr6 if ipv6 else stack.peer_addr
    return await stack_client_load(stack, base, ports, seconds, max(1, share), bucket_ms, peer)


def _merge_loads(parts: list[Any]) -> dict[str, Any]:
    """The workers' stack_client_load results as one: buckets and counts summed, latency mean
    weighted, percentiles the worst worker's."""
    loads = [p for p in parts if isinstance(p, dict)]
    if len(loads) != len(parts):
        raise RuntimeError(f"a worker failed: {[p for p in parts if not isinstance(p, dict)]}")
    conns = sum(p["connections"] for p in loads)
    width = max(len(p["buckets"]) for p in loads)
    buckets = [sum(p["buckets"][i] for p in loads if i < len(p["buckets"])) for i in range(width)]
    lat = {"mean": sum(p["latency_us"]["mean"] * p["connections"] for p in loads) / conns if conns else 0.0}
    for q in ("p50", "p90", "p99"):
        lat[q] = max(p["latency_us"][q] for p in loads)
    merged: dict[str, Any] = {"connections": conns, "elapsed": max(p["elapsed"] for p in loads),
                              "buckets": buckets, "latency_us": lat, "impl": loads[0]["impl"]}
    for key in ("connect_errors", "addr_unavailable", "reset_errors"):
        merged[key] = sum(p.get(key, 0) for p in loads)
    return merged


class _PoolSampler(TimeWaitTimeline):
    """The timeline of the workers (TIME-WAIT and RSS summed) every 100 ms."""

    def __init__(self, pool: Workers) -> None:
        super().__init__(0.1)
        self.pool = pool

    async def sample(self) -> None:
        netns = self.pool.netns
        stats = await self.pool.ask("stats")
        stack_tw = sum(s.get("TimeWait", 0) for s in stats if isinstance(s, dict))
        self.record(stack_tw, namespace_time_wait(netns) if netns else -1)
        rss = await self.pool.ask("rss")
        self.peak_rss = max(self.peak_rss, sum(r for r in rss if isinstance(r, int)))


async def run_case_workers(case: str, seconds: float, concurrency: int, workers: int, *, msl: float = 30.0,
                           ports: int = 16, impl: str = "auto", steering: str = "ports",
                           ipv6: bool = False) -> dict[str, Any]:
    """One stack case with the stack in `workers` processes; the same measurements as run_case,
    plus `misrouted` and `workers` (over IPv6 with `ipv6`: the 2001:2:: addresses)."""
    if case == "kernel_to_kernel":
        raise ValueError("kernel_to_kernel has no stack: run it with run_case")
    cfg = _config(case, msl)
    bucket_ms = bucket_ms_for(seconds)
    base = BASE_PORT[case]
    app: Callable[[Stack], Any]
    if case == "stack_as_client":
        app = partial(_clients, base, ports, seconds, concurrency, workers, bucket_ms, ipv6)
    else:
        app = partial(start_servers, case, base, ports)
    settled = await settle()
    async with Workers(workers, app, WorkerOptions(config=cfg), hold=True, steering=steering) as pool:
        netns = pool.netns
        assert netns is not None
        link = pool.link
        ours, theirs = (link.addr6, link.peer_addr6) if ipv6 else (link.addr, link.peer_addr)
        async with contextlib.AsyncExitStack() as resources:
            if case == "stack_as_client":
                await resources.enter_async_context(
                    EchoServer(netns, theirs, base, ports, max_seconds=seconds + 2 * GRACE, impl=impl))
            sampler = _PoolSampler(pool)
            m0 = machine_ticks()
            cpu0 = await pool.cpu_seconds()
            w0 = time.monotonic()
            sampler.start()
            await pool.go()
            if case == "stack_as_client":
                gen = _merge_loads(await pool.ask("result", timeout=seconds + 30))
            else:
                gen = await run_client(netns, ours, base, ports, seconds, concurrency, size=SIZE,
                                       wait_eof=case == "stack_closes_first", bucket_ms=bucket_ms, impl=impl)
            wall = time.monotonic() - w0
            cpu1 = await pool.cpu_seconds()
            m1 = machine_ticks()
            await sampler.stop()
            stats = await pool.counters()
            dead = pool.dead()
    if dead:
        raise RuntimeError(f"worker(s) died during the run: {dead}")
    elapsed = gen["elapsed"] or seconds
    conns = gen["connections"]
    cpu_s = cpu1 - cpu0
    ncpu = os.cpu_count() or 1
    ticks = (m1[2] - m0[2]) or 1
    result = load_figures(gen, bucket_ms, seconds, workers=workers, misrouted=stats.get("TCPMisrouted", 0))
    result.update({
        "cpu": cpu_s / wall,
        "cpu_of": f"{workers} worker processes",
        "cpu_us_per_conn": cpu_s / conns * 1e6 if conns else None,
        "rss_mb": sampler.peak_rss / 2**20,
        "machine": {"busy_cores": round(ncpu * (m1[0] - m0[0]) / ticks, 2),
                    "softirq_cores": round(ncpu * (m1[1] - m0[1]) / ticks, 2), "cpus": ncpu},
        "loadgen": gen["impl"],
        "stack_counters": {k: stats.get(k, 0) for k in (*COUNTERS, "TCPMisrouted") if stats.get(k)},
    })
    if "cpu_seconds" in gen:
        result["loadgen_cpu"] = gen["cpu_seconds"] / elapsed
    # As run_case: CPU used beyond this run's own processes means the machine was shared.
    ours = result["cpu"] + result.get("loadgen_cpu", 0.0) + result["machine"]["softirq_cores"]
    result["machine"]["other_cores"] = round(max(0.0, result["machine"]["busy_cores"] - ours), 2)
    result["machine"]["settle_seconds"] = round(settled, 2)
    if case == "kernel_closes_first":
        result.update(peak_time_wait=gen.get("peak_time_wait", -1), time_wait_side="kernel (/proc/net/sockstat)",
                      time_wait_by_tenth=sampler.by_tenth(seconds, 2))
    else:
        result.update(peak_time_wait=sampler.peak_tw, time_wait_side="stack",
                      time_wait_by_tenth=sampler.by_tenth(seconds, 1))
    if conns:
        result["segments_per_conn"] = segments_per_conn(stats, conns)
    return result


async def add_worker_runs(report: dict[str, Any], workers: list[int], seconds: float, concurrency: int,
                          cases: Iterable[str], *, msl: float, ports: int, impl: str,
                          progress: Callable[[str], None] | None = None, ipv6: bool = False) -> None:
    """Put `workers` and `workers_ratio` into a run_cps report that already holds the one-process
    cases (the "1" entry) and kernel_to_kernel (measured in the same run)."""
    stack_cases = [c for c in cases if c != "kernel_to_kernel"]
    by_count: dict[str, dict[str, Any]] = {}
    for n in workers:
        entry: dict[str, Any] = {}
        for case in stack_cases:
            if n == 1 and case in report:
                entry[case] = report[case]
                continue
            if progress:
                progress(f"{case} with {n} workers: {seconds:g} s at concurrency {concurrency} ...")
            entry[case] = await run_case_workers(case, seconds, concurrency, n, msl=msl, ports=ports, impl=impl,
                                                 ipv6=ipv6)
            if progress:
                progress(f"{case} with {n} workers: {entry[case]['cps']:,.0f} conn/s, "
                         f"misrouted {entry[case]['misrouted']}")
        by_count[str(n)] = entry
    report["workers"] = by_count
    k2k = report.get("kernel_to_kernel", {}).get("cps")
    if k2k:
        report["workers_ratio"] = {n: {case: r["cps"] / k2k for case, r in entry.items()}
                                   for n, entry in by_count.items()}


def format_workers(report: dict[str, Any]) -> str:
    """The --workers part of the table: every case at every worker count beside kernel_to_kernel."""
    from stack.bench.table import Column, render

    by_count = report.get("workers")
    if not by_count:
        return ""
    k2k = report.get("kernel_to_kernel", {}).get("cps")
    columns = [
        Column("rate", "conn/s", lambda r: r["cps"]),
        Column("x kernel", "ratio", lambda r: r["cps"] / k2k if k2k else None, ".2f"),
        Column("first 10%", "conn/s", lambda r: r["first_tenth_cps"]),
        Column("last 10%", "conn/s", lambda r: r["last_tenth_cps"]),
        Column("CPU per conn", "us, all workers", lambda r: r.get("cpu_us_per_conn")),
        Column("stack CPU", "cores", lambda r: r["cpu"], ".2f"),
        Column("misrouted", "segments", lambda r: r.get("misrouted", 0)),
        Column("peak TIME-WAIT", "sockets", lambda r: r["peak_time_wait"]),
    ]
    rows = [(f"{case} x{n}", r) for n, entry in by_count.items() for case, r in entry.items()]
    lines = ["", f"with workers (kernel_to_kernel in the same run: {k2k or 0:,.0f} conn/s):"]
    lines += render(columns, rows)
    lines.append("x1 = the stack in one process (the table above); xN = N worker processes on a multi-queue "
                 "TUN device; CPU per conn = user+system of every worker process / connections.")
    return "\n".join(lines)
