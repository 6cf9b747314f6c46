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
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from stack.faults.adapter import FaultAdapter
from stack.faults.engine import FaultEngine
from stack.link import vnet
from stack.runtime.transport import TcpTransport, close_exception
from stack.tcp.config import Config
from stack.tcp.events import Accepted, Closed, Connected, EndOfStream, Readable, StateChanged, Writable
from stack.tcp.handle import ConnectionHandle
from stack.tcp.host import Host, Listener
from stack.tcp.states import State
from stack.wire import MalformedPacket, build_packet, parse_packet
from stack.wire.segment import Segment

log = logging.getLogger("tcpstack")

# An observer sees ("in" | "out", time, segment, packet bytes) for every segment and
# ("state", time, StateChanged) for every state change. Time is the loop's monotonic clock.
Observer = Callable[..., None]


class PacketLink(Protocol):
    def read_batch(self, max_packets: int = ...) -> list[bytes]: ...
    def write_batch(self, packets: list[bytes]) -> int: ...


class Server:
    """What `create_server`/`start_server` return (the shape of asyncio.Server)."""

    def __init__(self, stack: Stack, listener: Listener, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._stack = stack
        self.listener = listener
        self.factory = factory
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        return self.listener.port

    def close(self) -> None:
        if not self._closed.is_set():
            self.listener.close(self._stack.now())
            self._stack.servers.pop(self.listener.port, None)
            self._stack.kick()
            self._closed.set()

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Stack:
    """A tcpstack host on a link. Over TUN (the default) it owns a private network namespace whose
    kernel side is `peer_addr`; pass `link=` to run over anything with read_batch/write_batch."""

    def __init__(self, link: Any = None, *, config: Config | None = None, addr: str = "198.18.0.2",
                 peer_addr: str = "198.18.0.1", prefix: int = 24, netns: str | None = None,
                 mtu: int | None = None, faults: FaultEngine | None = None, offload: bool = True) -> None:
        self.config = config or Config()
        if mtu is not None and mtu != self.config.mtu:
            self.config = self.config.with_changes(mtu=mtu)
        self.addr = addr
        self.peer_addr = peer_addr
        self.prefix = prefix
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
        # Called with the time after each batch of packets was written to the link: the moment a
        # kernel peer has processed them (a TUN write runs the receive path before returning).
        self.after_write: list[Callable[[float], None]] = []
        self.internal_errors = 0
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
        if self.link is None:
            from stack.link.netns import Netns
            from stack.link.tun import TunLink

            ns = Netns(self._netns_name) if self._netns_name else None
            if ns is not None:
                ns.create()
            self.link = TunLink(ns, addr=self.addr, peer_addr=self.peer_addr, prefix=self.prefix,
                                mtu=self.config.mtu, offload=self.offload)
            self._own_netns = ns
            try:
                self.link.open()
            except BaseException:
                if ns is not None:
                    ns.delete()
                raise
        self.host = Host(self.addr, self.config, start=self.loop.time())
        self._vnet = bool(getattr(self.link, "offload", False))
        if self._vnet:
            # The kernel splits what we send: segments may carry up to 64 KB whatever the MTU.
            self.host.tso_size = 65535 - 20 - 60
        if self.faults is not None:
            self.faults.start = self.loop.time()  # after=/before= count from the stack's start
            self._faults = FaultAdapter(self.faults, self.host)
        if hasattr(self.link, "fileno"):
            self.loop.add_reader(self.link.fileno(), self._on_readable)
        else:
            self.link.attach(self.loop, self._on_readable)

    async def aclose(self) -> None:
        """Reset whatever is still open, then tear the link (and its namespace) down."""
        if self._closed or self.host is None:
            return
        self._closed = True
        for server in list(self.servers.values()):
            server.close()
        now = self.now()
        for handle in self.host.handles():
            handle.abort(now)
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
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
            for data, seg, delay in faults.inbound_packet(bytes(packet), now):
                if delay > 0:
                    self.loop.call_later(delay, self._receive_late, data)
                else:
                    self._receive(data, seg, now)
        if faults is not None:
            self._release_faults()
        self._flush()

    def _receive(self, packet: bytes | bytearray, seg: Segment | None, now: float, verify: bool = True) -> None:
        """One packet into the core (parsed here unless the caller already did)."""
        host = self.host
        assert host is not None
        if seg is None:
            try:
                seg = parse_packet(packet, verify_checksums=verify)
            except MalformedPacket as bad:
                host.on_malformed(bad.reason.value)
                return
        for observer in self.observers:
            observer("in", now, seg, packet)
        try:
            host.on_segment(seg, now)
        except Exception:
            # A bug in the core must not take the stack down: count it, log it, go on.
            self.internal_errors += 1
            host.counters.inc("InternalErrors")
            log.exception("core failed on %s", seg.summary())

    def _receive_late(self, packet: bytes) -> None:
        if self.host is not None and not self._closed:
            self._receive(packet, None, self.loop.time())
            self._flush()

    def _write_late(self, packet: bytes) -> None:
        if not self._closed:
            self.link.write_batch([vnet.PLAIN + packet] if self._vnet else [packet])

    def _vnet_frames(self, segments: list[Segment], packets: list[bytes]) -> list[bytes]:
        """Prefix the virtio-net header: segments beyond the connection's MSS go as GSO for the
        kernel to split; everything else needs nothing (its checksums are complete)."""
        host = self.host
        assert host is not None
        frames = []
        for seg, packet in zip(segments, packets, strict=True):
            if len(seg.payload) > 536:
                mss = host.send_mss((seg.src_addr, seg.src_port, seg.dst_addr, seg.dst_port)) or self.config.mss - 12
                if len(seg.payload) > mss:
                    frames.append(vnet.gso_packet(packet, mss))
                    continue
            frames.append(vnet.PLAIN + packet)
        return frames

    def _release_faults(self) -> None:
        """Send on what `reorder` held back once its turn came (by count or by its timeout)."""
        faults = self._faults
        assert faults is not None
        now = self.loop.time()
        for rel in faults.released(now):
            if rel.direction == "in":
                if rel.delay > 0:
                    self.loop.call_later(rel.delay, self._receive_late, rel.packet)
                else:
                    self._receive(rel.packet, None, now)
            elif rel.delay > 0:
                self.loop.call_later(rel.delay, self._write_late, rel.packet)
            else:
                self._write_late(rel.packet)
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
            for _ in range(1000):
                host.record_state_changes = bool(self.observers)  # nobody watching: build no events
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
        packets = [build_packet(seg) for seg in segments]
        faults = self._faults
        if faults is not None:
            now = self.loop.time()
            crossing: list[tuple[Segment, bytes]] = []
            for seg, packet in zip(segments, packets, strict=True):
                for data, delay in faults.outbound(seg, packet, now):
                    if delay > 0:
                        self.loop.call_later(delay, self._write_late, data)
                    else:
                        crossing.append((seg, data))
            segments = [seg for seg, _ in crossing]
            packets = [data for _, data in crossing]
        if self.observers:
            now = self.loop.time()
            for seg, packet in zip(segments, packets, strict=True):
                for observer in self.observers:
                    observer("out", now, seg, packet)
        if self._vnet:
            packets = self._vnet_frames(segments, packets)
        self.link.write_batch(packets)
        if faults is not None:
            self._release_faults()
        if self.after_write:
            now = self.loop.time()
            for hook in self.after_write:
                hook(now)

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
        elif t is StateChanged and self.observers:
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
        state = self._host().state_for((self.addr, local_port, remote[0], remote[1]))
        return None if state is State.LISTEN else state
