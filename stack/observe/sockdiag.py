"""The kernel's own view of its TCP sockets, via NETLINK_SOCK_DIAG (what `ss` uses), in microseconds.

The netlink socket is opened inside the namespace (stack.link.nsenter), so the dump lists exactly
the sockets of the kernel peer on the far side of the TUN device, TIME-WAIT ones included.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from stack.link.nsenter import netns_socket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
NLMSG_ERROR = 2

# Linux's TCP state numbers (include/net/tcp_states.h) and the names `ss` prints.
KERNEL_STATES = {
    1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
    7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "SYN-RECV",
}
# The same states as RFC 9293 spells them (for ladders beside the stack's own state names).
RFC_NAMES = {
    "ESTAB": "ESTABLISHED", "SYN-RECV": "SYN-RECEIVED", "UNCONN": "CLOSED",
}

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
_SOCKID = struct.Struct("!HH16s16s") # sport, dport (network order), src, dst
_MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans


@dataclass(frozen=True, slots=True)
class KernelSocket:
    state: str  # as `ss` prints it
    local: tuple[str, int]
    remote: tuple[str, int]
    timer: int
    retrans: int
    expires_ms: int
    recv_q: int
    send_q: int

    @property
    def rfc_state(self) -> str:
        return RFC_NAMES.get(self.state, self.state)


class SockDiag:
    """A reusable dump of the TCP sockets (IPv4 and IPv6) of one namespace (or of this one, with netns=None)."""

    def __init__(self, netns: str | None = None) -> None:
        if netns is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        else:
            self._sock = netns_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self._sock.setblocking(True)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SockDiag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(self) -> list[KernelSocket]:
        """Every TCP socket of the namespace: IPv4's, then IPv6's (one request per family, as ss)."""
        return self._dump(socket.AF_INET) + self._dump(socket.AF_INET6)

    def _dump(self, family: int) -> list[KernelSocket]:
        self._seq += 1
        body = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + bytes(48)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                                self._seq, 0)
        self._sock.send(header + body)
        found: list[KernelSocket] = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    raise OSError("sock_diag dump failed")
                found.append(_parse(data, offset + _NLMSGHDR.size))
                offset += (length + 3) & ~3
            if not data:
                return found

    def state_of(self, local_port: int, remote_port: int | None = None) -> str | None:
        """The `ss` state name of the socket bound to local_port (toward remote_port), if any."""
        for s in self.dump():
            if s.local[1] == local_port and (remote_port is None or s.remote[1] == remote_port):
                if s.state == "LISTEN" and remote_port is not None:
                    continue
                return s.state
        return None


def _address(family: int, raw: bytes) -> str:
    # inet_diag_sockid holds 16 octets for either family; IPv4 uses the first 4.
    return socket.inet_ntop(socket.AF_INET6, raw) if family == socket.AF_INET6 else socket.inet_ntoa(raw[:4])


def _parse(data: bytes, at: int) -> KernelSocket:
    family, state, timer, retrans = _MSG_HEAD.unpack_from(data, at)
    sport, dport, src, dst = _SOCKID.unpack_from(data, at + 4)
    expires, rqueue, wqueue = struct.unpack_from("=III", data, at + 4 + 48)
    return KernelSocket(
        KERNEL_STATES.get(state, str(state)),
        (_address(family, src), sport),
        (_address(family, dst), dport),
        timer, retrans, expires, rqueue, wqueue,
    )
