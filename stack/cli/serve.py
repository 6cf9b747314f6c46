"""`tcpstack serve`: run the stack in its own namespace with apps on ports until SIGINT/SIGTERM.

    tcpstack serve --app echo --port 7 --app reply-close --port 8 [--netns NAME] [--msl 5]
                   [--pcap FILE|-] [--trace FILE|-] [--stats-log FILE.csv] [--control PATH]
                   [--config-file FILE.toml] [--max-time-wait N] [--tw-reuse] ...
                   (every Config knob, stack/cli/knobs.py)

The same TUN carries IPv4 and IPv6: the kernel side is 198.18.0.1/24 and 2001:2::1/64, the stack
answers as 198.18.0.2 and 2001:2::2. `--addr`/`--peer-addr` override the pair of their family,
`--ipv6` makes IPv6 the family the ready line names.

Once the kernel in the namespace can connect, exactly one line goes to stdout (flushed):
`ready netns=NAME addr=A peer=B`; everything else (warnings) goes to stderr. With `--pcap -` (or
`--trace -`) stdout carries the capture, live (`tcpstack serve ... --pcap - | tcpdump -nr -`), and
the ready line goes to stderr. `tcpstack ss` and
`tcpstack stats` then read the stack through its control socket (see stack/cli/control.py).

Shutdown: SIGTERM or SIGINT ends the run cleanly: the namespace is deleted (a namespace that
existed before is left as it was, less the TUN device), the control socket removed, the pcap and
trace flushed and closed. SIGTERM, the way a service manager stops a server, exits 0; SIGINT
(Ctrl-C) prints one line and exits 130, as every tcpstack command does. Errors: bad
arguments exit 2, anything else that stops the start (not root, a namespace or control socket
already in use, an unwritable capture file) exits 1, each with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from functools import partial
from typing import Any

from stack.cli import interrupt
from stack.cli.apps import APPS
from stack.cli.common import (
    CliError,
    Subcommands,
    UsageError,
    add_fault_arguments,
    add_offload_argument,
    check_writable,
    fault_engine,
    ip_address,
    port_number,
    require_kernel_link,
)
from stack.cli.control import ControlError, ControlServer, default_path, netns_name
from stack.cli.knobs import add_config_arguments, config_from_args, config_summary
from stack.faults import FaultEngine
from stack.link.netns import LinkUnavailable, NetnsBusy, NetnsError
from stack.link.tun import IPV6_MIN_MTU, check_addresses
from stack.observe.capture import STDOUT, pcap_writer, trace_writer
from stack.observe.pcap import PcapWriter
from stack.observe.snapshot import socket_rows
from stack.observe.trace import TraceWriter
from stack.runtime.stack import Server, Stack
from stack.runtime.workers import WorkerGone, WorkerOptions, Workers
from stack.tcp.config import Config
from stack.tcp.host import PortInUse

log = logging.getLogger("tcpstack")

DEFAULT_ADDR = "198.18.0.2"
DEFAULT_PEER = "198.18.0.1"
PREFIX = 24
DEFAULT_ADDR6 = "2001:2::2"
DEFAULT_PEER6 = "2001:2::1"
PREFIX6 = 64


def register(sub: Subcommands) -> None:
    p = sub.add_parser("serve", help="run the stack with apps on ports until SIGINT/SIGTERM",
                       description="Run tcpstack in a private network namespace with the given apps, until "
                                   "SIGINT/SIGTERM. --app and --port repeat and pair up in order.")
    p.add_argument("--app", action="append", choices=sorted(APPS), default=[], metavar="APP",
                   help=f"application to serve ({', '.join(sorted(APPS))}); repeatable, paired with --port")
    p.add_argument("--port", action="append", type=port_number, default=[], metavar="PORT",
                   help="port of the matching --app; repeatable")
    p.add_argument("--netns", type=netns_name, metavar="NAME",
                   help="network namespace to use: made (and deleted on exit) if it does not exist; one that exists "
                        "and is not tcpstack's is used as it is and left as it was (default: a fresh "
                        "tcps-<pid>-<n>)")
    p.add_argument("--addr", type=ip_address, metavar="A",
                   help=f"the stack's address, IPv4 or IPv6 (default {DEFAULT_ADDR}; with --ipv6 {DEFAULT_ADDR6})")
    p.add_argument("--peer-addr", type=ip_address, metavar="B",
                   help=f"the kernel's address in the namespace, of --addr's family (default {DEFAULT_PEER}, a "
                        f"/{PREFIX}; with --ipv6 {DEFAULT_PEER6}, a /{PREFIX6})")
    p.add_argument("--ipv6", action="store_true",
                   help="IPv6 first: the defaults of --addr and --peer-addr are the IPv6 ones (the link carries "
                        "both families either way; the other keeps its defaults)")
    p.add_argument("--pcap", metavar="FILE",
                   help="record every packet in and out, live (classic pcap, tcpdump -r); - for stdout")
    p.add_argument("--trace", metavar="FILE",
                   help="write state changes, segments and fault actions as JSON lines, live; - for stdout")
    p.add_argument("--stats-log", metavar="FILE.csv",
                   help="sample every counter and the connections per state once a second into a CSV "
                        "(tcpstack plot draws it)")
    add_fault_arguments(p)
    add_offload_argument(p)
    p.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="worker processes, one per queue of a multi-queue TUN device, each a whole stack with "
                        "every app (default 1; auto = one per core); ss and stats merge them")
    p.add_argument("--control", metavar="PATH",
                   help="control socket path (default /run/tcpstack/<netns>.sock)")
    add_config_arguments(p)
    p.set_defaults(func=run)


def _workers(text: str) -> int:
    from stack.runtime.workers import worker_count

    try:
        return worker_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad worker count {text!r}: a number 1..64 or 'auto'") from None


async def serve_apps(apps: list[tuple[str, int]], stack: Stack) -> None:
    """What every worker runs: the apps on their ports (a module-level function: a worker's app)."""
    for app, port in apps:
        await stack.start_server(APPS[app], port)


def _apps(args: argparse.Namespace) -> list[tuple[str, int]]:
    apps: list[str] = args.app
    ports: list[int] = args.port
    if not apps:
        raise UsageError("nothing to serve: give at least one --app APP --port PORT")
    if len(apps) != len(ports):
        raise UsageError(f"--app and --port must pair up: got {len(apps)} --app and {len(ports)} --port")
    seen: set[int] = set()
    for port in ports:
        if port in seen:
            raise UsageError(f"port {port} is given twice")
        seen.add(port)
    return list(zip(apps, ports, strict=True))


def _addresses(args: argparse.Namespace, mtu: int) -> None:
    """Fill in --addr/--peer-addr (the family of whichever is given, else --ipv6's) and check them;
    `args.v4` and `args.v6` become the (stack, kernel) pairs of both families (v6: None when the MTU
    is below IPv6's 1280)."""
    given = args.addr or args.peer_addr
    v6 = ":" in given if given else args.ipv6
    if given and args.ipv6 and not v6:
        raise UsageError("--ipv6 with IPv4 addresses: give IPv6 ones, or leave --ipv6 out")
    addr = args.addr or (DEFAULT_ADDR6 if v6 else DEFAULT_ADDR)
    peer = args.peer_addr or (DEFAULT_PEER6 if v6 else DEFAULT_PEER)
    if (":" in addr) != (":" in peer):
        raise UsageError(f"--addr {addr} and --peer-addr {peer} must be of one family")
    try:
        # The kernel routes only its connected prefix into the TUN, so the stack must sit inside it.
        check_addresses(addr, peer, PREFIX6 if v6 else PREFIX, 6 if v6 else 4)
    except ValueError as exc:
        raise UsageError(f"--addr/--peer-addr: {exc}") from None
    args.addr, args.peer_addr, args.ipv6 = addr, peer, v6
    args.v4 = (DEFAULT_ADDR, DEFAULT_PEER) if v6 else (addr, peer)
    args.v6 = (addr, peer) if v6 else (DEFAULT_ADDR6, DEFAULT_PEER6)
    if mtu < IPV6_MIN_MTU:
        if v6:
            raise UsageError(f"--mtu {mtu} is below IPv6's minimum of {IPV6_MIN_MTU}")
        args.v6 = None


def _config(args: argparse.Namespace) -> Config:
    try:
        return config_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    apps = _apps(args)
    config = _config(args)
    _addresses(args, config.mtu)
    faults = fault_engine(args)
    for option, path in (("--pcap", args.pcap), ("--trace", args.trace), ("--stats-log", args.stats_log)):
        if path and path != STDOUT:
            check_writable(path, option)
    if args.workers > 1 and args.stats_log:
        raise UsageError("--stats-log records one stack: not with --workers above 1 (use tcpstack stats)")
    require_kernel_link()
    # Before anything is created: a second serve of the same name must leave the first alone.
    control_path = args.control or (default_path(args.netns) if args.netns else None)
    if control_path is not None:
        try:
            ControlServer.check_free(control_path)
        except ControlError as exc:
            raise CliError(str(exc)) from None
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="tcpstack serve: %(message)s")
    session = Session(args, apps, config, faults)
    try:
        return interrupt.run(session.main())
    except interrupt.Interrupted as exc:
        if exc.signum == signal.SIGTERM:
            return 0  # the documented way to stop a server: not a failure
        raise
    finally:
        session.close_files()


async def _started(start: Awaitable[None], what: str) -> None:
    """Wait for the stack or the worker pool to start; whatever stops it is one line for the user
    (a namespace in use, no TUN device, a bad address, a worker that died starting)."""
    try:
        await start
    except NetnsBusy as exc:
        raise CliError(f"{exc}") from None
    except LinkUnavailable as exc:
        raise CliError(exc.reason) from None
    except (NetnsError, OSError, ValueError, WorkerGone) as exc:
        raise CliError(f"cannot start {what}: {exc}") from None


class Session:
    """One serve run: the stack, its servers, recorders and control socket, and their teardown."""

    def __init__(self, args: argparse.Namespace, apps: list[tuple[str, int]], config: Config,
                 faults: FaultEngine | None = None) -> None:
        self.args = args
        self.faults = faults
        self.apps = apps
        self.config = config
        self.stack: Stack | None = None
        self.pool: Workers | None = None
        self._watch: asyncio.Task[None] | None = None
        self.control: ControlServer | None = None
        self.pcap: PcapWriter | None = None
        self.trace: TraceWriter | None = None
        self.started_wall = time.time()
        self._open_files()

    def _open_files(self) -> None:
        # Opened first: an unwritable path is an error before any namespace exists. With workers
        # each one writes a part file and the pool merges them into the path at the end.
        if self.args.workers > 1:
            return
        try:
            if self.args.pcap:
                self.pcap, _ = pcap_writer(self.args.pcap)
            if self.args.trace:
                self.trace, _ = trace_writer(self.args.trace)
        except OSError as exc:
            self.close_files()
            raise CliError(f"cannot write {exc.filename}: {exc.strerror}") from None

    def close_files(self) -> None:
        for writer in (self.pcap, self.trace):
            if writer is not None:
                try:
                    writer.close()
                except OSError as exc:
                    log.warning("could not finish %s: %s", "capture" if writer is self.pcap else "trace", exc)
        self.pcap = self.trace = None

    # -------------------------------------------------------------------------------- control
    def _handlers(self, stack: Stack, control_path: str) -> dict[str, Any]:
        def ss() -> dict[str, Any]:
            assert stack.host is not None
            return {"rows": [row.to_json() for row in socket_rows(stack.host, stack.now())]}

        def stats() -> dict[str, Any]:
            return {"stats": stack.counters()}

        def info() -> dict[str, Any]:
            cfg = stack.config
            return {
                "pid": os.getpid(),
                "netns": stack.netns,
                "addr": self.args.addr,
                "peer": self.args.peer_addr,
                "addr4": stack.addr,
                "addr6": stack.addr6,
                "control": control_path,
                "apps": [[app, port] for app, port in self.apps],
                "msl": cfg.msl,
                "fin_timeout": cfg.fin_timeout,
                "rfc1337": cfg.rfc1337,
                "mtu": cfg.mtu,
                "config": config_summary(cfg),
                "uptime": round(time.time() - self.started_wall, 3),
                "started": self.started_wall,
            }

        return {"ss": ss, "stats": stats, "info": info}

    # -------------------------------------------------------------------------------- run
    async def main(self) -> int:
        """Serve until a signal cancels this task (stack/cli/interrupt.py), then shut down."""
        try:
            await self._start(asyncio.get_running_loop())
            # stdout may carry the capture itself (--pcap -): then the line goes to stderr.
            to = sys.stderr if STDOUT in (self.args.pcap, self.args.trace) else sys.stdout
            netns = self.stack.netns if self.stack else self.pool.netns if self.pool else "?"
            print(f"ready netns={netns} addr={self.args.addr} "
                  f"peer={self.args.peer_addr}", file=to, flush=True)
            await asyncio.Event().wait()
            return 0  # not reached: only a signal ends a serve
        finally:
            await self._shutdown()

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        args = self.args
        if args.workers > 1:
            await self._start_workers()
            return
        (addr, peer), v6 = args.v4, args.v6
        stack = Stack(config=self.config, addr=addr, peer_addr=peer, prefix=PREFIX,
                      addr6=v6[0] if v6 else None, peer_addr6=v6[1] if v6 else None, prefix6=PREFIX6,
                      netns=args.netns, faults=self.faults, offload=args.offload, pcap=self.pcap, trace=self.trace,
                      stats_log=args.stats_log)
        await _started(stack.start(), "the stack")
        self.stack = stack
        servers: list[Server] = []
        for app, port in self.apps:
            try:
                servers.append(await stack.start_server(APPS[app], port))
            except (PortInUse, ValueError) as exc:
                raise CliError(f"cannot listen on port {port}: {exc}") from None
        netns = stack.netns or "?"
        path = args.control or default_path(netns)
        await self._start_control(path, self._handlers(stack, path))

    async def _start_workers(self) -> None:
        args = self.args
        (addr, peer), v6 = args.v4, args.v6
        opts = WorkerOptions(config=self.config, addr=addr, peer_addr=peer, prefix=PREFIX,
                             addr6=v6[0] if v6 else None, peer_addr6=v6[1] if v6 else None, prefix6=PREFIX6,
                             offload=args.offload, faults=self.faults, pcap=args.pcap, trace=args.trace)
        pool = Workers(args.workers, partial(serve_apps, self.apps), opts, netns=args.netns)
        await _started(pool.start(), "the workers")
        self.pool = pool
        self._watch = asyncio.get_running_loop().create_task(self._watch_workers(pool))
        path = args.control or default_path(pool.netns or "?")
        await self._start_control(path, self._pool_handlers(pool, path))

    async def _watch_workers(self, pool: Workers) -> None:
        """Report a worker that died, once; the others keep serving their flows."""
        while True:
            self._report_dead(pool)
            await asyncio.sleep(0.5)

    @staticmethod
    def _report_dead(pool: Workers) -> None:
        for index, code in pool.report_dead():
            log.warning("worker %d exited (code %s); its connections are lost, the other %d keep serving",
                        index, code, pool.count - len(pool.dead()))

    def _pool_handlers(self, pool: Workers, control_path: str) -> dict[str, Any]:
        async def ss() -> dict[str, Any]:
            return {"rows": await pool.rows()}

        async def stats() -> dict[str, Any]:
            return {"stats": await pool.counters()}

        def info() -> dict[str, Any]:
            cfg = self.config
            v6 = self.args.v6
            return {"pid": os.getpid(), "netns": pool.netns, "addr": self.args.addr, "peer": self.args.peer_addr,
                    "addr4": self.args.v4[0], "addr6": v6[0] if v6 else None,
                    "control": control_path, "apps": [[app, port] for app, port in self.apps],
                    "msl": cfg.msl, "fin_timeout": cfg.fin_timeout, "rfc1337": cfg.rfc1337, "mtu": cfg.mtu,
                    "config": config_summary(cfg), "uptime": round(time.time() - self.started_wall, 3),
                    "started": self.started_wall, "workers": pool.count, "worker_pids": pool.pids,
                    "dead_workers": [index for index, _ in pool.dead()]}

        return {"ss": ss, "stats": stats, "info": info}

    async def _start_control(self, path: str, handlers: dict[str, Any]) -> None:
        control = ControlServer(path, handlers)
        try:
            await control.start()
        except ControlError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot create control socket {path}: {exc.strerror or exc}") from None
        self.control = control

    async def _shutdown(self) -> None:
        if self.control is not None:
            with contextlib.suppress(Exception):
                await self.control.close()
            self.control = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.pool is not None:
            self._report_dead(self.pool)  # one that died since the last look, before all are stopped
            try:
                await self.pool.aclose()
            except Exception as exc:  # teardown goes on
                log.warning("workers teardown: %s", exc)
            self.pool = None
        if self.stack is not None:
            try:
                await self.stack.aclose()
            except Exception as exc:  # teardown goes on: files still need closing
                log.warning("stack teardown: %s", exc)
            self.stack = None
