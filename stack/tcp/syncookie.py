"""SYN cookies (RFC 4987 §3.6): a listener under a SYN flood keeps no state for new SYNs.

The ISN of the SYN-ACK carries everything needed to accept the final ACK later:
  bits 31-27  t, a counter of 64-second periods (mod 32), so a cookie lives about two minutes;
  bits 26-24  an index into a small table of MSS values (the largest not above the peer's);
  bits 23-0   a keyed hash of the 4-tuple, t and the peer's ISN.
Options other than MSS cannot ride along (Linux hides them in timestamps; we don't), so a
connection made from a cookie uses no window scaling, SACK or timestamps.
"""

from __future__ import annotations

import hashlib

from stack.tcp.config import FourTuple

MSS_TABLE = (536, 1200, 1300, 1400, 1440, 1452, 1460, 8960)
PERIOD = 64.0


def _hash(secret: bytes, four_tuple: FourTuple, t: int, peer_isn: int) -> int:
    la, lp, ra, rp = four_tuple
    text = f"{la}|{lp}|{ra}|{rp}|{t}|{peer_isn}".encode()
    return int.from_bytes(hashlib.blake2b(text, key=secret, digest_size=3).digest(), "big")


def make_cookie(secret: bytes, four_tuple: FourTuple, peer_isn: int, peer_mss: int, now: float) -> int:
    t = int(now / PERIOD) & 31
    index = max(i for i, mss in enumerate(MSS_TABLE) if mss <= max(peer_mss, MSS_TABLE[0]))
    return (t << 27) | (index << 24) | _hash(secret, four_tuple, t, peer_isn)


def check_cookie(secret: bytes, four_tuple: FourTuple, peer_isn: int, cookie: int, now: float) -> int | None:
    """The MSS the cookie carries if it is genuine and at most one period old, else None."""
    t_now = int(now / PERIOD) & 31
    t = cookie >> 27
    if t not in (t_now, (t_now - 1) & 31):
        return None
    if cookie & 0xFFFFFF != _hash(secret, four_tuple, t, peer_isn):
        return None
    return MSS_TABLE[(cookie >> 24) & 7]
