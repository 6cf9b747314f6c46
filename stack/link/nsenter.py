"""Kernel sockets inside a network namespace, opened from this very process.

`setns(2)` moves only the calling thread, and a socket keeps the namespace it was created in. So
entering the namespace, creating a socket and leaving again gives this process a real kernel socket
on the far side of the TUN device, usable from the same asyncio loop as the stack. Tests, the demo
and the benchmarks use it to be the kernel peer without a subprocess per connection.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the body with this thread inside namespace `netns` (as `ip netns exec` would)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def netns_socket(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
                 proto: int = 0) -> socket.socket:
    """A kernel socket that lives in `netns` (non-blocking, ready for asyncio)."""
    with entered(netns):
        sock = socket.socket(family, type, proto)
    sock.setblocking(False)
    return sock
