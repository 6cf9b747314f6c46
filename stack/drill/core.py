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
from stack.tcp.connection import Connection, ConnectionError_
from stack.tcp.events import Accepted, Closed, Connected, StateChanged
from stack.tcp.host import Host, Listener, PortInUse
from stack.tcp.states import State
from stack.tcp.timers import Timer
from stack.wire.build import build_packet
from stack.wire.parse import parse_packet
from stack.wire.reasons import MalformedPacket

__all__ = ["Config", "Connection", "ConnectionError_", "Core", "Listener", "Notice", "PortInUse"]


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing the core reported: `kind` is accepted (conn, port), connected (conn), closed (conn,
    reason: normal/reset/refused/timed-out/aborted, and `old`: the state it was reset in), or state
    (`old` -> `new` of any 4-tuple, at `time`)."""

    kind: str
    conn: Connection | None = None
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
        self._last_state: dict[Connection, str] = {}

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

    def has_output(self) -> bool:
        return self.host.has_output()

    def drain(self) -> tuple[list[bytes], list[Notice]]:
        """What the host sent since the last call (IPv4 packets) and what it reported."""
        out = self.host.take()
        notices: list[Notice] = []
        for event in out.events:
            if isinstance(event, StateChanged):
                notices.append(Notice("state", old=event.old.value, new=event.new.value, time=event.time,
                                      four_tuple=event.four_tuple))
            elif isinstance(event, Accepted):
                notices.append(Notice("accepted", event.conn, port=event.listen_port))
            elif isinstance(event, Connected):
                notices.append(Notice("connected", event.conn))
            elif isinstance(event, Closed):
                last = event.conn.history[-1][1].value if event.conn.history else ""
                notices.append(Notice("closed", event.conn, reason=event.reason.value, old=last))
        return [build_packet(seg) for seg in out.segments], notices

    # ------------------------------------------------------------------ user calls
    def listen(self, port: int, backlog: int, config: Config) -> Listener:
        return self.host.listen(port, backlog, config)

    def unlisten(self, listener: Listener) -> None:
        listener.close(self.now)

    def set_listener_config(self, listener: Listener, config: Config) -> None:
        listener.config = config

    def connect(self, addr: str, port: int, config: Config, local_port: int | None) -> Connection:
        return self.host.connect(addr, port, self.now, config=config, local_port=local_port)

    def send(self, conn: Connection, data: bytes) -> int:
        return conn.send(data, self.now)

    def receive(self, conn: Connection, size: int) -> bytes:
        return conn.receive(self.now, size)

    def shutdown(self, conn: Connection, read: bool, write: bool) -> None:
        conn.shutdown(self.now, read=read, write=write)

    def close(self, conn: Connection) -> None:
        conn.close(self.now)

    def abort(self, conn: Connection) -> None:
        conn.abort(self.now)

    def set_linger0(self, conn: Connection, on: bool) -> None:
        conn.linger0 = on

    def set_config(self, conn: Connection, config: Config) -> None:
        """New options for a live connection; turning keepalive on (or changing its idle time) starts
        the keepalive timer over, as Linux's setsockopt does (tcp_set_keepalive, keepalive_time_when)."""
        old = conn.cfg
        conn.cfg = config
        if config.keepalive and conn.state.synchronized and (
            not old.keepalive or old.keepalive_time != config.keepalive_time
        ):
            conn.set_timer(Timer.KEEPALIVE, self.now + config.keepalive_time)

    # ------------------------------------------------------------------ what the facade reads
    @staticmethod
    def state(conn: Connection) -> str:
        return conn.state.value

    @staticmethod
    def established(conn: Connection) -> bool:
        return conn.state.synchronized

    @staticmethod
    def closed(conn: Connection) -> bool:
        return conn.state is State.CLOSED or conn.state is State.TIME_WAIT or conn.close_reason is not None

    @staticmethod
    def readable(conn: Connection) -> int:
        return conn.recv_queue_len

    @staticmethod
    def unacked(conn: Connection) -> int:
        return conn.send_queue_len

    @staticmethod
    def mss(conn: Connection) -> int:
        return conn.snd_mss

    @staticmethod
    def peer_closed(conn: Connection) -> bool:
        return conn.peer_fin

    @staticmethod
    def local_port(conn: Connection) -> int:
        return conn.four_tuple[1]

    def sockets(self) -> list[tuple[str, int, int, str, str]]:
        """(ss state name, Recv-Q, Send-Q, local, peer) of every socket, as `ss -tan` lists them."""
        host = self.host
        rows: list[tuple[str, int, int, str, str]] = []
        local = host.addresses[0]
        for port, listener in sorted(host.listeners.items()):
            rows.append((State.LISTEN.ss_name, 0, listener.backlog, f"{local}:{port}", "0.0.0.0:*"))
        for conn in host.connections.values():
            la, lp, ra, rp = conn.four_tuple
            rows.append((conn.state.ss_name, conn.recv_queue_len, conn.send_queue_len, f"{la}:{lp}", f"{ra}:{rp}"))
        for tw in host.time_wait.values():
            la, lp, ra, rp = tw.four_tuple
            rows.append((State.TIME_WAIT.ss_name, 0, 0, f"{la}:{lp}", f"{ra}:{rp}"))
        return rows

    def counters(self) -> dict[str, Any]:
        return dict(self.host.counters)
