"""The names scripts use for constants (SOCK_STREAM, SO_LINGER, O_NONBLOCK, ECONNRESET, ...) and their
Linux values, plus the socket options and ioctls the drill runner supports on both targets."""

from __future__ import annotations

import errno
import fcntl
import os
import socket

# ioctls (include/uapi/asm-generic/ioctls.h, linux/sockios.h): SIOCINQ is FIONREAD, SIOCOUTQ TIOCOUTQ.
SIOCINQ = 0x541B
SIOCOUTQ = 0x5411

_NAMES = (
    "AF_INET", "SOCK_STREAM", "IPPROTO_TCP", "SOL_SOCKET", "SOL_TCP",
    "SO_REUSEADDR", "SO_LINGER", "SO_RCVBUF", "SO_SNDBUF", "SO_KEEPALIVE", "SO_ERROR",
    "TCP_NODELAY", "TCP_MAXSEG", "TCP_USER_TIMEOUT", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT",
    "SHUT_RD", "SHUT_WR", "SHUT_RDWR", "MSG_DONTWAIT", "MSG_NOSIGNAL",
)

# Every socket constant Python knows, so an option outside the supported set is named as such.
_PREFIXES = ("AF_", "SOCK_", "SOL_", "SO_", "TCP_", "IPPROTO_", "MSG_", "SHUT_")
VALUES: dict[str, int] = {
    name: int(getattr(socket, name))
    for name in dir(socket)
    if name.startswith(_PREFIXES) and isinstance(getattr(socket, name), int)
}
VALUES.update({name: int(getattr(socket, name)) for name in _NAMES})
VALUES.update(
    {
        "F_GETFL": fcntl.F_GETFL,
        "F_SETFL": fcntl.F_SETFL,
        "O_RDWR": os.O_RDWR,
        "O_NONBLOCK": os.O_NONBLOCK,
        "SIOCINQ": SIOCINQ,
        "FIONREAD": SIOCINQ,
        "SIOCOUTQ": SIOCOUTQ,
        "TIOCOUTQ": SIOCOUTQ,
    }
)
ERRNO_NAMES = frozenset(errno.errorcode.values())

# (level, option) pairs both targets implement; the rest of Linux's options are unsupported.
SOCKET_OPTIONS: dict[tuple[int, int], str] = {
    (socket.SOL_SOCKET, socket.SO_REUSEADDR): "SO_REUSEADDR",
    (socket.SOL_SOCKET, socket.SO_LINGER): "SO_LINGER",
    (socket.SOL_SOCKET, socket.SO_RCVBUF): "SO_RCVBUF",
    (socket.SOL_SOCKET, socket.SO_SNDBUF): "SO_SNDBUF",
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE): "SO_KEEPALIVE",
    (socket.SOL_SOCKET, socket.SO_ERROR): "SO_ERROR",
    (socket.IPPROTO_TCP, socket.TCP_NODELAY): "TCP_NODELAY",
    (socket.IPPROTO_TCP, socket.TCP_MAXSEG): "TCP_MAXSEG",
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT): "TCP_USER_TIMEOUT",
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): "TCP_KEEPIDLE",
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): "TCP_KEEPINTVL",
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): "TCP_KEEPCNT",
}
READ_ONLY_OPTIONS = frozenset({"SO_ERROR"})
IOCTLS = {SIOCINQ: "SIOCINQ", SIOCOUTQ: "SIOCOUTQ"}


def value_of(name: str) -> int | None:
    """The integer a symbol stands for (an errno name counts), or None if unknown."""
    if name in VALUES:
        return VALUES[name]
    if name in ERRNO_NAMES:
        return int(getattr(errno, name))
    return None


def errno_name(number: int) -> str:
    return errno.errorcode.get(number, str(number))
