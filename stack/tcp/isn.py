"""Initial sequence numbers per RFC 6528, and per-connection timestamp offsets (RFC 7323 §7.1).

ISN = M + F(local address, local port, remote address, remote port, secret): M a clock ticking every
4 microseconds (RFC 9293 §3.4.1), F a keyed hash. The clock reading comes in as `now`; the core reads
no clock of its own.
"""

from __future__ import annotations

import hashlib
import os

from stack.tcp.config import FourTuple
from stack.tcp.seq import MASK

PORT_OFFSETS_KEPT = 4096  # destinations whose port offset is remembered (a client talks to few)


class IsnGenerator:
    __slots__ = ("_port_offsets", "_secret")

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(16)
        # The offset is a function of the destination alone: kept, so a client opening many
        # connections to one server hashes once, not once per connect.
        self._port_offsets: dict[tuple[str, int], int] = {}

    @property
    def secret(self) -> bytes:
        return self._secret

    def _digest(self, four_tuple: FourTuple) -> bytes:
        la, lp, ra, rp = four_tuple
        return hashlib.blake2b(f"{la}|{lp}|{ra}|{rp}".encode(), key=self._secret, digest_size=8).digest()

    def isn(self, four_tuple: FourTuple, now: float) -> int:
        f = int.from_bytes(self._digest(four_tuple)[:4], "big")
        m = int(now * 250_000)  # the 4 µs clock
        return (m + f) & MASK

    def ts_offset(self, four_tuple: FourTuple) -> int:
        """A per-4-tuple random offset for TSval, so timestamps reveal no host uptime."""
        return int.from_bytes(self._digest(four_tuple)[4:], "big")

    def isn_and_ts_offset(self, four_tuple: FourTuple, now: float) -> tuple[int, int]:
        """`isn` and `ts_offset` together, from one digest (a new connection needs both)."""
        digest = self._digest(four_tuple)
        return (int(now * 250_000) + int.from_bytes(digest[:4], "big")) & MASK, int.from_bytes(digest[4:], "big")

    def port_offset(self, remote_addr: str, remote_port: int) -> int:
        """Where the ephemeral-port search starts for a destination (RFC 6056 §3.3.3 style)."""
        dest = (remote_addr, remote_port)
        offset = self._port_offsets.get(dest)
        if offset is None:
            digest = hashlib.blake2b(f"{remote_addr}|{remote_port}".encode(), key=self._secret, digest_size=4)
            offset = int.from_bytes(digest.digest(), "big")
            if len(self._port_offsets) >= PORT_OFFSETS_KEPT:
                self._port_offsets.clear()
            self._port_offsets[dest] = offset
        return offset
