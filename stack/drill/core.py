"""Every call the drill makes into tcpstack's core, in one place (so a change of the core's API is
a change of this file only).

`Core` is one sans-IO `Host` on a virtual clock: raw packets in (`feed`), timers (`fire`), and
`drain()` for what it sent (as raw packets) and what happened (as plain `Notice` tuples). The
user calls of the socket facade (`sockets.py`) go through the functions below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.tcp.config import Config
from stack.tcp.connection import InvalidCall
from stack.tcp.events import Accepted, Closed, Connected, StateChanged
from stack.tcp.handle import ConnectionHandle
from stack.tcp.host import Host, Listener, PortInUse
from stack.tcp.states import State
from stack.tcp.tcb import Timer
from stack.wire.build import build_packet
from stack.wire.parse import parse_packet
from stack.wire.reasons import MalformedPacket

__all__ = ["Config", "ConnectionHandle", "Core", "InvalidCall", "Listener", "Notice", "PortInUse"]


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing the core reported: `kind` is accepted (conn, port), connected (conn), closed (conn,
    reason: normal/reset/refused/timed-out/aborted, and `old`: the state it was reset in), or state
    (`old` -> `new` of any 4-tuple, at `time`)."""

    kind: str
    conn: ConnectionHandle | None = None
    port: int = 0
    reason: str = ""
    old: str = ""
    new: str = ""
    time: float = 0.0
    four_tuple: tuple[str, int, str, int] | None = None


class Core:
    def __init__(self, address: str, config: Config) -> None:
        self.host = Host(address, config)
        self.now = 0.0

    @property
    def config(self) -> Config:
        return self.host.config

    def set_config_default(self, config: Config) -> None:
        """The configuration of sockets made from now on (a sysctl)."""
        self.host.config = config

    # ------------------------------------------------------------------ driver side
    def feed(self, raw: bytes) -> None:
        try:
            seg = parse_packet(raw)
        except MalformedPacket as exc:
            self.host.on_malformed(exc.reason.value)
            return
        self.host.on_segment(seg, self.now)

    def next_deadline(self) -> float | None:
        return self.host.next_deadline()

    def fire(self, now: float) -> None:
        self.now = max(self.now, now)
        self.host.on_timers(self.now)

    def drain(self) -> tuple[list[bytes], list[Notice]]:
        """What the host sent since the last call (IPv4 packets) and what it reported."""
        out = self.host.take(self.now)
        notices: list[Notice] = []
        for event in out.events:
            if isinstance(event, StateChanged):
                notices.append(Notice("state", old=event.old.value, new=event.new.value, time=event.time,
                                      four_tuple=event.four_tuple))
            elif isinstance(event, Accepted):
                notices.append(Notice("accepted", event.handle, port=event.listen_port))
            elif isinstance(event, Connected):
                notices.append(Notice("connected", event.handle))
            elif isinstance(event, Closed):
                history = event.handle.history
                last = history[-1][1].value if history else ""
                notices.append(Notice("closed", event.handle, reason=event.reason.value, old=last))
        return [build_packet(seg) for seg in out.segments], notices

    # ------------------------------------------------------------------ user calls
    def listen(self, port: int, backlog: int, config: Config) -> Listener:
        return self.host.listen(port, backlog, config)

    def unlisten(self, listener: Listener) -> None:
        listener.close(self.now)

    def set_listener_config(self, listener: Listener, config: Config) -> None:
        listener.config = config

    def connect(self, addr: str, port: int, config: Config, local_port: int | None) -> ConnectionHandle:
        return self.host.connect(addr, port, self.now, config=config, local_port=local_port)

    def send(self, conn: ConnectionHandle, data: bytes) -> int:
        return conn.send(data, self.now)

    def receive(self, conn: ConnectionHandle, size: int) -> bytes:
        return conn.receive(self.now, size)

    def shutdown(self, conn: ConnectionHandle, read: bool, write: bool) -> None:
        conn.shutdown(self.now, read=read, write=write)

    def close(self, conn: ConnectionHandle) -> None:
        conn.close(self.now)

    def abort(self, conn: ConnectionHandle) -> None:
        conn.abort(self.now)

    def set_linger0(self, conn: ConnectionHandle, on: bool) -> None:
        conn.linger0 = on

    def set_config(self, conn: ConnectionHandle, config: Config) -> None:
        """New options for a live connection (setsockopt after connect or accept). The handle has
        no call for it, so this reaches the TCB (`Host.tcb`); turning keepalive on, or changing its
        idle time, starts the keepalive timer over, as Linux's setsockopt does (tcp_set_keepalive,
        keepalive_time_when)."""
        tcb = Host.tcb(conn)
        old = tcb.cfg
        tcb.cfg = config
        if config.keepalive and tcb.state.synchronized and (
            not old.keepalive or old.keepalive_time != config.keepalive_time
        ):
            tcb.set_timer(Timer.KEEPALIVE, self.now + config.keepalive_time, self.host.context(self.now))

    # ------------------------------------------------------------------ what the facade reads
    @staticmethod
    def readable(conn: ConnectionHandle) -> int:
        return conn.recv_queue_len

    @staticmethod
    def unacked(conn: ConnectionHandle) -> int:
        return conn.send_queue_len

    @staticmethod
    def mss(conn: ConnectionHandle) -> int:
        return conn.info().snd_mss

    @staticmethod
    def peer_closed(conn: ConnectionHandle) -> bool:
        return conn.eof

    def sockets(self) -> list[tuple[str, int, int, str, str]]:
        """(ss state name, Recv-Q, Send-Q, local, peer) of every socket, as `ss -tan` lists them."""
        host = self.host
        rows: list[tuple[str, int, int, str, str]] = []
        local = host.addresses[0]
        for port, listener in sorted(host.listeners.items()):
            rows.append((State.LISTEN.ss_name, 0, listener.backlog, f"{local}:{port}", "0.0.0.0:*"))
        for conn in host.handles():
            la, lp, ra, rp = conn.four_tuple
            rows.append((conn.state.ss_name, conn.recv_queue_len, conn.send_queue_len, f"{la}:{lp}", f"{ra}:{rp}"))
        for tw in host.time_wait.values():
            la, lp, ra, rp = tw.four_tuple
            rows.append((State.TIME_WAIT.ss_name, 0, 0, f"{la}:{lp}", f"{ra}:{rp}"))
        return rows

    def counters(self) -> dict[str, Any]:
        return dict(self.host.counters)
