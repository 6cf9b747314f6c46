"""Typed wrappers over the C core (``stack._native``, built from ``native/`` by cffi).

This is the only module that imports ``stack._native``; everything else imports from here.

Checksums (RFC 1071 / RFC 1624) work on any contiguous bytes-like object without copying.
All 16-bit values (checksums, sums, words) are the big-endian integer values as they appear on
the wire, e.g. ``struct.unpack("!H", ...)``.

:class:`TimerWheel` is a hierarchical timing wheel with O(1) schedule and cancel.
"""

from __future__ import annotations

import math
from typing import Final

try:
    from stack._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "stack._native is not built; run `.venv/bin/pip install -e . --no-deps` (or "
        "`python native/build_native.py`) from the repository root"
    ) from exc

__all__ = [
    "Buffer",
    "TimerWheel",
    "checksum_adjust",
    "checksum_adjust32",
    "internet_checksum",
    "ones_complement_sum",
    "tcp_checksum_ipv4",
    "tcp_checksum_ipv4_bytes",
    "tcp_checksum_ipv6",
]

Buffer = bytes | bytearray | memoryview

# Module-level bindings: a global lookup is cheaper than an attribute lookup on `lib` per call,
# which matters at the ~100 ns scale these calls run at.
_from_buffer = ffi.from_buffer
_unpack = ffi.unpack
_NULL: Final = ffi.NULL
_ocsum = lib.tcps_ones_complement_sum
_cksum = lib.tcps_internet_checksum
_tcp4 = lib.tcps_tcp_checksum_ipv4
_tcp6 = lib.tcps_tcp_checksum_ipv6
_adjust = lib.tcps_checksum_adjust
_adjust32 = lib.tcps_checksum_adjust32
_tw_schedule = lib.tcps_wheel_schedule
_tw_cancel = lib.tcps_wheel_cancel
_tw_advance = lib.tcps_wheel_advance
_tw_next = lib.tcps_wheel_next_deadline
_tw_len = lib.tcps_wheel_len

_MAX_TCP4_LEN: Final = 0xFFFF
_MAX_TCP6_LEN: Final = 0xFFFF_FFFF  # RFC 2675 jumbograms carry a 32-bit upper-layer length


def _buf(data: Buffer) -> object:
    # cffi passes `bytes` to a `const void *` parameter by pointer already; everything else
    # (bytearray, memoryview) needs from_buffer, which is also zero-copy but costs a wrapper.
    # from_buffer rejects non-contiguous memoryviews (TypeError/BufferError), as it should.
    return data if type(data) is bytes else _from_buffer(data)


def _nbytes(data: Buffer) -> int:
    return data.nbytes if type(data) is memoryview else len(data)


def ones_complement_sum(data: Buffer, initial: int = 0) -> int:
    """16-bit folded one's-complement sum of ``data`` plus ``initial`` (not inverted).

    ``initial`` is a previous result; chaining ``ones_complement_sum(b, ones_complement_sum(a))``
    equals ``ones_complement_sum(a + b)`` when ``len(a)`` is even.
    """
    r: int = _ocsum(_buf(data), _nbytes(data), initial)
    return r


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """RFC 1071 checksum: the value for a checksum field; 0 over data with a correct checksum."""
    r: int = _cksum(_buf(data), _nbytes(data), initial)
    return r


def tcp_checksum_ipv4(src: bytes, dst: bytes, segment: Buffer) -> int:
    """TCP checksum over the IPv4 pseudo-header (RFC 793 §3.1) and ``segment``.

    Compute with the checksum field zeroed to get the field value; over a segment with its
    checksum in place the result is 0.
    """
    n = _nbytes(segment)
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses must be 4 bytes")
    if n > _MAX_TCP4_LEN:
        raise ValueError(f"TCP segment of {n} bytes does not fit an IPv4 packet")
    r: int = _tcp4(_buf(src), _buf(dst), _buf(segment), n)
    return r


def tcp_checksum_ipv4_bytes(src: bytes, dst: bytes, segment: bytes) -> int:
    """:func:`tcp_checksum_ipv4` for a caller that holds `bytes` and has checked the sizes (the
    wire layer's builder: 4-byte addresses it made itself, a segment within an IPv4 datagram):
    the C function, without the conversions and checks, which cost more than the sum."""
    r: int = _tcp4(src, dst, segment, len(segment))
    return r


def tcp_checksum_ipv6(src: bytes, dst: bytes, segment: Buffer) -> int:
    """TCP checksum over the IPv6 pseudo-header (RFC 8200 §8.1) and ``segment``."""
    n = _nbytes(segment)
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses must be 16 bytes")
    if n > _MAX_TCP6_LEN:
        raise ValueError(f"TCP segment of {n} bytes exceeds the 32-bit upper-layer length")
    r: int = _tcp6(_buf(src), _buf(dst), _buf(segment), n)
    return r


def checksum_adjust(checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: the checksum field after one 16-bit word changes from old to new.

    Matches a full recompute except when the updated data is all zeros (then 0x0000 instead of
    0xFFFF, the other one's-complement zero); TCP's pseudo-header is never all zeros.
    """
    r: int = _adjust(checksum, old_word, new_word)
    return r


def checksum_adjust32(checksum: int, old_value: int, new_value: int) -> int:
    """:func:`checksum_adjust` for a 16-bit-aligned 32-bit field (sequence number, address)."""
    r: int = _adjust32(checksum, old_value, new_value)
    return r


class TimerWheel:
    """Hierarchical timing wheel in C. Times are float seconds; internally integer ticks.

    A deadline ``d`` maps to tick ``k``, the smallest with ``k * resolution >= d``, and fires in
    the first ``advance(now)`` with ``now >= k * resolution`` -- never early, up to one tick
    late. Deadlines at or before the wheel's current time fire on the next ``advance``.
    Deadlines beyond ~2^50 ticks (and ``inf``) only fire at ``advance(math.inf)``.

    Handles are ``pool index | generation << 32``; cancelling a handle whose timer already
    fired (or was cancelled) returns False, even if its pool slot has been reused since.

    Not thread-safe: cffi releases the GIL for the duration of each C call, so a wheel shared
    between threads needs a lock around every method.
    """

    __slots__ = ("_n", "_tw")

    def __init__(self, resolution: float = 0.0001, start: float = 0.0) -> None:
        if not (0.0 < resolution < math.inf):
            raise ValueError(f"resolution must be a positive finite number, got {resolution!r}")
        if not (0.0 <= start < math.inf):
            raise ValueError(f"start must be a finite time >= 0, got {start!r}")
        tw = lib.tcps_wheel_new(resolution, start)
        if tw == _NULL:
            raise MemoryError("TimerWheel allocation failed")
        # Freed with the wrapper; nothing else holds the pointer.
        self._tw = ffi.gc(tw, lib.tcps_wheel_free)
        self._n = ffi.new("size_t *")

    def schedule(self, deadline: float, user_id: int) -> int:
        """Arms a timer; returns an opaque nonzero handle for :meth:`cancel`. O(1).

        ``user_id`` (a uint64) is what :meth:`advance` hands back.
        """
        h: int = _tw_schedule(self._tw, deadline, user_id)
        if h == 0:
            if math.isnan(deadline):
                raise ValueError("deadline is NaN")
            raise MemoryError("TimerWheel node pool could not grow")
        return h

    def cancel(self, handle: int) -> bool:
        """Disarms a timer. O(1). False if it already fired, was cancelled, or never existed."""
        ok: bool = _tw_cancel(self._tw, handle)
        return ok

    def advance(self, now: float) -> list[int]:
        """Fires every timer due at ``now``; returns their user ids in deadline order.

        Time never moves backwards: an earlier ``now`` only fires deadlines already in the past.
        Each timer fires at most once; the handles of fired timers are already stale when this
        returns, so cancelling one from a callback while consuming the list returns False.
        """
        if now != now:
            raise ValueError("now is NaN")
        n = self._n
        p = _tw_advance(self._tw, now, n)
        if p == _NULL:
            raise MemoryError("TimerWheel output buffer could not grow")
        count = n[0]
        if count == 0:
            return []
        ids: list[int] = _unpack(p, count)
        return ids

    def next_deadline(self) -> float | None:
        """None if empty; else a time ``t`` no later than the earliest pending deadline's tick.

        ``t`` is exact for timers due within the current 64-tick window and a slot boundary
        otherwise; ``advance(t)`` always makes progress (fires something or moves time forward),
        so ``while (t := w.next_deadline()) is not None: w.advance(t)`` terminates. ``inf`` means
        only timers clamped at the end of time remain.
        """
        t: float = _tw_next(self._tw)
        return None if t != t else t

    def __len__(self) -> int:
        n: int = _tw_len(self._tw)
        return n

    def __repr__(self) -> str:
        return f"<TimerWheel live={len(self)} next={self.next_deadline()!r}>"
