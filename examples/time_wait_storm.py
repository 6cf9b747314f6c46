"""A TIME-WAIT storm on tcpstack, and what each mitigation does to it, measured against the kernel.

    sudo .venv/bin/python examples/time_wait_storm.py [--seconds 4] [--concurrency 16]
                                                      [--stats-dir DIR] [--plot PICTURE]

A short-connection server on the stack (read 100 B, reply, close) under load from a kernel client
in the stack's private namespace: the server closes first, so every connection leaves a TIME-WAIT
record on the stack for 2MSL (60 s here, as on Linux). The count is printed every 0.5 s, the way
`ss -s` shows `timewait`. Then each mitigation runs for the same time in a fresh stack:

* client closes first -- the same exchange against an echo server: the kernel client closes first
  and keeps the TIME-WAIT; the stack keeps none (CLOSE-WAIT -> LAST-ACK -> CLOSED). The problem
  moves rather than vanishes: toward one server port the client has ~28k ephemeral ports, and once
  about half of them are in TIME-WAIT Linux's connect() (which tries ports of one parity first)
  spends its time searching for a free one -- watch this phase's rate fall.
* the `max_time_wait` cap -- Config(max_time_wait=1000): past the cap a close skips TIME-WAIT
  and counts TCPTimeWaitOverflow (Linux `tcp_max_tw_buckets`).
* linger-0 -- the server sets `transport.set_linger0()` before close(): a RST instead of a FIN,
  no TIME-WAIT on either side (and no protection against old duplicates either).
* persistent connections -- 100 requests per connection: the same requests/s with 1% of the
  connections, so 1% of the TIME-WAITs.
* tw_reuse -- the stack as the client of a kernel echo server with only 2000 ephemeral ports:
  without `tw_reuse` the ports run out after 2000 connections and connects fail (EADDRNOTAVAIL)
  until 2MSL passes; with `Config(tw_reuse=True)` a port whose TIME-WAIT is >= 1 s old is taken
  again (TWRecycled).

The storm's own TIME-WAIT count flattens out although nothing expires: the kernel client (which
holds no TIME-WAIT in that phase) soon reuses its ports, and a SYN that lands on one of the stack's
TIME-WAIT records with a higher sequence number or newer timestamp reopens it (RFC 6191; the
TCPTimeWaitReopen column) -- the mitigation that needs no configuration at all.

Every phase writes a stats log (stack.observe.statslog; what `tcpstack serve --stats-log` writes)
into --stats-dir, one CSV per phase, sampled every 0.5 s, with the kernel's TIME-WAIT count as one
more column; at the end they are drawn one after another into --plot (`tcpstack plot` draws the same
files). The README's picture is this run (`make docs-images`).

The whole run takes about 7 x --seconds plus a few seconds of setup (under 40 s by default). Every
stack lives in its own namespace, deleted at the end of its phase, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stack.bench.cps import EchoProtocol, ReplyCloseProtocol, bucket_ms_for, stack_client_load
from stack.bench.loadgen import GRACE, EchoServer, namespace_time_wait, run_client
from stack.cli import interrupt
from stack.cli.common import OneLineParser, bounded_int, require_kernel_link, seconds_at_most
from stack.observe.plot import MissingMatplotlib, draw, read_stats_csv
from stack.observe.statslog import StatsLog
from stack.runtime import Stack
from stack.tcp.config import Config

SIZE = 100
MSL = 30.0  # 2MSL = 60 s, Linux's TIME-WAIT length: longer than any phase, so TIME-WAIT only grows
CAP = 1000
REQUESTS_PER_CONN = 100
CLIENT_PORTS = (50000, 51999)  # the stack-as-client phases' ephemeral range: small, to run out fast
SERVER_PORT = 8000
KERNEL_PORT = 9000


class ReplyAbort(ReplyCloseProtocol):
    linger0 = True


@dataclass
class Phase:
    name: str
    config: Config
    server: type[asyncio.Protocol] | None = None  # None: the stack is the client
    wait_eof: bool = False  # the kernel client waits for the server's FIN before it closes
    requests: int = 1

    # results
    conn_s: float = 0.0
    req_s: float = 0.0
    peak_stack_tw: int = 0
    peak_kernel_tw: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    errors: int = 0


SAMPLE_EVERY = 0.5  # seconds between rows of a phase's stats log


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


async def run_phase(phase: Phase, seconds: float, concurrency: int, timeline: bool, log_path: Path) -> None:
    async with Stack(config=phase.config) as stack:
        assert stack.netns is not None and stack.host is not None
        host, netns = stack.host, stack.netns
        log = StatsLog.open(log_path, host, stack.driver_counters,
                            gauges={"kernel TIME-WAIT": lambda: namespace_time_wait(netns)})
        log.start(asyncio.get_running_loop(), SAMPLE_EVERY)
        opens = "PassiveOpens" if phase.server is not None else "ActiveOpens"
        if timeline:
            print(f"\n{phase.name}: TIME-WAIT every 0.5 s (as `ss -s` shows timewait)")
            print(f"{'t (s)':>7} {'stack TIME-WAIT':>16} {'kernel TIME-WAIT':>17} {'opens/s':>9}")

        async def sample() -> None:
            t, last = 0.0, host.counters[opens]
            while True:
                await asyncio.sleep(0.5)
                t += 0.5
                stack_tw, kernel_tw = len(host.time_wait), namespace_time_wait(netns)
                phase.peak_stack_tw = max(phase.peak_stack_tw, stack_tw)
                phase.peak_kernel_tw = max(phase.peak_kernel_tw, kernel_tw)
                now_opens = host.counters[opens]
                if timeline:
                    print(f"{t:7.1f} {stack_tw:16,} {kernel_tw:17,} {(now_opens - last) / 0.5:9,.0f}", flush=True)
                last = now_opens

        sampler = asyncio.get_running_loop().create_task(sample())
        try:
            if phase.server is not None:
                await stack.create_server(phase.server, SERVER_PORT, backlog=1024)
                gen = await run_client(netns, stack.addr, SERVER_PORT, 1, seconds, concurrency, size=SIZE,
                                       wait_eof=phase.wait_eof, bucket_ms=bucket_ms_for(seconds),
                                       requests=phase.requests)
                phase.errors = gen["connect_errors"] + gen["addr_unavailable"] + gen["reset_errors"] + \
                    gen["short_reads"]
            else:
                async with EchoServer(netns, stack.peer_addr, KERNEL_PORT, 1, max_seconds=seconds + 2 * GRACE):
                    gen = await stack_client_load(stack, KERNEL_PORT, 1, seconds, concurrency, bucket_ms_for(seconds))
                gen["requests"] = gen["connections"]
                phase.errors = gen["connect_errors"] + gen["addr_unavailable"] + gen["reset_errors"]
        finally:
            sampler.cancel()
            log.close()
        phase.peak_stack_tw = max(phase.peak_stack_tw, len(host.time_wait))
        phase.peak_kernel_tw = max(phase.peak_kernel_tw, namespace_time_wait(netns))
        phase.conn_s = gen["connections"] / gen["elapsed"]
        phase.req_s = gen["requests"] / gen["elapsed"]
        phase.counters = {k: host.counters[k]
                          for k in ("TW", "TCPTimeWaitReopen", "TCPTimeWaitOverflow", "TWRecycled", "OutRsts")}


def print_table(phases: list[Phase]) -> None:
    print("\nmitigation                      conn/s    req/s  peak TW stack  peak TW kernel  "
          "TW-entered    TWReopen  TWOverflow  TWRecycled  RSTs out  errors")
    for p in phases:
        c = p.counters
        print(f"{p.name:<30} {p.conn_s:7,.0f} {p.req_s:8,.0f} {p.peak_stack_tw:14,} {p.peak_kernel_tw:15,} "
              f"{c['TW']:11,} {c['TCPTimeWaitReopen']:11,} {c['TCPTimeWaitOverflow']:11,} {c['TWRecycled']:11,} "
              f"{c['OutRsts']:9,} {p.errors:7,}")
    print(f"\n2MSL = {2 * MSL:g} s; cap = {CAP}; persistent = {REQUESTS_PER_CONN} requests per connection; "
          f"stack-as-client ephemeral ports {CLIENT_PORTS[0]}-{CLIENT_PORTS[1]} toward one kernel port.")
    print("errors: connects refused or without a free port (EADDRNOTAVAIL), resets, short reads.")


async def main(seconds: float, concurrency: int, all_timelines: bool, stats_dir: Path, picture: Path) -> None:
    base = Config(msl=MSL)
    client = base.with_changes(ephemeral_ports=CLIENT_PORTS)
    phases = [
        Phase("server closes first (storm)", base, ReplyCloseProtocol, wait_eof=True),
        Phase("client closes first", base, EchoProtocol),
        Phase(f"max_time_wait={CAP}", base.with_changes(max_time_wait=CAP), ReplyCloseProtocol, wait_eof=True),
        Phase("linger-0 (RST on close)", base, ReplyAbort),
        Phase(f"persistent ({REQUESTS_PER_CONN} req/conn)", base, EchoProtocol, requests=REQUESTS_PER_CONN),
        Phase("stack client, no tw_reuse", client.with_changes(tw_reuse=False)),
        Phase("stack client, tw_reuse", client.with_changes(tw_reuse=True, timestamps=True)),
    ]
    stats_dir.mkdir(parents=True, exist_ok=True)
    logs = []
    for i, phase in enumerate(phases):
        if not (i == 0 or all_timelines):
            print(f"{phase.name} ...", flush=True)
        logs.append(stats_dir / f"{i + 1}_{slug(phase.name)}.csv")
        await run_phase(phase, seconds, concurrency, timeline=i == 0 or all_timelines, log_path=logs[-1])
    print_table(phases)
    print(f"\nstats logs: {', '.join(str(p) for p in logs)}")
    try:
        draw([read_stats_csv(p) for p in logs], picture, columns=["TIME-WAIT", "kernel TIME-WAIT"],
             title=f"TIME-WAIT on tcpstack and on the kernel, {concurrency} connections at a time, "
                   f"{seconds:g} s per mitigation (2MSL = {2 * MSL:g} s)")
        print(f"drawn: {picture}  (again with: tcpstack plot {' '.join(str(p) for p in logs)} --out {picture})")
    except MissingMatplotlib as exc:
        print(f"not drawn: {exc}")


def cli(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="time_wait_storm.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=seconds_at_most(300), default=4.0, help="length of each phase (default 4)")
    parser.add_argument("--concurrency", type=bounded_int("concurrency", 1, 1024), default=16,
                        help="connections in flight (default 16)")
    parser.add_argument("--all-timelines", action="store_true", help="print the TIME-WAIT timeline of every phase")
    parser.add_argument("--stats-dir", type=Path, default=Path("time_wait_storm"),
                        help="where each phase's stats log (CSV) goes (default ./time_wait_storm)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="the picture of TIME-WAIT over the phases (.png/.svg; default STATS_DIR/states.png)")
    args = parser.parse_args(argv)

    def run() -> None:
        require_kernel_link()
        # Ctrl-C cancels the phase: its stack, namespace and load generator go, one line, exit 130.
        interrupt.run(main(args.seconds, args.concurrency, args.all_timelines, args.stats_dir,
                           args.plot or args.stats_dir / "states.png"))

    return interrupt.guarded("time_wait_storm.py", run)


if __name__ == "__main__":
    sys.exit(cli())
