"""A socket-like facade of tcpstack for the stack target: what a Linux socket does, over `core.Core`.

The socket layer's rules are Linux's (inet_*/tcp_* in net/ipv4), so that the same script means
the same thing on both targets: an accept queue of established connections; a reset becomes the
socket's pending error (ECONNREFUSED in SYN-SENT, EPIPE in CLOSE-WAIT, ECONNRESET otherwise, as
tcp_reset sets it), which the next call reports once, after which reads see end of file and
writes EPIPE; closing a listener resets the connections nobody accepted; SO_RCVBUF and SO_SNDBUF
read back doubled. The options map to `Config` fields of the connection (or of the listener,
whose connections inherit them). Nothing blocks here: `calls` emulates blocking.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.drill.calls import OptionValue
from stack.drill.core import Config, ConnectionHandle, Core, InvalidCall, Listener, Notice, PortInUse
from stack.drill.runner import BIND_PORT, REMOTE_ADDR
from stack.drill.symbols import SIOCINQ

_RESET_ERRNO = {"refused": errno.ECONNREFUSED, "timed-out": errno.ETIMEDOUT, "net-unreachable": errno.ENETUNREACH,
                "host-unreachable": errno.EHOSTUNREACH, "protocol-unreachable": errno.ENOPROTOOPT,
                "prohibited": errno.EACCES, "protocol-error": errno.EPROTO}
_TCP = socket.IPPROTO_TCP
_SOL = socket.SOL_SOCKET


def _err(number: int) -> OSError:
    return OSError(number, errno.errorcode.get(number, str(number)))


@dataclass(eq=False)
class FacadeSocket:
    config: Config
    bound: bool = False
    listener: Listener | None = None
    queue: deque[FacadeSocket] = field(default_factory=deque)
    conn: ConnectionHandle | None = None
    connecting: bool = False
    connect_pending: bool = False  # a non-blocking connect() started; the next connect() reports the end
    dead: bool = False  # the connection is gone (closed or reset)
    err: int = 0  # the pending error (Linux sk_err)
    shut_rd: bool = False
    shut_wr: bool = False
    linger: tuple[int, int] = (0, 0)
    reuseaddr: int = 0
    bufs: dict[int, int] = field(default_factory=dict)  # SO_RCVBUF/SO_SNDBUF as set (reported doubled)
    maxseg: int = 0


class StackSockets:
    """SocketApi over tcpstack. `sync` is called before every call: the driver's chance to deliver
    what the core has reported (a socket call runs after the packets before it were processed)."""

    def __init__(self, core: Core, sync: Callable[[], None] | None = None) -> None:
        self.core = core
        self.by_conn: dict[ConnectionHandle, FacadeSocket] = {}
        self.listening: dict[int, FacadeSocket] = {}
        self._sync = sync

    def sync(self) -> None:
        if self._sync is not None:
            self._sync()

    @staticmethod
    def _s(h: object) -> FacadeSocket:
        assert isinstance(h, FacadeSocket)
        return h

    # ------------------------------------------------------------------ notices from the core
    def notify(self, notices: list[Notice]) -> None:
        for n in notices:
            if n.kind == "accepted" and n.conn is not None:
                parent = self.listening.get(n.port)
                if parent is None:
                    continue
                child = FacadeSocket(parent.config, linger=parent.linger, bufs=dict(parent.bufs))
                child.conn = n.conn
                self.by_conn[n.conn] = child
                parent.queue.append(child)
            elif n.kind == "connected" and n.conn in self.by_conn:
                self.by_conn[n.conn].connecting = False
            elif n.kind == "closed" and n.conn in self.by_conn:
                sock = self.by_conn.pop(n.conn)
                sock.dead = True
                sock.connecting = False
                if n.reason == "reset":
                    sock.err = errno.EPIPE if n.old == "CLOSE-WAIT" else errno.ECONNRESET
                elif n.reason in _RESET_ERRNO:
                    sock.err = _RESET_ERRNO[n.reason]

    # ------------------------------------------------------------------ SocketApi
    def socket(self) -> object:
        return FacadeSocket(self.core.config)

    def bind(self, h: object) -> None:
        s = self._s(h)
        if BIND_PORT in self.listening:
            raise _err(errno.EADDRINUSE)
        s.bound = True

    def listen(self, h: object, backlog: int) -> None:
        self.sync()
        s = self._s(h)
        if s.conn is not None:
            raise _err(errno.EINVAL)
        if s.listener is None:
            try:
                s.listener = self.core.listen(BIND_PORT, max(1, backlog), s.config)
            except PortInUse:
                raise _err(errno.EADDRINUSE) from None
            self.listening[BIND_PORT] = s

    def accept(self, h: object) -> object:
        self.sync()
        s = self._s(h)
        if s.listener is None:
            raise _err(errno.EINVAL)
        if not s.queue:
            raise BlockingIOError(errno.EAGAIN, "accept")
        return s.queue.popleft()

    def connect(self, h: object) -> None:
        self.sync()
        s = self._s(h)
        if s.connecting:
            raise _err(errno.EALREADY)
        if s.connect_pending and s.conn is not None:
            # Linux (inet_stream_connect) reports the end of a connect that went on in the background
            # to the next connect(): 0 once established, the error if it failed; EISCONN after that.
            s.connect_pending = False
            if s.err:
                err, s.err = s.err, 0
                raise _err(err)
            return
        if s.conn is not None:
            raise _err(errno.EISCONN)
        try:
            s.conn = self.core.connect(REMOTE_ADDR, BIND_PORT, s.config, BIND_PORT if s.bound else None)
        except PortInUse:
            raise _err(errno.EADDRNOTAVAIL) from None
        self.core.set_linger0(s.conn, s.linger == (1, 0))
        self.by_conn[s.conn] = s
        s.connecting = s.connect_pending = True
        raise BlockingIOError(errno.EINPROGRESS, "connect")

    def connect_result(self, h: object) -> None:
        self.sync()
        s = self._s(h)
        if not s.connecting:
            s.connect_pending = False  # a blocking connect() reports its own end
        if s.err:
            err, s.err = s.err, 0
            raise _err(err)
        if s.connecting:
            raise BlockingIOError(errno.EINPROGRESS, "connect")

    def recv(self, h: object, size: int) -> bytes:
        self.sync()
        s = self._s(h)
        if s.conn is None:
            raise _err(errno.ENOTCONN)
        if self.core.readable(s.conn) and not s.shut_rd:
            return self.core.receive(s.conn, size)
        if s.err:
            err, s.err = s.err, 0
            raise _err(err)
        if s.shut_rd or s.dead or self.core.peer_closed(s.conn):
            return b""
        raise BlockingIOError(errno.EAGAIN, "recv")

    def send(self, h: object, data: bytes) -> int:
        self.sync()
        s = self._s(h)
        if s.conn is None:
            raise _err(errno.EPIPE)  # Linux: sk_stream_wait_connect on a socket that is not connecting
        if s.err:
            err, s.err = s.err, 0
            raise _err(err)
        if s.shut_wr or s.dead:
            raise _err(errno.EPIPE)
        if s.connecting:
            raise BlockingIOError(errno.EAGAIN, "send")
        try:
            n = self.core.send(s.conn, data)
        except InvalidCall:
            raise _err(errno.EPIPE) from None
        if n == 0:
            raise BlockingIOError(errno.EAGAIN, "send")
        return n

    def close(self, h: object) -> None:
        self.sync()
        s = self._s(h)
        if s.listener is not None:
            self.core.unlisten(s.listener)
            self.listening.pop(BIND_PORT, None)
            while s.queue:  # Linux resets what nobody accepted (inet_csk_listen_stop)
                child = s.queue.popleft()
                if child.conn is not None and not child.dead:
                    self.core.abort(child.conn)
            return
        if s.conn is not None and not s.dead:
            self.core.set_linger0(s.conn, s.linger == (1, 0))
            self.core.close(s.conn)

    def shutdown(self, h: object, how: int) -> None:
        self.sync()
        s = self._s(h)
        if s.listener is not None:
            # Linux inet_shutdown: SHUT_WR on a listener does nothing, SHUT_RD stops it listening.
            if how != socket.SHUT_WR:
                self.close(h)
                s.listener = None
            return
        if s.conn is None or s.dead:
            raise _err(errno.ENOTCONN)
        read, write = how in (socket.SHUT_RD, socket.SHUT_RDWR), how in (socket.SHUT_WR, socket.SHUT_RDWR)
        s.shut_rd = s.shut_rd or read
        s.shut_wr = s.shut_wr or write
        self.core.shutdown(s.conn, read, write)

    def setsockopt(self, h: object, level: int, name: int, value: OptionValue) -> None:
        self.sync()
        s = self._s(h)
        if isinstance(value, tuple):  # SO_LINGER
            s.linger = (1, 0) if value[0] and value[1] == 0 else (0, 0)
            if s.conn is not None and not s.dead:
                self.core.set_linger0(s.conn, s.linger == (1, 0))
            return
        cfg = s.config
        if (level, name) == (_SOL, socket.SO_REUSEADDR):
            s.reuseaddr = int(bool(value))
            return
        if (level, name) == (_SOL, socket.SO_RCVBUF):
            s.bufs[name] = value
            cfg = cfg.with_changes(recv_buffer=max(value, 1))
        elif (level, name) == (_SOL, socket.SO_SNDBUF):
            s.bufs[name] = value
            cfg = cfg.with_changes(send_buffer=max(value, 1))
        elif (level, name) == (_SOL, socket.SO_KEEPALIVE):
            cfg = cfg.with_changes(keepalive=bool(value))
        elif (level, name) == (_TCP, socket.TCP_NODELAY):
            cfg = cfg.with_changes(nagle=not value)
        elif (level, name) == (_TCP, socket.TCP_MAXSEG):
            s.maxseg = value
            cfg = cfg.with_changes(mtu=value + 40)
        elif (level, name) == (_TCP, socket.TCP_USER_TIMEOUT):
            cfg = cfg.with_changes(user_timeout=value / 1000.0 if value else None)
        elif (level, name) == (_TCP, socket.TCP_KEEPIDLE):
            cfg = cfg.with_changes(keepalive_time=float(value))
        elif (level, name) == (_TCP, socket.TCP_KEEPINTVL):
            cfg = cfg.with_changes(keepalive_interval=float(value))
        elif (level, name) == (_TCP, socket.TCP_KEEPCNT):
            cfg = cfg.with_changes(keepalive_probes=value)
        else:
            raise _err(errno.ENOPROTOOPT)
        s.config = cfg
        if s.listener is not None:
            self.core.set_listener_config(s.listener, cfg)
        if s.conn is not None and not s.dead:
            self.core.set_config(s.conn, cfg)

    def getsockopt(self, h: object, level: int, name: int) -> OptionValue:
        self.sync()
        s = self._s(h)
        cfg = s.config
        if (level, name) == (_SOL, socket.SO_ERROR):
            err, s.err = s.err, 0
            return err
        if (level, name) == (_SOL, socket.SO_LINGER):
            return s.linger
        values: dict[tuple[int, int], int] = {
            (_SOL, socket.SO_REUSEADDR): s.reuseaddr,
            (_SOL, socket.SO_RCVBUF): 2 * s.bufs.get(socket.SO_RCVBUF, cfg.recv_buffer // 2),
            (_SOL, socket.SO_SNDBUF): 2 * s.bufs.get(socket.SO_SNDBUF, cfg.send_buffer // 2),
            (_SOL, socket.SO_KEEPALIVE): int(cfg.keepalive),
            (_TCP, socket.TCP_NODELAY): int(not cfg.nagle),
            (_TCP, socket.TCP_MAXSEG): self.core.mss(s.conn) if s.conn is not None else (s.maxseg or 536),
            (_TCP, socket.TCP_USER_TIMEOUT): int((cfg.user_timeout or 0) * 1000),
            (_TCP, socket.TCP_KEEPIDLE): int(cfg.keepalive_time),
            (_TCP, socket.TCP_KEEPINTVL): int(cfg.keepalive_interval),
            (_TCP, socket.TCP_KEEPCNT): cfg.keepalive_probes,
        }
        if (level, name) not in values:
            raise _err(errno.ENOPROTOOPT)
        return values[(level, name)]

    def ioctl(self, h: object, request: int) -> int:
        self.sync()
        s = self._s(h)
        if s.listener is not None:
            raise _err(errno.EINVAL)
        if s.conn is None or s.dead:
            return 0
        return self.core.readable(s.conn) if request == SIOCINQ else self.core.unacked(s.conn)

    def fileno(self, h: object) -> int | None:
        return None
