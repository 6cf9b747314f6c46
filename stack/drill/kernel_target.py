"""The kernel target: what packetdrill does, in Python.

Each run gets a private network namespace (`stack.link.netns.Netns`) whose kernel owns 198.18.0.1
on a TUN device (`stack.link.tun.TunLink`). The TUN device plays the remote peer: inbound script
packets are written into it (the kernel receives them from 198.18.0.2), and everything the kernel
sends to 198.18.0.2 is read from it, timestamped on arrival and matched against the script. The
system calls run on real kernel sockets created inside the namespace from this process
(`stack.link.nsenter`); they are non-blocking underneath and `calls` emulates blocking. Sysctls
are set with `ip netns exec NS sysctl` inside that namespace only; the host is never touched.
The namespace (and with it the TUN device and every socket) is deleted when the run ends.
"""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from stack.drill.calls import OptionValue
from stack.drill.runner import BIND_PORT, LOCAL_ADDR, REMOTE_ADDR, PollFn, WatchFn
from stack.link.netns import Netns
from stack.link.nsenter import entered
from stack.link.tun import TunLink

StateProbe = Callable[[], "str | None"]
"""The state of the connection under test (RFC 9293 names), e.g. read with sock_diag; for ladders."""

# Settings a new namespace copies from the host rather than taking Linux's own defaults: pinned, so
# a script means the same on every machine (packetdrill's test suite pins its sysctls too). The
# congestion control matters most: BBR, a common host choice, paces every segment. Reno (Linux's
# NewReno, RFC 6582) is tcpstack's default algorithm, and one any namespace may choose.
BASELINE_SYSCTLS: tuple[tuple[str, str], ...] = (("net.ipv4.tcp_congestion_control", "reno"),)

CANCEL_CHECK = 0.2  # seconds between looks at the cancel flag while waiting

_LINGER = struct.Struct("ii")


class RunCancelled(RuntimeError):
    """The run was stopped from outside (the runner reports it like a crash, and nobody reads it)."""
_INT = struct.Struct("i")


class KernelSockets:
    """SocketApi over real kernel sockets in the namespace (always non-blocking underneath)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.open: list[socket.socket] = []

    @staticmethod
    def _sock(h: object) -> socket.socket:
        assert isinstance(h, socket.socket)
        return h

    def socket(self) -> object:
        with entered(self.netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self.open.append(sock)
        return sock

    def bind(self, h: object) -> None:
        self._sock(h).bind(("0.0.0.0", BIND_PORT))

    def listen(self, h: object, backlog: int) -> None:
        self._sock(h).listen(backlog)

    def accept(self, h: object) -> object:
        conn, _ = self._sock(h).accept()
        conn.setblocking(False)
        self.open.append(conn)
        return conn

    def connect(self, h: object) -> None:
        self._sock(h).connect((REMOTE_ADDR, BIND_PORT))

    def connect_result(self, h: object) -> None:
        sock = self._sock(h)
        _, writable, _ = select.select([], [sock], [], 0)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, "connect")
        if not writable:
            raise BlockingIOError

    def recv(self, h: object, size: int) -> bytes:
        return self._sock(h).recv(size)

    def send(self, h: object, data: bytes) -> int:
        return self._sock(h).send(data, socket.MSG_NOSIGNAL)

    def close(self, h: object) -> None:
        sock = self._sock(h)
        if sock in self.open:
            self.open.remove(sock)
        sock.close()

    def shutdown(self, h: object, how: int) -> None:
        self._sock(h).shutdown(how)

    def setsockopt(self, h: object, level: int, name: int, value: OptionValue) -> None:
        if isinstance(value, tuple):
            self._sock(h).setsockopt(level, name, _LINGER.pack(*value))
        else:
            self._sock(h).setsockopt(level, name, value)

    def getsockopt(self, h: object, level: int, name: int) -> OptionValue:
        if name == socket.SO_LINGER and level == socket.SOL_SOCKET:
            onoff, linger = _LINGER.unpack(self._sock(h).getsockopt(level, name, _LINGER.size))
            return (onoff, linger)
        return self._sock(h).getsockopt(level, name)

    def ioctl(self, h: object, request: int) -> int:
        raw = fcntl.ioctl(self._sock(h).fileno(), request, _INT.pack(0))
        return int(_INT.unpack(raw)[0])

    def fileno(self, h: object) -> int | None:
        return self._sock(h).fileno()

    def close_all(self) -> None:
        for sock in self.open:
            sock.close()
        self.open.clear()


class KernelTarget:
    name = "kernel"

    def __init__(self, probe_factory: Callable[[str], StateProbe] | None = None,
                 cancel: threading.Event | None = None) -> None:
        self._cancel = cancel  # set: the run is no longer wanted (another run failed first)
        self.netns = Netns().create()
        try:
            self.link = TunLink(self.netns).open()
            self.api = KernelSockets(self.netns.name)
            self._probe = probe_factory(self.netns.name) if probe_factory is not None else None
            error = self.sysctl(BASELINE_SYSCTLS)
            if error is not None:
                raise RuntimeError(f"cannot set the kernel target's baseline sysctls: {error}")
        except BaseException:
            self.netns.delete()
            raise
        self._queue: deque[tuple[float, bytes]] = deque()
        self._states: list[tuple[float, str]] = []
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _drain(self) -> None:
        packets = self.link.read_batch()
        if not packets:
            return
        at = self.now()
        local = socket.inet_aton(LOCAL_ADDR)
        for raw in packets:
            # Only what the kernel sends as 198.18.0.1 over TCP: the script's peer sees nothing else.
            if len(raw) >= 20 and raw[0] >> 4 == 4 and raw[9] == socket.IPPROTO_TCP and raw[12:16] == local:
                self._queue.append((at, raw))
        self._note_state(at)  # what the kernel sent is what its state change (a close, say) caused

    def _note_state(self, at: float | None = None) -> None:
        if self._probe is None:
            return
        state = self._probe()
        if state is not None and (not self._states or self._states[-1][1] != state):
            self._states.append((self.now() if at is None else at, state))

    def wait(self, until: float, poll: PollFn, watch: WatchFn, want_packet: bool) -> None:
        fd = self.link.fileno()
        while True:
            self._drain()
            stop = poll()
            self._note_state()
            if stop:
                return
            if want_packet and self._queue:
                return
            remaining = until - self.now()
            if remaining <= 0:
                return
            if self._cancel is not None:
                if self._cancel.is_set():
                    raise RunCancelled("the run was cancelled")
                remaining = min(remaining, CANCEL_CHECK)
            readers: list[int] = [fd]
            writers: list[int] = []
            watched = watch()
            if watched is not None:
                (readers if watched[1] == "r" else writers).append(watched[0])
            select.select(readers, writers, [], remaining)

    def inject(self, packet: bytes, poll: PollFn) -> None:
        # The kernel processes a packet written to the TUN device before write() returns, so a
        # call it unblocks is seen (and timed) right here.
        self.link.write(packet)
        poll()
        self._note_state()

    def take_packet(self) -> tuple[float, bytes] | None:
        self._drain()
        return self._queue.popleft() if self._queue else None

    def sysctl(self, settings: tuple[tuple[str, str], ...]) -> str | None:
        argv = ["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in settings)]
        done = self.netns.run(argv, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            return (done.stderr.strip() or f"sysctl exited with {done.returncode}").splitlines()[0]
        return None

    def ss_lines(self, state: str | None) -> list[str]:
        argv = ["ss", "-tanH"] + (["state", state] if state else [])
        done = self.netns.run(argv, capture_output=True, text=True, timeout=10)
        return [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip()]

    def state_changes(self) -> list[tuple[float, str]]:
        return list(self._states)

    def close(self) -> None:
        try:
            self.api.close_all()
            self.link.close()
        finally:
            self.netns.delete()
