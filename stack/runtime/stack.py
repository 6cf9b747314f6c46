"""The asyncio runtime: a thin driver around the sans-IO core.

It reads packet batches from the link, parses them, feeds the host, arms ONE asyncio timer at the
timer wheel's next deadline, writes what the host sends, and turns core events into asyncio
Protocol calls. Applications use it like asyncio itself: `start_server`, `open_connection`,
`create_server`, `create_connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time as _wall
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from stack.faults.adapter import FaultAdapter, FaultNote
from stack.faults.engine import Crossing, FaultEngine
from stack.link import vnet
from stack.observe.capture import Capture, PcapTarget, TraceTarget, shown_segment
from stack.runtime.server import Server as Server  # re-exported: callers import it from here
from stack.runtime.transport import TcpTransport, close_exception
from stack.tcp.config import Config
from stack.tcp.events import Accepted, Closed, Connected, EndOfStream, Readable, StateChanged, Writable
from stack.tcp.handle import ConnectionHandle
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.wire import MalformedPacket, Reason, build_packet, parse_packet
from stack.wire.build import build_head_partial
from stack.wire.icmp import IcmpMessage, build_icmp, parse_icmp
from stack.wire.segment import Segment

log = logging.getLogger("tcpstack")

# An observer sees ("in" | "out", time, segment, packet bytes, note) for every segment at the time it
# crossed the link, and ("state", time, StateChanged) for every state change. Time is the loop's
# monotonic clock. `note` is None, or a FaultNote when the fault engine changed or held the segment
# (its `since` is when the segment entered the engine: it crossed later when delayed or reordered).
Observer = Callable[..., None]


class PacketLink(Protocol):
    def read_batch(self, max_packets: int = ...) -> list[bytes]: ...
    def write_batch(self, packets: list[bytes]) -> int: ...  # with `gathers`: parts of a packet as a tuple


class Stack:
    """A tcpstack host on a link. Over TUN (the default) it owns a private network namespace whose
    kernel side is `peer_addr`; pass `link=` to run over anything with read_batch/write_batch.

    `pcap=` and `trace=` record the run live (a path, "-" for standard output, an open stream or a
    writer; see stack.observe.capture): every packet when it crossed, state changes, fault actions.
    `stats_log=` samples every counter and the per-state connection counts into a CSV file every
    `stats_interval` seconds (stack.observe.statslog)."""

    def __init__(self, link: Any = None, *, config: Config | None = None, addr: str = "198.18.0.2",
                 peer_addr: str = "198.18.0.1", prefix: int = 24, addr6: str | None = "2001:2::2",
                 peer_addr6: str | None = "2001:2::1", prefix6: int = 64, netns: str | None = None,
                 mtu: int | None = None, faults: FaultEngine | None = None, offload: bool = True,
                 pcap: PcapTarget | None = None, trace: TraceTarget | None = None,
                 stats_log: str | None = None, stats_interval: float = 1.0, workers: int | str = 1,
                 app: Callable[[Stack], Any] | None = None) -> None:
        self.config = config or Config()
        # workers > 1 ("auto": one per core): `app(stack)` runs in each of that many processes, one
        # per TUN queue (stack.runtime.workers); this object is then only their front (`pool`).
        self.workers = workers if isinstance(workers, int) else len(os.sched_getaffinity(0))
        self.worker = 0  # which one this is, inside a worker
        self._app = app
        self.pool: Any = None
        if mtu is not None and mtu != self.config.mtu:
            self.config = self.config.with_changes(mtu=mtu)
        self.addr = addr
        self.peer_addr = peer_addr
        self.prefix = prefix
        # The same link carries IPv6 too (None: IPv4 only; an MTU below 1280 drops the defaults).
        self.addr6 = addr6
        self.peer_addr6 = peer_addr6
        self.prefix6 = prefix6
        self._netns_name = netns
        self.link: Any = link
        self._owns_link = link is None
        self.host: Host | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.servers: dict[int, Server] = {}
        self.observers: list[Observer] = []
        # Fault injection between the link and the core, both ways (stack.faults).
        self.faults = faults
        self._faults: FaultAdapter | None = None
        self._fault_timer: asyncio.TimerHandle | None = None
        self.offload = offload  # TSO/checksum offload with the kernel (stack.link.vnet)
        self._vnet = False
        self._gather = False  # the link writes a packet given in parts (one writev: TunLink)
        # Called with the time after each batch of packets was written to the link: the moment a
        # kernel peer has processed them (a TUN write runs the receive path before returning).
        self.after_write: list[Callable[[float], None]] = []
        self.internal_errors = 0
        self._capture_targets = (pcap, trace)
        self.capture: Capture | None = None
        self._capture_flush: asyncio.Handle | None = None
        self._stats_log_path = stats_log
        self._stats_interval = stats_interval
        self.stats_log: Any = None  # stack.observe.statslog.StatsLog once started
        self._transports: set[TcpTransport] = set()
        self._connecting: dict[ConnectionHandle, asyncio.Future[TcpTransport]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = float("inf")
        self._flushing = False
        self._acks_scheduled = False
        self._closed = False

    # ---------------------------------------------------------------- lifecycle
    @property
    def netns(self) -> str | None:
        return getattr(self.link, "netns", None)

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.workers > 1:
            await self._start_workers()
            return
        pcap, trace = self._capture_targets
        if pcap is not None or trace is not None:
            # Opened first: an unwritable path fails before any namespace exists.
            self.capture = Capture.open(pcap, trace, clock_offset=_wall.time() - self.loop.time())
            self.capture.on_dirty = self._capture_dirty
        try:
            await self._start_link()
        except BaseException:
            if self.capture is not None:
                self.capture.close()
            raise

    async def _start_workers(self) -> None:
        from stack.runtime.workers import WorkerOptions, Workers

        if self._app is None or self.link is not None:
            raise ValueError("Stack(workers=N) needs app= (run in every worker) and no link=")
        pcap, trace = self._capture_targets
        if not isinstance(pcap, str | None) or not isinstance(trace, str | None):
            raise ValueError("with workers, pcap= and trace= are paths (or '-'): the parts are merged")
        opts = WorkerOptions(config=self.config, addr=self.addr, peer_addr=self.peer_addr, prefix=self.prefix,
                             addr6=self.addr6, peer_addr6=self.peer_addr6, prefix6=self.prefix6,
                             offload=self.offload, faults=self.faults, pcap=pcap, trace=trace)
        self.pool = Workers(self.workers, self._app, opts, netns=self._netns_name)
        await self.pool.start()
        self.link = self.pool.link
        self.addr6, self.peer_addr6 = self.link.addr6, self.link.peer_addr6

    async def _start_link(self) -> None:
        if self.link is None:
            from stack.link.netns import Netns
            from stack.link.tun import TunLink

            ns = Netns(self._netns_name) if self._netns_name else None
            if ns is not None:
                ns.create()
            self.link = TunLink(ns, addr=self.addr, peer_addr=self.peer_addr, prefix=self.prefix,
                                addr6=self.addr6, peer_addr6=self.peer_addr6, prefix6=self.prefix6,
                                mtu=self.config.mtu, offload=self.offload)
            self.addr6, self.peer_addr6 = self.link.addr6, self.link.peer_addr6
            self._own_netns = ns
            try:
                self.link.open()
            except BaseException:
                if ns is not None:
                    ns.delete()
                raise
        self.host = Host((self.addr, self.addr6) if self.addr6 else self.addr, self.config, start=self.loop.time())
        self._vnet = bool(getattr(self.link, "offload", False))
        self._gather = self._vnet and bool(getattr(self.link, "gathers", False))
        if self._vnet:
            # The kernel splits what we send: segments may carry up to 64 KB whatever the MTU.
            self.host.tso_size = 65535 - 20 - 60
        if self.faults is not None:
            self.faults.start = self.loop.time()  # after=/before= count from the stack's start
            self._faults = FaultAdapter(self.faults, self.host)
            if self.capture is not None:
                self.faults.listeners.append(self.capture.fault)
        if self._stats_log_path is not None:
            from stack.observe.statslog import StatsLog

            self.stats_log = StatsLog.open(self._stats_log_path, self.host, self.driver_counters,
                                           faults=self.faults is not None)
            self.stats_log.start(self.loop, self._stats_interval)
        if hasattr(self.link, "fileno"):
            self.loop.add_reader(self.link.fileno(), self._on_readable)
        else:
            self.link.attach(self.loop, self._on_readable)

    async def aclose(self) -> None:
        """Reset whatever is still open, then tear the link (and its namespace) down."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.aclose()
            return
        if self._closed or self.host is None:
            return
        self._closed = True
        if self.stats_log is not None:
            self.stats_log.close()  # its last row is the stack as it ran, before the resets below
        for server in list(self.servers.values()):
            server.close()
        now = self.now()
        for handle in self.host.handles():
            handle.abort(now)
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
        if self.capture is not None:
            if self._capture_flush is not None:
                self._capture_flush.cancel()
            self.capture.close()
        if hasattr(self.link, "fileno"):
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self.link.fileno())
        else:
            self.link.detach()
        if self._owns_link:
            self.link.close()
            ns = getattr(self, "_own_netns", None)
            if ns is not None:
                ns.delete()
        for fut in self._connecting.values():
            if not fut.done():
                fut.set_exception(ConnectionAbortedError("stack closed"))
        await asyncio.sleep(0)

    def now(self) -> float:
        return self.loop.time()

    def counters(self) -> dict[str, int]:
        """Every counter of this stack: the host's (nstat names), then the driver's and the faults'."""
        stats = self._host().stats()
        for name, value in self.driver_counters().items():
            stats.setdefault(name, value)
        return stats

    def driver_counters(self) -> dict[str, int]:
        """The counters the driver keeps beside the host's: internal errors, the fault engine's."""
        extra = {"InternalErrors": self.internal_errors}
        if self.faults is not None:
            extra.update(self.faults.counters)
        return extra

    def _capture_dirty(self) -> None:
        """Something was recorded: write it out once this wake-up's work is done (live files)."""
        if self._capture_flush is None:
            self._capture_flush = self.loop.call_soon(self._flush_capture)

    def _flush_capture(self) -> None:
        self._capture_flush = None
        if self.capture is not None:
            self.capture.flush()

    def pause_input(self) -> None:
        """Stop reading the link: arriving packets wait in the device queue (or the pipe).
        With `resume_input` this lets an experiment make two segments cross on the wire."""
        if hasattr(self.link, "fileno"):
            self.loop.remove_reader(self.link.fileno())
        else:
            self.link.detach()

    def resume_input(self) -> None:
        if hasattr(self.link, "fileno"):
            self.loop.add_reader(self.link.fileno(), self._on_readable)
            self.loop.call_soon(self._on_readable)
        else:
            self.link.attach(self.loop, self._on_readable)

    # ---------------------------------------------------------------- API
    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol], port: int,
                            *, backlog: int | None = None) -> Server:
        host = self._host()
        listener = host.listen(port, backlog)
        server = Server(self, listener, protocol_factory)
        self.servers[port] = server
        self.kick()
        return server

    async def start_server(self, client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                               Awaitable[None] | None],
                           port: int, *, limit: int = 2**16, backlog: int | None = None) -> Server:
        loop = self.loop

        def factory() -> asyncio.BaseProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

        return await self.create_server(factory, port, backlog=backlog)

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str,
                                port: int, *, local_port: int | None = None,
                                config: Config | None = None) -> tuple[TcpTransport, asyncio.BaseProtocol]:
        core = self._host()
        handle = core.connect(host, port, self.now(), local_port=local_port, config=config)
        fut: asyncio.Future[TcpTransport] = self.loop.create_future()
        protocol = protocol_factory()
        transport = TcpTransport(self, handle, protocol)
        self._connecting[handle] = fut
        self.kick()
        try:
            await fut
        finally:
            self._connecting.pop(handle, None)
        return transport, protocol

    def connect(self, protocol: asyncio.BaseProtocol, host: str, port: int, *, local_port: int | None = None,
                config: Config | None = None) -> TcpTransport:
        """Active open without awaiting: `protocol.connection_made` runs once ESTABLISHED, and a
        failure (refused, timed out) arrives as `connection_lost(exc)`. No future and no task per
        connection, for clients that open many (a callback-driven load generator)."""
        handle = self._host().connect(host, port, self.now(), local_port=local_port, config=config)
        transport = TcpTransport(self, handle, protocol)
        self.kick()
        return transport

    async def open_connection(self, host: str, port: int, *, limit: int = 2**16,
                              local_port: int | None = None,
                              config: Config | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = self.loop
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port, local_port=local_port,
                                                    config=config)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    def connections(self) -> list[ConnectionHandle]:
        return self._host().handles()

    # ---------------------------------------------------------------- driver
    def _host(self) -> Host:
        if self.host is None:
            if self.pool is not None:
                # The front of a worker pool has no host of its own: every worker has one.
                raise RuntimeError(f"this stack runs in {self.workers} worker processes: ask them with "
                                   "`await stack.pool.counters()` / `await stack.pool.rows()`, or call "
                                   "this inside the app, which runs in each worker")
            raise RuntimeError("the stack is not started (use `async with Stack(...)`)")
        return self.host

    def _on_readable(self) -> None:
        host = self.host
        if host is None:
            return
        try:
            packets = self.link.read_batch(256)
        except Exception as exc:  # the device vanished (namespace deleted under us)
            log.error("link read failed: %s", exc)
            self.loop.remove_reader(self.link.fileno()) if hasattr(self.link, "fileno") else None
            return
        time = self.loop.time
        faults = self._faults
        offloaded = self._vnet
        if faults is None and self.capture is None and not self.observers:
            self._receive_plain(packets, host, time, offloaded)
            self._flush()
            return
        for raw in packets:
            now = time()  # per packet: state changes of one batch keep their order in traces
            packet: bytes | bytearray = raw
            verify = True
            if offloaded:
                packet = raw[vnet.HEADER_LEN :]
                if vnet.needs_checksum(raw):
                    if faults is None:
                        verify = False  # the local kernel left it partial: nothing on a wire to check
                    else:
                        # Complete it, so a `corrupt` fault is still caught by the checksum.
                        packet = bytearray(packet)
                        vnet.complete_checksum(packet)
            if faults is None:
                self._receive(packet, None, now, verify)
                continue
            for seg, crossing in faults.inbound_packet(bytes(packet), now):
                note = FaultNote(crossing.faults, now) if crossing.faults else None
                if crossing.delay > 0:
                    self.loop.call_later(crossing.delay, self._receive_late, crossing.packet, note)
                else:
                    self._receive(crossing.packet, seg, now, True, note)
        if faults is not None:
            self._release_faults()
        self._flush()

    def _receive_plain(self, packets: list[bytes], host: Host, time: Callable[[], float], offloaded: bool) -> None:
        """`_receive` for a batch nobody records and no fault rule touches: the same steps,
        without a call per packet for what is not there."""
        on_segment = host.on_segment
        parse = self._parse
        header_len = vnet.HEADER_LEN
        for raw in packets:
            now = time()
            if offloaded:
                # A checksum the local kernel left partial: nothing on a wire to check.
                verify = not raw[0] & vnet.NEEDS_CSUM
                packet = raw[header_len:]
            else:
                verify = True
                packet = raw
            seg = parse(packet, now, verify)
            if seg is None:
                continue
            try:
                on_segment(seg, now)
            except Exception:
                self._core_failed(seg)

    def _parse(self, packet: bytes | bytearray, now: float, verify: bool,
               note: FaultNote | None = None) -> Segment | None:
        """The one step from a packet to a segment, for both receive loops: the Segment, or None
        when the packet is not one -- a datagram of another protocol went to `_receive_icmp`, a
        malformed one was recorded (when a capture runs) and counted."""
        try:
            return parse_packet(packet, verify_checksums=verify)
        except MalformedPacket as bad:
            if bad.reason is Reason.NOT_TCP:
                self._receive_icmp(packet, now, verify)  # the one way to ICMP: off the TCP path
                return None
            if self.capture is not None:
                self.capture.packet("in", now, packet, None, note)  # it crossed, corrupt or not
            assert self.host is not None
            self.host.on_malformed(bad.reason.value)
            return None

    def _core_failed(self, seg: Segment) -> None:
        """A bug in the core must not take the stack down: count it, log it, go on."""
        self.internal_errors += 1
        assert self.host is not None
        self.host.counters.inc("InternalErrors")
        log.exception("core failed on %s", seg.summary())

    def _receive(self, packet: bytes | bytearray, seg: Segment | None, now: float, verify: bool = True,
                 note: FaultNote | None = None) -> None:
        """One packet into the core (parsed here unless the caller already did), recorded first."""
        host = self.host
        assert host is not None
        if seg is None:
            seg = self._parse(packet, now, verify, note)
            if seg is None:
                return
        capture = self.capture
        if capture is not None:
            capture.packet("in", now, packet, seg, note)
        for observer in self.observers:
            observer("in", now, seg, packet, note)
        try:
            host.on_segment(seg, now)
        except Exception:
            self._core_failed(seg)

    def _receive_icmp(self, packet: bytes | bytearray, now: float, verify: bool) -> None:
        """A datagram that carries no TCP: ICMP goes to the host (stack.tcp.icmp), and what it
        answers (an echo reply) goes out at once; any other protocol is counted and dropped."""
        host = self.host
        assert host is not None
        capture = self.capture
        try:
            msg = parse_icmp(packet, verify_checksums=verify)
        except MalformedPacket as bad:
            if capture is not None:
                capture.icmp("in", now, packet, None)
            host.on_malformed(bad.reason.value, packet[0] >> 4)
            return
        if capture is not None:
            capture.icmp("in", now, packet, msg)
        try:
            reply = host.on_icmp(msg, now)
        except Exception:
            self.internal_errors += 1
            host.counters.inc("InternalErrors")
            log.exception("core failed on %s", msg.summary())
            return
        if reply is None:
            return
        out = build_icmp(reply)
        faults = self._faults
        for crossing in faults.outbound_icmp(out, now) if faults is not None else [Crossing(out, 0.0)]:
            if crossing.delay > 0:
                self.loop.call_later(crossing.delay, self._write_icmp, crossing.packet, reply)
            else:
                self._write_icmp(crossing.packet, reply)

    def _write_icmp(self, packet: bytes, msg: IcmpMessage) -> None:
        """An ICMP datagram the host sends crosses now (a fault rule may have changed its bytes)."""
        if self._closed:
            return
        if self.capture is not None:
            self.capture.icmp("out", self.loop.time(), packet, msg)
        self.link.write_batch([vnet.PLAIN + packet] if self._vnet else [packet])

    def _receive_late(self, packet: bytes, note: FaultNote | None) -> None:
        """A packet a `delay` or `reorder` rule held: it reaches the host (and the observers) now."""
        if self.host is not None and not self._closed:
            self._receive(packet, None, self.loop.time(), True, note)
            self._flush()

    def _write_late(self, seg: Segment, packet: bytes, note: FaultNote | None) -> None:
        """A segment a `delay` or `reorder` rule held: it crosses (and is observed) now."""
        if self._closed:
            return
        now = self.loop.time()
        self._observe_out(now, [seg], [packet], [note])
        self.link.write_batch(self._vnet_frames([seg], [packet]) if self._vnet else [packet])
        for hook in self.after_write:
            hook(now)

    def _vnet_frames(self, segments: list[Segment], packets: list[bytes]) -> list[bytes]:
        """Prefix the virtio-net header: segments beyond the connection's MSS go as GSO for the
        kernel to split; everything else needs nothing (its checksums are complete)."""
        frames = []
        for seg, packet in zip(segments, packets, strict=True):
            mss = self._gso_mss(seg)
            frames.append(vnet.gso_packet(packet, mss) if mss else vnet.PLAIN + packet)
        return frames

    def _gathered_frames(self, segments: list[Segment]) -> list[bytes | tuple[bytes, ...]]:
        """`_vnet_frames` when nobody needs the packets' bytes (no capture, observer or fault
        rule): a GSO segment goes as virtio-net header, headers and payload, gathered by the
        link's writev, with the TCP checksum left to the kernel -- the payload is neither
        copied nor summed here."""
        frames: list[bytes | tuple[bytes, ...]] = []
        for seg in segments:
            mss = self._gso_mss(seg)
            if mss:
                head = build_head_partial(seg)
                frames.append((vnet.gso_header(head, mss), head, seg.payload))
            else:
                frames.append(vnet.PLAIN + build_packet(seg))
        return frames

    def _gso_mss(self, seg: Segment) -> int:
        """The MSS the kernel is to split `seg` into, or 0 when it fits one segment as it is."""
        if len(seg.payload) <= 536:
            return 0
        host = self.host
        assert host is not None
        mss = host.send_mss((seg.src_addr, seg.src_port, seg.dst_addr, seg.dst_port)) or self.config.mss - 12
        return mss if len(seg.payload) > mss else 0

    def _release_faults(self) -> None:
        """Send on what `reorder` held back once its turn came (by count or by its timeout)."""
        faults = self._faults
        assert faults is not None
        now = self.loop.time()
        for rel in faults.released(now):
            note = FaultNote(rel.faults, rel.since)
            if rel.direction == "in":
                if rel.delay > 0:
                    self.loop.call_later(rel.delay, self._receive_late, rel.packet, note)
                else:
                    self._receive(rel.packet, None, now, True, note)
            elif rel.delay > 0:
                self.loop.call_later(rel.delay, self._write_late, rel.segment, rel.packet, note)
            else:
                self._write_late(rel.segment, rel.packet, note)
        deadline = faults.next_deadline()
        if self._fault_timer is not None:
            self._fault_timer.cancel()
            self._fault_timer = None
        if deadline is not None and not self._closed:
            self._fault_timer = self.loop.call_at(deadline, self._on_fault_timer)

    def _on_fault_timer(self) -> None:
        self._fault_timer = None
        self._release_faults()
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = float("inf")
        host = self.host
        if host is None:
            return
        host.on_timers(self.loop.time())
        self._flush()

    def kick(self) -> None:
        """An application call changed the core: send its output now (a flush in progress picks it
        up before it returns)."""
        if not self._flushing:
            self._flush()

    def call_soon_deliver(self, transport: TcpTransport) -> None:
        self.loop.call_soon(self._deliver, transport)

    def _deliver(self, transport: TcpTransport) -> None:
        transport.deliver()
        self.kick()

    def _flush(self) -> None:
        host = self.host
        if host is None or self._flushing:
            return
        self._flushing = True
        try:
            # Dispatching events runs application code (reads, writes, closes) that makes more
            # output: repeat until the host has nothing left, so none of it waits for the next packet.
            # Pending ACKs wait: events handled here wake coroutines (a connect's caller, a reader)
            # that often answer at once; they run before the ACK flush scheduled below, so their
            # answer carries the ACK (Linux delays the handshake's last ACK for a pending write).
            watching = bool(self.observers) or (self.capture is not None and self.capture.wants_states)
            for _ in range(1000):
                host.record_state_changes = watching  # nobody watching: build no events
                out = host.take(self.loop.time(), flush_acks=False)
                if out.segments:
                    self._transmit(out.segments)
                for event in out.events:
                    self._dispatch(event)
                if not host.has_output(acks=False):
                    break
        finally:
            self._flushing = False
        if host.has_output() and not self._acks_scheduled:
            self._acks_scheduled = True
            self.loop.call_soon(self._flush_acks)
        self._rearm()

    def _flush_acks(self) -> None:
        self._acks_scheduled = False
        host = self.host
        if host is None or self._closed or not host.has_output():
            return
        out = host.take(self.loop.time())
        if out.segments:
            self._transmit(out.segments)
        for event in out.events:
            self._dispatch(event)
        self._flush()

    def _transmit(self, segments: list[Segment]) -> None:
        faults = self._faults
        if self._gather and faults is None and not self.observers and self.capture is None:
            self.link.write_batch(self._gathered_frames(segments))
            self._after_write()
            return
        packets = [build_packet(seg) for seg in segments]
        notes: list[FaultNote | None] | None = None
        if faults is not None:
            now = self.loop.time()
            crossing: list[tuple[Segment, bytes, FaultNote | None]] = []
            for seg, packet in zip(segments, packets, strict=True):
                for c in faults.outbound(seg, packet, now):
                    note = FaultNote(c.faults, now) if c.faults else None
                    if c.delay > 0:
                        self.loop.call_later(c.delay, self._write_late, seg, c.packet, note)
                    else:
                        crossing.append((seg, c.packet, note))
            segments = [seg for seg, _, _ in crossing]
            packets = [data for _, data, _ in crossing]
            notes = [note for _, _, note in crossing]
        if self.observers or self.capture is not None:
            self._observe_out(self.loop.time(), segments, packets, notes)
        if self._vnet:
            packets = self._vnet_frames(segments, packets)
        self.link.write_batch(packets)
        if faults is not None:
            self._release_faults()
        self._after_write()

    def _after_write(self) -> None:
        if self.after_write:
            now = self.loop.time()
            for hook in self.after_write:
                hook(now)

    def _observe_out(self, now: float, segments: list[Segment], packets: list[bytes],
                     notes: list[FaultNote | None] | None) -> None:
        """Tell the capture and the observers about segments that cross now (what the peer gets)."""
        capture = self.capture
        observers = self.observers
        for i, (seg, packet) in enumerate(zip(segments, packets, strict=True)):
            note = notes[i] if notes is not None else None
            if note is not None:
                seg = shown_segment(seg, packet, note)
            if capture is not None:
                capture.packet("out", now, packet, seg, note)
            for observer in observers:
                observer("out", now, seg, packet, note)

    def _rearm(self) -> None:
        host = self.host
        if host is None or self._closed:
            return
        deadline = host.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_when = float("inf")
            return
        if self._timer is not None and self._timer_when <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timer)
        self._timer_when = deadline

    def _dispatch(self, event: object) -> None:
        t = type(event)
        if t is Readable or t is EndOfStream:
            transport = event.handle.user_data  # type: ignore[attr-defined]
            if isinstance(transport, TcpTransport):
                transport.deliver()
        elif t is Writable:
            transport = event.handle.user_data  # type: ignore[attr-defined]
            if isinstance(transport, TcpTransport):
                transport.writable()
        elif t is Accepted:
            self._accepted(event)  # type: ignore[arg-type]
        elif t is Connected:
            handle = event.handle  # type: ignore[attr-defined]
            fut = self._connecting.get(handle)
            transport = handle.user_data
            if isinstance(transport, TcpTransport):
                self._transports.add(transport)
                transport.get_protocol().connection_made(transport)
            if fut is not None and not fut.done():
                fut.set_result(transport)
        elif t is Closed:
            handle = event.handle  # type: ignore[attr-defined]
            fut = self._connecting.get(handle)
            if fut is not None and not fut.done():
                exc = close_exception(event.reason)  # type: ignore[attr-defined]
                fut.set_exception(exc or ConnectionAbortedError("connection closed"))
                return
            transport = handle.user_data
            if isinstance(transport, TcpTransport):
                transport.connection_closed(event.reason)  # type: ignore[attr-defined]
        elif t is StateChanged:
            if self.capture is not None:
                self.capture.state(event)  # type: ignore[arg-type]
            for observer in self.observers:
                observer("state", event.time, event)  # type: ignore[attr-defined]

    def _accepted(self, event: Accepted) -> None:
        server = self.servers.get(event.listen_port)
        handle = event.handle
        if server is None:
            handle.abort(self.now())
            return
        protocol = server.factory()
        transport = TcpTransport(self, handle, protocol)
        self._transports.add(transport)
        protocol.connection_made(transport)
        transport.deliver()

    def forget_transport(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)

    # ---------------------------------------------------------------- observation
    def state_of(self, local_port: int, remote: tuple[str, int]) -> State | None:
        host = self._host()
        state = host.state_for((host.local_address_for(remote[0]), local_port, remote[0], remote[1]))
        return None if state is State.LISTEN else state
