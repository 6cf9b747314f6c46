"""`tcpstack bench ...`: benchmarks against the Linux kernel over TUN (measured and printed, never asserted).

    tcpstack bench cps [--seconds N] [--concurrency N] [--json] [--case CASE ...] [--msl S] ...

Each benchmark is a subcommand; the measuring code lives in `stack.bench` (cps, bulk), the command
lines here.
"""

from __future__ import annotations

import argparse
import json
import sys

from stack.bench import bulk
from stack.cli import interrupt
from stack.cli.common import (
    CliError,
    UsageError,
    add_fault_arguments,
    bounded_int,
    fault_engine,
    mtu_value,
    positive_float,
    require_kernel_link,
    seconds_at_most,
)
from stack.link.tun import IPV6_MIN_MTU

MAX_SECONDS = 3600.0  # every load loop is bounded: an hour is more than any benchmark needs
MAX_CONCURRENCY = 1024
MAX_PORTS = 64


_seconds = seconds_at_most(MAX_SECONDS)


def worker_list(text: str) -> list[int]:
    """argparse type of --workers: counts separated by commas, each 1..64 or `auto` (the cores)."""
    from stack.runtime.workers import worker_count

    counts = []
    for item in text.split(","):
        try:
            n = worker_count(item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad worker count {item!r}: a number 1..64 or 'auto'") from None
        if n not in counts:
            counts.append(n)
    return counts


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks against the Linux kernel (measured, never asserted)",
                       description="Benchmarks of tcpstack against the Linux kernel in a private namespace.")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", parser_class=type(p))
    bench_sub.required = True
    _register_cps(bench_sub)
    _register_bulk(bench_sub)


def _register_bulk(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bulk", help="bulk throughput both ways, MTU 1500 (offloads on/off) and 65000",
                       description=bulk.__doc__)
    p.add_argument("--mb", type=bounded_int("number of megabytes", 1, 16384), default=1024, metavar="N",
                   help="megabytes each way (default 1024)")
    p.add_argument("--mtu", type=mtu_value, action="append", metavar="N",
                   help="an MTU to measure (repeatable; default 1500 and 65000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workers", type=worker_list, metavar="N[,N...]",
                   help="instead: --flows parallel flows each way with the stack in N worker processes (multi-queue "
                        "TUN), for each N given, beside as many kernel-to-kernel flows")
    p.add_argument("--flows", type=bounded_int("flow count", 1, 64), default=2, metavar="N",
                   help="parallel flows with --workers (default 2)")
    p.add_argument("--ipv6", action="store_true", help="the kernel and the stack talk over IPv6 (2001:2::1, ::2)")
    add_fault_arguments(p)
    p.set_defaults(func=_run_bulk)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_bulk(args: argparse.Namespace) -> int:
    require_kernel_link()
    engine = fault_engine(args)  # checked before anything starts
    if args.workers:
        from stack.bench import bulk_workers

        if engine is not None:
            raise CliError("--fault is not measured with --workers")
        result = bulk_workers.run_bulk_workers(args.mb, args.workers, args.flows,
                                               None if args.json else _progress, interrupt.run, ipv6=args.ipv6)
        print(json.dumps(result) if args.json else "\n".join(bulk_workers.format_workers(result)))
        return 0
    mtus = args.mtu or [1500, 65000]
    if args.ipv6 and min(mtus) < IPV6_MIN_MTU:
        raise UsageError(f"--ipv6 needs every --mtu at {IPV6_MIN_MTU} or more (IPv6's minimum)")
    result = bulk.run_bulk(args.mb, mtus, None if args.json else _progress, interrupt.run,
                           faults=list(engine.rules) if engine is not None else None, ipv6=args.ipv6)
    if args.json:
        print(json.dumps(result))
    else:
        bulk.print_result(result)
    return 0


def _register_cps(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from stack.bench.cps import CASES, DEFAULT_PORTS
    from stack.bench.loadgen import IMPLS

    p = sub.add_parser(
        "cps", help="short connections per second in four shapes",
        description="Kernel-side connect / send 100 B / receive the echo / close loops against the stack "
                    f"({', '.join(CASES)}), at --concurrency and at 1. Each case runs in a fresh private "
                    "namespace. The concurrency-1 pass lasts a quarter of --seconds (1..5 s) unless "
                    "--c1-seconds says otherwise.")
    p.add_argument("--seconds", type=_seconds, default=10.0, metavar="N",
                   help="length of each case at --concurrency (default 10)")
    p.add_argument("--concurrency", type=bounded_int("concurrency", 1, MAX_CONCURRENCY), default=16,
                   metavar="N", help="connections in flight (default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--case", action="append", choices=CASES, metavar="CASE",
                   help=f"run only this case (repeatable; {', '.join(CASES)})")
    p.add_argument("--c1-seconds", type=_seconds, metavar="N", help="length of the concurrency-1 pass")
    p.add_argument("--msl", type=positive_float, default=30.0, metavar="SECONDS",
                   help="the stack's MSL; TIME-WAIT lasts 2*MSL (default 30, i.e. Linux's 60 s)")
    p.add_argument("--ports", type=bounded_int("port count", 1, MAX_PORTS), default=DEFAULT_PORTS, metavar="N",
                   help=f"server ports per case, used in turn (default {DEFAULT_PORTS}: 28k ephemeral ports each)")
    p.add_argument("--loadgen", choices=IMPLS, default="auto",
                   help="kernel-side generator: C (stack/bench/loadgen.c, built with cc at run time) or Python "
                        "(default auto: C if it builds; the first line says which one runs, and why)")
    p.add_argument("--workers", type=worker_list, metavar="N[,N...]",
                   help="also run every stack case with the stack in N worker processes on a multi-queue TUN "
                        "device, for each N given (e.g. 1,2; 'auto' = one per core)")
    p.add_argument("--ipv6", action="store_true",
                   help="the kernel and the stack talk over IPv6 (2001:2::1 and 2001:2::2) in every case")
    p.add_argument("--profile", metavar="FILE",
                   help="cProfile the stack process and write pstats to FILE (slows the stack ~2.5x)")
    p.set_defaults(func=run_cps_command)


def run_cps_command(args: argparse.Namespace) -> int:
    require_kernel_link()
    from stack.bench.cps import CASES, format_table, run_cps
    from stack.bench.loadgen import describe

    cases = tuple(c for c in CASES if c in args.case) if args.case else CASES
    try:
        generator = describe(args.loadgen)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    if not args.json:
        _progress(f"load generator: {generator}")
    coro = run_cps(args.seconds, args.concurrency, c1_seconds=args.c1_seconds, cases=cases, msl=args.msl,
                   ports=args.ports, impl=args.loadgen, progress=None if args.json else _progress,
                   workers=args.workers, ipv6=args.ipv6)
    try:
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            try:
                report = profiler.runcall(interrupt.run, coro)
            finally:
                profiler.dump_stats(args.profile)
        else:
            report = interrupt.run(coro)
    except (RuntimeError, OSError) as exc:
        raise CliError(f"benchmark failed: {exc}") from exc
    if args.json:
        print(json.dumps(report))
    else:
        from stack.bench.cps_workers import format_workers

        print(format_table(report) + format_workers(report))
    return 0
