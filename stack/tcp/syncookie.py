"""SYN cookies (RFC 4987 §3.6): a listener under a SYN flood keeps no state for new SYNs.

The ISN of the SYN-ACK carries what is needed to accept the final ACK later:
  bits 31-27  t, a counter of 64-second periods (mod 32), so a cookie lives about two minutes;
  bits 26-24  an index into a small table of MSS values (the largest not above the peer's);
  bits 23-0   a keyed hash of the 4-tuple, the peer's ISN, t, the MSS index and the options below.
When the SYN carried timestamps, our TSval carries the other options in its low 6 bits, as Linux
does (net/ipv4/syncookies.c): bits 3-0 the peer's window shift (15: no window scaling), bit 4
SACK-permitted, bit 5 unused (Linux: ECN). The peer echoes that TSval in the TSecr of its ACK.
Every field is covered by the hash, so altering any of them makes the cookie fail. Without
timestamps only the MSS survives, and the SYN-ACK offers neither window scaling nor SACK.

Linux also looks at an ACK to a listener as a cookie only while the listener overflowed
recently (`tcp_synq_no_recent_overflow`): with no cookie in flight, a blind ACK spray gets no
chance at the 24-bit hash. `recently_sent` is that test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stack.tcp.config import FourTuple

MSS_TABLE = (536, 1200, 1300, 1400, 1440, 1452, 1460, 8960)
PERIOD = 64.0
VALID = 2 * PERIOD  # how long after the last cookie sent an ACK may still return one
TS_BITS = 6
TS_MASK = (1 << TS_BITS) - 1
NO_WSCALE = 0xF  # the 4-bit field's value when the peer did not offer window scaling
SACK_BIT = 1 << 4
MAX_WSCALE = 14  # RFC 7323 §2.3
_NO_TIMESTAMPS = 1 << TS_BITS  # what the hash covers in place of the option bits without timestamps


@dataclass(frozen=True, slots=True)
class CookieInfo:
    """What a genuine cookie tells about the SYN it answered."""

    mss: int
    wscale: int | None  # the peer's window shift; None: no window scaling
    sack: bool
    timestamps: bool


def _hash(secret: bytes, four_tuple: FourTuple, t: int, peer_isn: int, index: int, options: int) -> int:
    la, lp, ra, rp = four_tuple
    text = f"{la}|{lp}|{ra}|{rp}|{t}|{peer_isn}|{index}|{options}".encode()
    return int.from_bytes(hashlib.blake2b(text, key=secret, digest_size=3).digest(), "big")


def make_cookie(secret: bytes, four_tuple: FourTuple, peer_isn: int, peer_mss: int, now: float, *,
                wscale: int | None = None, sack: bool = False, ts_clock: int | None = None) -> tuple[int, int | None]:
    """The cookie (our ISN) for a SYN, and the TSval to send with it (None: no timestamps).

    `wscale` and `sack` are the peer's offers that we accept; they ride along only with timestamps.
    `ts_clock` is the connection's timestamp clock now (None: the SYN carried no timestamps). The
    TSval is that clock with its low bits replaced by the options, moved one step back if that put
    it ahead of the clock: TSvals of the connection made later never go backwards."""
    t = int(now / PERIOD) & 31
    index = max(i for i, mss in enumerate(MSS_TABLE) if mss <= max(peer_mss, MSS_TABLE[0]))
    tsval: int | None = None
    options = _NO_TIMESTAMPS
    if ts_clock is not None:
        options = (NO_WSCALE if wscale is None else min(wscale, MAX_WSCALE)) | (SACK_BIT if sack else 0)
        tsval = (ts_clock & ~TS_MASK & 0xFFFFFFFF) | options
        if tsval > ts_clock:
            tsval = ((tsval - (1 << TS_BITS)) & 0xFFFFFFFF) | options
    return (t << 27) | (index << 24) | _hash(secret, four_tuple, t, peer_isn, index, options), tsval


def check_cookie(secret: bytes, four_tuple: FourTuple, peer_isn: int, cookie: int, now: float,
                 ts_ecr: int | None = None) -> CookieInfo | None:
    """What the cookie carries if it is genuine and at most one period old, else None.

    `ts_ecr` is the TSecr of the ACK when it carried timestamps (and we use them): the option
    bits are read from it and must be the ones the hash covered."""
    t_now = int(now / PERIOD) & 31
    t = (cookie >> 27) & 31
    if t not in (t_now, (t_now - 1) & 31):
        return None
    index = (cookie >> 24) & 7
    options = _NO_TIMESTAMPS if ts_ecr is None else ts_ecr & TS_MASK
    if cookie & 0xFFFFFF != _hash(secret, four_tuple, t, peer_isn, index, options):
        return None
    if ts_ecr is None:
        return CookieInfo(MSS_TABLE[index], None, False, False)
    shift = options & NO_WSCALE
    return CookieInfo(MSS_TABLE[index], None if shift == NO_WSCALE else shift, bool(options & SACK_BIT), True)


def recently_sent(last_sent: float, now: float) -> bool:
    """Whether a cookie sent at `last_sent` may still come back: only then is an ACK checked."""
    return now - last_sent <= VALID
