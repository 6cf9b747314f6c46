#!/usr/bin/env python3
"""Fuzz the TCP core with malformed and hostile segments, deterministically (seeded).

One victim host holds a connection in every state -- LISTEN (a listener, and a fully specified
passive OPEN), SYN-SENT, SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, CLOSING,
LAST-ACK, TIME-WAIT -- built by a hand-driven "phantom" peer, plus a real ESTABLISHED connection
to a second host over the in-memory link (the survivor). Every connection that leaves its state is
rebuilt on a fresh port, so every state is under fire for the whole run. The victim is dual-stack
(198.18.0.2 and 2001:2::2): each rebuild, each stranger and each forged cookie is IPv6 half the
time, so raw packets come in both families, with IPv6's own mutations (extension-header chains,
payload length, next header).

Each fuzz segment is aimed at a target (a state's connection, a listener, a port nobody listens
on, an older connection, a TIME-WAIT record, the survivor, or one of the two hostile peers below)
and is either

* raw bytes: a packet built for the target, then mutated (truncation, bit flips, bad data offsets,
  IHL, total length, fragments, protocol, bad option lengths, random option areas, checksum
  faults -- checksums recomputed or not); a packet `parse_packet` refuses goes to
  `Host.on_malformed(reason)`, one that parses to `Host.on_segment`; or
* an ICMP message (a share of ICMP_SHARE): an echo request, or an error -- destination
  unreachable with any code, frag-needed with any MTU, time exceeded, parameter problem, unknown
  types -- quoting a target's 4-tuple with a SEQ in flight or anywhere, sent whole or mutated
  (truncated, bits flipped with or without a valid checksum, a broken quote); it goes through
  `parse_datagram` to `Host.on_icmp` or, refused, to `Host.on_malformed`; or
* a well-formed `Segment` with hostile values (any flags, sequence and acknowledgment numbers
  anywhere or on the window edges, windows 0 and 65535, random urgent pointers and options,
  payloads up to 64 KiB) fed straight to `Host.on_segment`.

Two hostile peers take a share of the segments, well-formed and aimed: an out-of-order flood (the
SegmentSmack class) into one ESTABLISHED connection with a small window -- 1-byte segments at every
other sequence number, now and then one below the highest block (the queue is pruned from the
top) or the one that fills the first gap -- and ACKs that return SYN cookies of the small listener,
genuine but for a tampered field (a bit of the cookie, an option bit echoed in the timestamp, the
peer's ISN, the port).

Checked: no exception escapes; no ICMP message changes a connection's state (RFC 5461: never a
reset); the sum of `InMalformed.*` counters equals the malformed packets
fed, reason by reason; the connection and TIME-WAIT tables stay bounded; no forged cookie makes a
connection (the hash has 24 bits: one forgery in 16.7 million passes by chance); the flooded
connection's receive memory never passes its limit; the survivor -- never hit exactly, which is
checked segment by segment -- still moves data both ways and closes cleanly; and once everything
is closed the host is empty, with no timer pending and its memory account back at zero.

    .venv/bin/python tools/fuzz.py [--segments 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.native import internet_checksum, tcp_checksum_ipv4, tcp_checksum_ipv6  # noqa: E402
from stack.sim import Simulator  # noqa: E402
from stack.tcp.budget import recv_memory  # noqa: E402
from stack.tcp.config import Config, FourTuple  # noqa: E402
from stack.tcp.connection import Connection  # noqa: E402
from stack.tcp.counters import MALFORMED_PREFIX  # noqa: E402
from stack.tcp.events import Accepted, Event, Readable  # noqa: E402
from stack.tcp.handle import ConnectionHandle  # noqa: E402
from stack.tcp.host import Host  # noqa: E402
from stack.tcp.seq import MASK, seq_add, seq_in, seq_le, seq_lt, seq_sub  # noqa: E402
from stack.tcp.states import State  # noqa: E402
from stack.wire import MalformedPacket, Reason, build_packet, parse_packet  # noqa: E402
from stack.wire.icmp import ICMP_ECHO_REQUEST, ICMP_FRAG_NEEDED, IcmpMessage, build_icmp, parse_datagram  # noqa: E402
from stack.wire.ipv6 import walk_extension_headers  # noqa: E402
from stack.wire.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment, TcpOptions  # noqa: E402

S = State

VICTIM = "198.18.0.2"  # the host under fire
PEER = "198.18.0.1"  # the survivor's real peer, on the memory link
PHANTOM = "198.18.0.77"  # the hand-driven peer of the connections in every state (not on the link)
STRANGERS = "198.18.1."  # random sources for segments to listeners and closed ports
# The victim is dual-stack: half the connections in every state, half the strangers, are IPv6.
VICTIM6 = "2001:2::2"
PHANTOM6 = "2001:2::77"
STRANGERS6 = "2001:2::1:"
V6_SHARE = 0.5
SURVIVOR_PORT = 7
LISTEN_PORT = 80  # a listener hit by random SYNs/ACKs from strangers
BUILD_PORT = 8080  # the listener the phantom peer's passive connections come through
PASSIVE_PORT = 81  # fully specified passive OPENs (a connection in LISTEN)
CLOSED_PORT = 9  # nobody listens here
BUILD_BACKLOG = 4096
LISTEN_BACKLOG = 16  # small, so that SYNs from strangers also meet SYN cookies

FLOOD_PORT = 8081  # the listener of the connection flooded with out-of-order segments
FLOOD_RECV_BUFFER = 64 * 1024  # its window, so its receive memory limit (2x) is reached within a run
FLOOD_SHARE = 0.04  # of the fuzz segments: the next segment of the out-of-order flood
COOKIE_SHARE = 0.02  # of the fuzz segments: an ACK returning a forged SYN cookie
ICMP_SHARE = 0.03  # of the fuzz segments: an ICMP message about a target (stack.tcp.icmp)
ICMP_TYPES = (3, 3, 3, 3, 11, 12, 4, 5, 0, 42)  # errors mostly; source quench, redirect, a reply, unknown
ICMPV6_TYPES = (1, 1, 1, 2, 2, 3, 4, 129, 200)  # unreachable, Packet Too Big, ..., a reply, unknown
MTUS = (0, 68, 551, 552, 576, 1000, 1279, 1280, 1400, 1500, 9000)

BATCH = 50  # segments per batch; a batch arrives at one instant, then the link runs for the batch's time
LEFTOVER_CAP = 64  # connections that left their state and are still targeted; older ones are aborted

# The states a slot is kept in (LISTEN: a fully specified passive OPEN, i.e. a Connection).
SLOT_STATES = (S.LISTEN, S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
               S.CLOSING, S.LAST_ACK, S.TIME_WAIT)
# Every connection the fuzzer makes is a slot, a leftover (capped) or an embryo of the small listener
# (its backlog; beyond it SYN cookies keep no state): with the survivor and the flooded connection,
# that bounds the table.
CONNECTION_BOUND = 2 + len(SLOT_STATES) + LEFTOVER_CAP + LISTEN_BACKLOG
# TIME-WAIT records come only from those connections and expire after 2MSL (records nobody targets
# are never restarted); the steady state is a few dozen at 1 ms per segment.
TIME_WAIT_BOUND = 128

FLAG_CHOICES = (ACK, ACK, ACK | PSH, ACK | PSH, FIN | ACK, FIN, RST, RST, RST | ACK, SYN, SYN | ACK, SYN | FIN,
                SYN | RST, 0, URG | ACK, ECE | CWR | ACK, FIN | SYN | RST | PSH | ACK | URG)
DELTAS = (-2, -1, 0, 0, 0, 0, 1, 2, 1000, -1000, 65535, -65535)

OUTCOMES = ("malformed (dropped, counted by reason)", "state change", "challenge ACK",
            "challenge ACK suppressed (rate limit)", "RST sent", "data/FIN accepted", "SYN-ACK sent",
            "ACK sent", "dropped silently", "skipped: would hit the survivor exactly", "exception",
            "ICMP: echo answered", "ICMP: error taken (PMTU, soft error)", "ICMP: dropped, counted",
            "ICMP: ignored")


# ---------------------------------------------------------------------------------------------- report
@dataclass
class FuzzReport:
    seed: int
    segments: int = 0
    raw: int = 0
    seconds: float = 0.0
    virtual_seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_target: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    target_outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    rebuilds: Counter[str] = field(default_factory=Counter)
    build_failures: int = 0
    build_failure_detail: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    exception_count: int = 0
    max_connections: int = 0
    max_time_wait: int = 0
    max_embryos: int = 0
    survivor_skipped: int = 0
    flood_segments: int = 0
    flood_max_mem: int = 0  # the flooded connection's receive memory, at most
    flood_max_blocks: int = 0
    flood_limit: int = 0  # its limit (Config.recv_memory)
    forged_cookies: int = 0
    forged_accepted: int = 0  # forged cookie ACKs that made a connection (must stay 0)
    icmp: int = 0  # ICMP messages fed
    icmp_state_changes: list[str] = field(default_factory=list)  # must stay empty
    survivor_ok: bool | None = None
    survivor_detail: str = ""
    drained_ok: bool | None = None
    drained_detail: str = ""
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.segments / self.seconds if self.seconds else 0.0

    def malformed_fed(self) -> int:
        return sum(self.malformed.values())

    def malformed_counted(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith(MALFORMED_PREFIX))

    def problems(self) -> list[str]:
        """Everything that violates what must hold; empty when the run is clean."""
        out: list[str] = []
        if self.exception_count:
            out.append(f"{self.exception_count} exceptions escaped, first: {self.exceptions[0]}")
        for reason in Reason:
            fed = self.malformed.get(reason.value, 0)
            counted = self.counters.get(MALFORMED_PREFIX + reason.value, 0)
            if fed != counted:
                out.append(f"malformed {reason.value}: fed {fed}, counted {counted}")
        if self.malformed_fed() != self.malformed_counted():
            out.append(f"InMalformed.* sum {self.malformed_counted()} != malformed fed {self.malformed_fed()}")
        if self.counters.get("InCsumErrors", 0) != self.malformed.get(Reason.BAD_TCP_CHECKSUM.value, 0):
            out.append("InCsumErrors differs from the bad_tcp_checksum packets fed")
        if self.max_connections > CONNECTION_BOUND:
            out.append(f"connection table reached {self.max_connections} > {CONNECTION_BOUND}")
        if self.max_time_wait > TIME_WAIT_BOUND:
            out.append(f"TIME-WAIT table reached {self.max_time_wait} > {TIME_WAIT_BOUND}")
        if self.build_failures:
            out.append(f"{self.build_failures} slot builds failed: {self.build_failure_detail[:3]}")
        if self.survivor_ok is False:
            out.append("survivor: " + self.survivor_detail)
        if self.drained_ok is False:
            out.append("drain: " + self.drained_detail)
        if self.forged_accepted:
            out.append(f"{self.forged_accepted} forged SYN cookies made a connection")
        if self.icmp_state_changes:
            out.append(f"{len(self.icmp_state_changes)} ICMP messages changed a state: {self.icmp_state_changes[:3]}")
        if self.flood_max_mem > self.flood_limit:
            out.append(f"the flooded connection held {self.flood_max_mem} bytes > its limit {self.flood_limit}")
        return out

    def format(self) -> str:
        lines = [
            f"fuzz seed={self.seed}: {self.segments:,} segments ({self.raw:,} as raw bytes) in {self.seconds:.1f} s"
            f" = {self.rate:,.0f} segments/s; {self.virtual_seconds:.0f} s of virtual time",
            "",
            "outcome                                        count        %",
        ]
        for name in OUTCOMES:
            n = self.outcomes.get(name, 0)
            lines.append(f"  {name:<44} {n:>9,} {100.0 * n / max(self.segments, 1):>7.2f}")
        lines += ["", "malformed packets by reason          fed   counted (InMalformed.<reason>)"]
        for reason in Reason:
            fed = self.malformed.get(reason.value, 0)
            counted = self.counters.get(MALFORMED_PREFIX + reason.value, 0)
            lines.append(f"  {reason.value:<30} {fed:>9,} {counted:>9,}")
        c = self.counters
        lines.append(f"  {'total':<30} {self.malformed_fed():>9,} {self.malformed_counted():>9,}"
                     f"   InErrs={c.get('InErrs', 0):,} InCsumErrors={c.get('InCsumErrors', 0):,}")
        short = {"state change": "chg", "challenge ACK": "chACK", "challenge ACK suppressed (rate limit)": "chACK-",
                 "RST sent": "RST", "data/FIN accepted": "data", "SYN-ACK sent": "SA", "ACK sent": "ACK",
                 "dropped silently": "drop", "malformed (dropped, counted by reason)": "malf"}
        lines += ["", "by target (state of the 4-tuple when the segment arrived)",
                  "  " + f"{'target':<14}{'segments':>10}" + "".join(f"{v:>8}" for v in short.values())]
        for target, n in sorted(self.by_target.items(), key=lambda kv: -kv[1]):
            cells = "".join(f"{self.target_outcomes.get((target, k), 0):>8}" for k in short)
            lines.append(f"  {target:<14}{n:>10,}{cells}")
        if self.transitions:
            lines += ["", "state changes caused by fuzz segments"]
            for (old, new), n in sorted(self.transitions.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {old:>12} -> {new:<14} {n:>8,}")
        lines += ["", f"slot rebuilds: {sum(self.rebuilds.values()):,} "
                      + " ".join(f"{k}={v}" for k, v in sorted(self.rebuilds.items())),
                  f"tables (max during the run): connections={self.max_connections} (bound {CONNECTION_BOUND})"
                  f" time_wait={self.max_time_wait} (bound {TIME_WAIT_BOUND}) listener embryos={self.max_embryos}",
                  "targets: " + " ".join(f"{k}={v:,}" for k, v in sorted(self.by_kind.items())),
                  f"survivor: {'ok' if self.survivor_ok else 'FAILED' if self.survivor_ok is False else 'not checked'}"
                  f" ({self.survivor_detail}); {self.survivor_skipped} segments skipped as exact hits",
                  f"drain: {'ok' if self.drained_ok else 'FAILED' if self.drained_ok is False else 'not checked'}"
                  f" ({self.drained_detail})",
                  f"out-of-order flood: {self.flood_segments:,} segments into one connection; at most"
                  f" {self.flood_max_blocks:,} blocks and {self.flood_max_mem:,} bytes of receive memory"
                  f" (limit {self.flood_limit:,})",
                  f"forged SYN cookies: {self.forged_cookies:,} ACKs, {self.forged_accepted} accepted",
                  f"ICMP: {self.icmp:,} messages, {len(self.icmp_state_changes)} changed a connection's state"]
        interesting = ("TCPChallengeACK", "TCPACKSkippedChallenge", "TCPSYNChallenge", "OutRsts", "PAWSEstab",
                       "TCPOFOQueue", "EstabResets", "AttemptFails", "TWKilled", "TCPTimeWaitReopen",
                       "ListenOverflows", "SyncookiesSent", "SyncookiesFailed", "SyncookiesRecv", "TCPAbortOnData",
                       "TCPRcvNoListener", "TCPOFODrop", "PruneCalled", "OfoPruned", "IcmpInMsgs", "IcmpInErrors",
                       "IcmpOutEchoReps", "IcmpOutRateLimitGlobal", "OutOfWindowIcmps", "PMTUReductions")
        lines.append("counters: " + " ".join(f"{k}={self.counters.get(k, 0):,}" for k in interesting))
        problems = self.problems()
        lines.append("RESULT: " + ("ok" if not problems else "FAILED\n  " + "\n  ".join(problems)))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- targets
@dataclass
class Slot:
    """A connection of the victim kept in one state (rebuilt when it leaves it)."""

    state: State
    key: FourTuple
    conn: Connection
    ts: int | None = None  # the phantom peer's TSval clock, when timestamps were negotiated


@dataclass
class View:
    """What an informed fuzzer knows of a target's sequence space."""

    rcv_nxt: int = 0
    rcv_wnd: int = 0
    snd_una: int = 0
    snd_max: int = 0
    iss: int = 0
    irs: int = 0
    max_snd_wnd: int = 0
    ts_recent: int | None = None


def view_of_conn(c: Connection) -> View:
    return View(c.rcv_nxt, c.rcv_wnd, c.snd_una, c.snd_max, c.iss, c.irs, c.max_snd_wnd,
                c.ts_recent if c.ts_ok else None)


def would_hit(c: Connection, seg: Segment) -> bool:
    """Whether `seg` could change `c` beyond a challenge/duplicate ACK: an exact RST, or a segment
    whose SEQ is acceptable and whose ACK passes RFC 5961 §5 (it may carry data, a FIN, a window, or
    acknowledge data). Conservative: PAWS, which might still drop it, is ignored."""
    flags = seg.flags
    seq = seg.seq
    if flags & RST:
        return seq == c.rcv_nxt
    if flags & SYN or not flags & ACK:
        return False
    wnd = c.rcv_wnd
    right = seq_add(c.rcv_nxt, wnd)
    n = seg.seg_len
    if n == 0:
        ok = seq == c.rcv_nxt if wnd == 0 else seq_in(seq, c.rcv_nxt, right)
    else:
        ok = wnd > 0 and (seq_in(seq, c.rcv_nxt, right) or seq_in(seq_add(seq, n - 1), c.rcv_nxt, right))
    ok = ok or (wnd == 0 and seq == c.rcv_nxt)  # the zero-window allowance takes the ACK
    if not ok:
        return False
    if c.max_snd_wnd and seq_lt(seg.ack, seq_add(c.snd_una, -c.max_snd_wnd)):
        return False  # RFC 5961 §5: too old, challenged
    return seq_le(seg.ack, c.snd_max)


# ---------------------------------------------------------------------------------------------- mutation
def fix_checksums(pkt: bytearray) -> None:
    """Recompute the IP header and TCP checksums of a (possibly mutated) packet where its header
    fields still make that possible, so the mutation reaches the checks behind the checksums."""
    n = len(pkt)
    if n < 20:
        return
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or ihl > n:
        return
    pkt[10:12] = b"\0\0"
    pkt[10:12] = internet_checksum(bytes(pkt[:ihl])).to_bytes(2, "big")
    total = int.from_bytes(pkt[2:4], "big")
    if ihl + 20 <= total <= n and total - ihl <= 0xFFFF:
        pkt[ihl + 16 : ihl + 18] = b"\0\0"
        tcp = bytes(pkt[ihl:total])
        pkt[ihl + 16 : ihl + 18] = tcp_checksum_ipv4(bytes(pkt[12:16]), bytes(pkt[16:20]), tcp).to_bytes(2, "big")


def fix_checksums6(pkt: bytearray) -> None:
    """The TCP checksum of a (possibly mutated) IPv6 packet, where its chain still leads to TCP."""
    n = len(pkt)
    if n < 40:
        return
    end = 40 + int.from_bytes(pkt[4:6], "big")
    try:
        protocol, tcp = walk_extension_headers(bytes(pkt), pkt[6], min(end, n))
    except MalformedPacket:
        return
    if protocol == 6 and tcp + 20 <= end <= n:
        pkt[tcp + 16 : tcp + 18] = b"\0\0"
        csum = tcp_checksum_ipv6(bytes(pkt[8:24]), bytes(pkt[24:40]), bytes(pkt[tcp:end]))
        pkt[tcp + 16 : tcp + 18] = csum.to_bytes(2, "big")


def _is_v6(pkt: bytearray) -> bool:
    return bool(pkt) and pkt[0] >> 4 == 6


def _set_total_length(pkt: bytearray) -> None:
    if _is_v6(pkt):
        pkt[4:6] = min(max(len(pkt) - 40, 0), 0xFFFF).to_bytes(2, "big")
    else:
        pkt[2:4] = min(len(pkt), 0xFFFF).to_bytes(2, "big")


def _tcp_at(pkt: bytearray) -> int:
    if _is_v6(pkt):
        try:
            return walk_extension_headers(bytes(pkt), pkt[6], len(pkt))[1] if len(pkt) >= 40 else 40
        except MalformedPacket:
            return 40
    return max(20, (pkt[0] & 0x0F) * 4) if pkt else 20


def _m_truncate(pkt: bytearray, rng: random.Random) -> bool:
    del pkt[rng.randrange(len(pkt)) :]
    return rng.random() < 0.5


def _m_bitflip(pkt: bytearray, rng: random.Random) -> bool:
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(pkt))
        pkt[i] ^= 1 << rng.randrange(8)
    return rng.random() < 0.3


def _m_bytes(pkt: bytearray, rng: random.Random) -> bool:
    for _ in range(rng.randint(1, 4)):
        pkt[rng.randrange(min(len(pkt), 60))] = rng.randrange(256)
    return rng.random() < 0.6


def _m_data_offset(pkt: bytearray, rng: random.Random) -> bool:
    at = _tcp_at(pkt) + 12
    if at < len(pkt):
        pkt[at] = (rng.randrange(16) << 4) | (pkt[at] & 0x0F)
    return rng.random() < 0.8


def _m_options(pkt: bytearray, rng: random.Random) -> bool:
    """Replace the option area with hostile bytes: bad lengths (0, 1, overrunning), random kinds."""
    tcp = _tcp_at(pkt)
    if tcp + 20 > len(pkt):
        return False
    doff = (pkt[tcp + 12] >> 4) * 4
    payload = bytes(pkt[tcp + doff :]) if tcp + doff <= len(pkt) else b""
    area = bytearray()
    size = rng.choice((4, 8, 12, 20, 40))
    while len(area) < size:
        r = rng.random()
        if r < 0.25:
            area += bytes((rng.randrange(256), rng.choice((0, 1))))
        elif r < 0.45:
            area += bytes((rng.randrange(2, 256), rng.randrange(size - len(area) + 1, 256) & 0xFF or 255))
        elif r < 0.6:
            area += bytes((1,))
        elif r < 0.8:
            kind = rng.choice((2, 3, 4, 5, 8, 30, 34, 253, 254, 6, 7, 19, 29))
            data = rng.randbytes(rng.randrange(0, 10))
            area += bytes((kind, len(data) + 2)) + data
        else:
            area += rng.randbytes(rng.randint(1, 6))
    area = area[:size]
    area += b"\0" * (-len(area) % 4)
    del pkt[tcp + 20 :]
    pkt += area + payload
    pkt[tcp + 12] = ((20 + len(area)) // 4) << 4 | (pkt[tcp + 12] & 0x0F)
    _set_total_length(pkt)
    return rng.random() < 0.9


def _m_ihl(pkt: bytearray, rng: random.Random) -> bool:
    if rng.random() < 0.5:
        # real IP options: insert NOPs/EOL/random and raise IHL to match
        extra = rng.choice((4, 8, 20, 40))
        opts = bytes(rng.choice((0, 1, 7, 68, 131, 137))
                     for _ in range(extra)) if rng.random() < 0.5 else b"\x01" * extra
        ihl = (pkt[0] & 0x0F) * 4
        if 20 <= ihl <= len(pkt) and ihl + extra <= 60:
            pkt[ihl:ihl] = opts
            pkt[0] = 0x40 | ((ihl + extra) // 4)
            _set_total_length(pkt)
    else:
        pkt[0] = (pkt[0] & 0xF0) | rng.randrange(16)
    return rng.random() < 0.7


def _m_version(pkt: bytearray, rng: random.Random) -> bool:
    pkt[0] = (rng.choice((0, 1, 5, 6, 15, rng.randrange(16))) << 4) | (pkt[0] & 0x0F)
    return rng.random() < 0.5


def _m_total_length(pkt: bytearray, rng: random.Random) -> bool:
    total = int.from_bytes(pkt[2:4], "big")
    new = rng.choice((0, 19, 20, 39, 40, total - 1, total + 1, total + 1000, 0xFFFF, rng.randrange(0x10000)))
    pkt[2:4] = (new & 0xFFFF).to_bytes(2, "big")
    return rng.random() < 0.8


def _m_fragment(pkt: bytearray, rng: random.Random) -> bool:
    value = rng.choice((0x2000, 0x2001, 0x0001, 0x1FFF, 0x4000 | 0x0010, 0x8000 | rng.randrange(0x2000)))
    pkt[6:8] = value.to_bytes(2, "big")
    return rng.random() < 0.8


def _m_protocol(pkt: bytearray, rng: random.Random) -> bool:
    pkt[9] = rng.choice((0, 1, 17, 41, 132, 255, rng.randrange(256)))
    return rng.random() < 0.8


def _m_checksum(pkt: bytearray, rng: random.Random) -> bool:
    """A checksum fault and nothing else (the result is never repaired)."""
    at = rng.choice((10, _tcp_at(pkt) + 16))
    if at + 2 <= len(pkt):
        value = int.from_bytes(pkt[at : at + 2], "big") ^ rng.randrange(1, 0x10000)
        pkt[at : at + 2] = value.to_bytes(2, "big")
    return False


def _m_padding(pkt: bytearray, rng: random.Random) -> bool:
    pkt += rng.randbytes(rng.randint(1, 64))  # octets past Total Length (Ethernet-style padding)
    return False


def _m_fields(pkt: bytearray, rng: random.Random) -> bool:
    """Rewrite TCP header fields (ports, seq, ack, flags, window, urgent) with checksums repaired."""
    tcp = _tcp_at(pkt)
    if tcp + 20 > len(pkt):
        return False
    at = tcp + rng.choice((0, 2, 4, 8, 13, 14, 18))
    width = 4 if at - tcp in (4, 8) else 1 if at - tcp == 13 else 2
    pkt[at : at + width] = rng.randbytes(width)
    return True


# IPv6 (RFC 8200): extension-header chains, legal and hostile, the payload length, the next header.
_EXT_TYPES = (0, 43, 44, 60)


def _ext_frame(kind: int, rng: random.Random) -> bytes:
    if kind == 44:  # Fragment: atomic (processed), or a real fragment (dropped)
        offset_flags = 0 if rng.random() < 0.5 else rng.choice((1, 8, 0xFFF9, rng.randrange(0x10000)))
        return bytes((6, 0)) + offset_flags.to_bytes(2, "big") + rng.randbytes(4)
    units = rng.choice((0, 0, 1, 2))
    return bytes((6, units)) + rng.randbytes(6 + 8 * units)


def _m_ext_chain(pkt: bytearray, rng: random.Random) -> bool:
    """Put a chain of extension headers between the IPv6 header and TCP: in RFC 8200 §4.1 order, or
    repeated, hop-by-hop late, or with a length that overruns."""
    if len(pkt) < 40:
        return False
    r = rng.random()
    if r < 0.4:
        kinds = [k for k in (0, 60, 43, 44, 60) if rng.random() < 0.5] or [60]
    elif r < 0.6:
        kinds = [rng.choice(_EXT_TYPES)] * rng.randint(2, 4)
    else:
        kinds = [rng.choice(_EXT_TYPES) for _ in range(rng.randint(1, 6))]
    frames = [bytearray(_ext_frame(k, rng)) for k in kinds]
    following = [*kinds[1:], pkt[6]]
    for frame, nxt in zip(frames, following, strict=True):
        frame[0] = nxt
    if frames and rng.random() < 0.15:
        frames[-1][1] = rng.randrange(256)  # a length that probably overruns
    pkt[6] = kinds[0]
    pkt[40:40] = b"".join(frames)
    _set_total_length(pkt)
    return rng.random() < 0.9


def _m_payload_length(pkt: bytearray, rng: random.Random) -> bool:
    plen = int.from_bytes(pkt[4:6], "big")
    new = rng.choice((0, 8, 19, plen - 1, plen + 1, plen + 1000, 0xFFFF, rng.randrange(0x10000)))
    pkt[4:6] = (new & 0xFFFF).to_bytes(2, "big")
    return rng.random() < 0.8


def _m_next_header(pkt: bytearray, rng: random.Random) -> bool:
    pkt[6] = rng.choice((58, 17, 59, 50, 51, 0, 43, 44, 60, 135, 255, rng.randrange(256)))
    return rng.random() < 0.8


def _m_version6(pkt: bytearray, rng: random.Random) -> bool:
    pkt[0] = (rng.choice((0, 4, 5, 7, 15, rng.randrange(16))) << 4) | (pkt[0] & 0x0F)
    return rng.random() < 0.5


def _m_checksum6(pkt: bytearray, rng: random.Random) -> bool:
    at = _tcp_at(pkt) + 16
    if at + 2 <= len(pkt):
        value = int.from_bytes(pkt[at : at + 2], "big") ^ rng.randrange(1, 0x10000)
        pkt[at : at + 2] = value.to_bytes(2, "big")
    return False


MUTATIONS: tuple[tuple[Callable[[bytearray, random.Random], bool], float], ...] = (
    (_m_truncate, 1.0), (_m_bitflip, 1.5), (_m_bytes, 1.0), (_m_data_offset, 1.5), (_m_options, 2.0),
    (_m_ihl, 1.0), (_m_version, 0.5), (_m_total_length, 1.0), (_m_fragment, 0.6), (_m_protocol, 0.5),
    (_m_checksum, 1.0), (_m_padding, 0.4), (_m_fields, 2.0),
)
MUTATIONS6: tuple[tuple[Callable[[bytearray, random.Random], bool], float], ...] = (
    (_m_truncate, 1.0), (_m_bitflip, 1.5), (_m_bytes, 1.0), (_m_data_offset, 1.5), (_m_options, 2.0),
    (_m_ext_chain, 2.5), (_m_version6, 0.3), (_m_payload_length, 1.0), (_m_next_header, 0.6),
    (_m_checksum6, 1.0), (_m_padding, 0.4), (_m_fields, 2.0),
)
_MUTATORS = [m for m, _ in MUTATIONS]
_WEIGHTS = [w for _, w in MUTATIONS]
_MUTATORS6 = [m for m, _ in MUTATIONS6]
_WEIGHTS6 = [w for _, w in MUTATIONS6]
_ANY_LENGTH = (_m_truncate, _m_bitflip, _m_bytes, _m_padding)


def mutate(packet: bytes, rng: random.Random) -> bytes:
    """One to three mutations (IPv4's or IPv6's set, by the packet's version); checksums repaired
    afterwards when the last one asks for it."""
    pkt = bytearray(packet)
    fix = False
    v6 = _is_v6(pkt)
    header = 40 if v6 else 20
    mutators, weights = (_MUTATORS6, _WEIGHTS6) if v6 else (_MUTATORS, _WEIGHTS)
    for m in rng.choices(mutators, weights, k=rng.choice((1, 1, 1, 2, 3))):
        if not pkt:
            break
        if len(pkt) < header and m not in _ANY_LENGTH:
            continue  # a header field mutation needs the header
        fix = m(pkt, rng)
    if fix:
        (fix_checksums6 if _is_v6(pkt) else fix_checksums)(pkt)
    if rng.random() < 0.01:
        pkt = bytearray(pkt[: rng.randrange(0, 21)])  # tiny buffers
    return bytes(pkt)


def _icmp_drops(host: Host) -> int:
    """The ICMP errors a host dropped and counted (not about a connection of ours, or not in flight)."""
    c = host.counters
    return c["OutOfWindowIcmps"] + c["IcmpInErrors"] + c["Icmp6InErrors"]


def mutate_icmp(pkt: bytearray, rng: random.Random) -> None:
    """One fault in an ICMP datagram (its IPv4 header is left valid): truncation, flipped bits with
    or without a repaired checksum, a broken quoted header."""
    r = rng.random()
    if r < 0.3:
        del pkt[rng.randrange(20, len(pkt) + 1):]
        if rng.random() < 0.7:
            pkt[2:4] = len(pkt).to_bytes(2, "big")  # Total Length agrees: the ICMP part is short
    elif r < 0.7 and len(pkt) > 20:
        for _ in range(rng.randint(1, 4)):
            pkt[rng.randrange(20, len(pkt))] ^= 1 << rng.randrange(8)
    elif len(pkt) > 28:
        pkt[28] = rng.randrange(256)  # the quote's version and IHL
    if rng.random() < 0.6:
        fix_icmp_checksums(pkt)
    else:
        _ip_checksum(pkt)


def _ip_checksum(pkt: bytearray) -> None:
    pkt[10:12] = b"\0\0"
    pkt[10:12] = internet_checksum(pkt[:20]).to_bytes(2, "big")


def fix_icmp_checksums(pkt: bytearray) -> None:
    """Both checksums of an ICMP datagram made right again after a change (the ICMP one when the
    message is long enough to hold it)."""
    if len(pkt) >= 24:
        pkt[22:24] = b"\0\0"
        pkt[22:24] = internet_checksum(pkt[20:]).to_bytes(2, "big")
    _ip_checksum(pkt)


# ---------------------------------------------------------------------------------------------- the world
class FuzzWorld:
    def __init__(self, seed: int = 1, config: Config | None = None, *, ms_per_segment: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.tick = BATCH * ms_per_segment / 1000.0
        self.report = FuzzReport(seed)
        cfg = config or Config(secret=b"fuzz-victim-key!")
        self.host = Host((VICTIM, VICTIM6), cfg)
        self.peer = Host(PEER, cfg.with_changes(secret=b"fuzz-peer-key..!"))
        self.link = Simulator([self.peer, self.host], delay=0.0005)
        self.now = 0.0
        self.host.listen(LISTEN_PORT, backlog=LISTEN_BACKLOG)
        self.host.listen(BUILD_PORT, backlog=BUILD_BACKLOG)
        self.host.listen(SURVIVOR_PORT)
        self.host.listen(FLOOD_PORT, config=cfg.with_changes(recv_buffer=FLOOD_RECV_BUFFER))
        self._pool = self.rng.randbytes(70_000)
        self._rport = 1024
        self._lport = 20000
        self._peer_rx = bytearray()  # what the survivor's peer received
        self._victim_rx = bytearray()  # what the survivor received
        self.slots: dict[State, Slot] = {}
        self.slot_keys: dict[FourTuple, State] = {}
        self.slot_conns: set[int] = set()
        self.leftovers: deque[FourTuple] = deque()
        self.survivor: Connection | None = None
        self.survivor_peer: ConnectionHandle | None = None
        self._setup_survivor()
        for state in SLOT_STATES:
            self._rebuild(state)
        self.flood_conn = self._build_flood()
        self.flood_next = seq_add(self.flood_conn.rcv_nxt, 1)

    # ------------------------------------------------------------------ plumbing
    def _drain(self) -> list[Segment]:
        """Take the victim's output: forward it on the link, run the application on its events."""
        out = self.host.take(self.now)
        for seg in out.segments:
            self.link.send(seg, self.host)
        self._app(out.events)
        return out.segments

    def _app(self, events: list[Event]) -> None:
        """The victim's application: reads everything, keeps what the fuzzer made as leftovers."""
        for e in events:
            if isinstance(e, Readable):
                data = e.handle.receive(self.now)
                if Host.tcb(e.handle) is self.survivor:
                    self._victim_rx += data
            elif isinstance(e, Accepted):
                tcb = Host.tcb(e.handle)
                if id(tcb) not in self.slot_conns and tcb is not self.survivor:
                    self._leftover(e.handle.four_tuple)

    def _peer_events(self) -> None:
        events = self.link.events_of(self.peer)
        for e in events:
            if isinstance(e, Readable) and e.handle is self.survivor_peer:
                self._peer_rx += e.handle.receive(self.now)
        events.clear()

    def _tick(self) -> None:
        """Let one batch's virtual time pass on the link (deliveries and every timer)."""
        self.link.run(self.tick)
        self.now = self.link.now
        victim_events = self.link.events_of(self.host)
        self._app(list(victim_events))
        victim_events.clear()
        self._peer_events()
        for state, slot in list(self.slots.items()):
            if not self._slot_alive(slot):
                self._fallen(slot)
                self._rebuild(state)
        if self.host.connections.get(self.flood_conn.four_tuple) is not self.flood_conn:
            self.flood_conn = self._build_flood()
            self.flood_next = seq_add(self.flood_conn.rcv_nxt, 1)
        self._drain()
        self._measure()

    def _measure(self) -> None:
        r = self.report
        r.max_connections = max(r.max_connections, len(self.host.connections))
        r.max_time_wait = max(r.max_time_wait, len(self.host.time_wait))
        r.max_embryos = max(r.max_embryos, max((len(x.embryos) for x in self.host.listeners.values()), default=0))

    def state_of(self, key: FourTuple) -> str:
        conn = self.host.connections.get(key)
        if conn is not None:
            return conn.state.value
        if self.host.time_wait and key in self.host.time_wait:
            return "TIME-WAIT"
        if key[1] in self.host.listeners and key[0] in self.host.addresses:
            return "LISTEN"
        return "CLOSED"

    # ------------------------------------------------------------------ building states
    def _ends(self) -> tuple[str, str]:
        """(victim, phantom) addresses of a new connection: IPv6 for a V6_SHARE of them."""
        return (VICTIM6, PHANTOM6) if self.rng.random() < V6_SHARE else (VICTIM, PHANTOM)

    def _stranger(self) -> tuple[str, str]:
        """(victim, stranger) addresses of either family."""
        if self.rng.random() < V6_SHARE:
            return VICTIM6, f"{STRANGERS6}{self.rng.randrange(1, 0xFFFF):x}"
        return VICTIM, STRANGERS + str(self.rng.randrange(1, 255))

    def _next_rport(self, victim: str = VICTIM, phantom: str = PHANTOM) -> int:
        while True:
            self._rport = 1024 + (self._rport - 1023) % 64000
            for port in (BUILD_PORT, PASSIVE_PORT):
                key = (victim, port, phantom, self._rport)
                if key in self.host.connections or key in self.host.time_wait:
                    break
            else:
                return self._rport

    def _next_lport(self, victim: str = VICTIM, phantom: str = PHANTOM) -> int:
        while True:
            self._lport = 20000 + (self._lport - 19999) % 10000
            key = (victim, self._lport, phantom, 443)
            if key not in self.host.connections and key not in self.host.time_wait:
                return self._lport

    def _phantom(self, slot: Slot, flags: int, seq: int, ack: int, payload: bytes = b"") -> None:
        opts = TcpOptions()
        if slot.ts is not None:
            slot.ts = (slot.ts + 1) & MASK
            opts = TcpOptions(timestamp=(slot.ts, slot.conn.tsval(self.now)))
        victim, lport, phantom, rport = slot.key
        self.host.on_segment(Segment(phantom, victim, rport, lport, seq & MASK, ack & MASK, flags, 65535, 0, opts,
                                     payload), self.now)
        self._drain()

    def _syn_options(self) -> tuple[TcpOptions, int | None]:
        rng = self.rng
        ts = rng.getrandbits(32) if rng.random() < 0.5 else None
        return TcpOptions(mss=rng.choice((None, 536, 1200, 1460, 64)),
                          wscale=rng.choice((None, 0, 7, 14)),
                          sack_permitted=rng.random() < 0.5,
                          timestamp=(ts, 0) if ts is not None else None), ts

    def _build(self, state: State) -> Slot | None:
        rng = self.rng
        host = self.host
        now = self.now
        victim, phantom = self._ends()
        if state is S.SYN_SENT:
            conn = Host.tcb(host.connect(phantom, 443, now, local_port=self._next_lport(victim, phantom)))
            self._drain()
            return Slot(state, conn.four_tuple, conn)
        if state is S.LISTEN:
            conn = Host.tcb(host.open_passive(phantom, self._next_rport(victim, phantom), PASSIVE_PORT, now))
            return Slot(state, conn.four_tuple, conn)
        rport = self._next_rport(victim, phantom)
        key = (victim, BUILD_PORT, phantom, rport)
        opts, ts = self._syn_options()
        irs = rng.getrandbits(32)
        host.on_segment(Segment(phantom, victim, rport, BUILD_PORT, irs, 0, SYN, 65535, 0, opts), now)
        embryo = host.connections.get(key)
        if embryo is None:
            self._drain()
            return None
        conn = embryo
        slot = Slot(state, key, conn, ts)
        self.slot_conns.add(id(conn))
        self._drain()
        if state is S.SYN_RECEIVED:
            return slot
        self._phantom(slot, ACK, irs + 1, conn.snd_nxt)
        if rng.random() < 0.3:
            self._phantom(slot, ACK | PSH, conn.rcv_nxt, conn.snd_nxt, self._payload(rng.randint(1, 3000)))
        user = conn.handle  # the application's calls go through the handle
        assert user is not None
        if rng.random() < 0.3:
            user.send(self._payload(rng.randint(1, 5000)), now)
            self._drain()
            if state is not S.ESTABLISHED:
                self._ack_until(slot, lambda: not conn.send_queue_len)
        if state is S.ESTABLISHED:
            return slot
        if state in (S.CLOSE_WAIT, S.LAST_ACK):
            self._phantom(slot, FIN | ACK, conn.rcv_nxt, conn.snd_max)
            if state is S.LAST_ACK:
                user.close(now)
                self._drain()
            return slot
        if rng.random() < 0.5:
            user.close(now)  # orphaned: the application is gone
        else:
            user.shutdown(now)
        self._drain()
        if state is S.FIN_WAIT_1:
            return slot
        if state is S.CLOSING:
            self._phantom(slot, FIN | ACK, conn.rcv_nxt, conn.snd_una)
            return slot
        self._ack_until(slot, lambda: conn.state is not S.FIN_WAIT_1)
        if state is S.FIN_WAIT_2:
            return slot
        self._phantom(slot, FIN | ACK, conn.rcv_nxt, conn.snd_max)
        return slot

    def _ack_until(self, slot: Slot, done: Callable[[], bool]) -> None:
        """The phantom peer acknowledges everything sent until `done` (the windows may need rounds)."""
        conn = slot.conn
        for _ in range(200):
            self._phantom(slot, ACK, conn.rcv_nxt, conn.snd_max)
            if done() or conn.state is S.CLOSED:
                return

    def _slot_alive(self, slot: Slot) -> bool:
        if slot.state is S.TIME_WAIT:
            return slot.key in self.host.time_wait
        return self.host.connections.get(slot.key) is slot.conn and slot.conn.state is slot.state

    def _rebuild(self, state: State) -> None:
        for _ in range(5):
            slot = self._build(state)
            if slot is not None and self._slot_alive(slot):
                old = self.slots.get(state)
                if old is not None:
                    self.slot_keys.pop(old.key, None)
                self.slots[state] = slot
                self.slot_keys[slot.key] = state
                self.slot_conns.add(id(slot.conn))
                self.report.rebuilds[state.value] += 1
                return
            self.report.build_failures += 1
            if len(self.report.exceptions) < 20:
                got = "nothing" if slot is None else self.state_of(slot.key)
                self.report.build_failure_detail.append(f"building {state} at t={self.now:.3f} got {got}")
            if slot is not None:
                self._fallen(slot)
        raise RuntimeError(f"cannot build a connection in {state}")

    def _fallen(self, slot: Slot) -> None:
        self.slot_conns.discard(id(slot.conn))
        self._leftover(slot.key)

    def _leftover(self, key: FourTuple) -> None:
        """Keep targeting a connection that left its state; abort the oldest beyond the cap."""
        if key not in self.host.connections and key not in self.host.time_wait:
            return
        self.leftovers.append(key)
        while len(self.leftovers) > LEFTOVER_CAP:
            old = self.leftovers.popleft()
            conn = self.host.connections.get(old)
            if conn is not None and conn.handle is not None and id(conn) not in self.slot_conns \
                    and conn is not self.survivor:
                conn.handle.abort(self.now)
        self._drain()

    def _setup_survivor(self) -> None:
        conn = self.peer.connect(VICTIM, SURVIVOR_PORT, self.now)
        self.link.run_until(lambda: conn.state is S.ESTABLISHED and len(self.host.connections) == 1, timeout=10)
        (self.survivor,) = self.host.connections.values()
        self.survivor_peer = conn
        self.link.events_of(self.host).clear()
        self.link.events_of(self.peer).clear()
        # Some data both ways first, so the sequence numbers have moved off the ISNs.
        conn.send(b"hello " * 100, self.link.now)
        assert self.survivor.handle is not None
        self.survivor.handle.send(b"world " * 100, self.link.now)
        self.link.run(0.5)
        self.now = self.link.now
        self._app(list(self.link.events_of(self.host)))
        self.link.events_of(self.host).clear()
        self._peer_events()
        assert self._victim_rx == b"hello " * 100 and self._peer_rx == b"world " * 100
        self._victim_rx.clear()
        self._peer_rx.clear()

    # ------------------------------------------------------------------ hostile peers
    def _build_flood(self) -> Connection:
        """An ESTABLISHED connection through FLOOD_PORT (SACK on, small window), driven by the phantom."""
        rport = self._next_rport()
        key = (VICTIM, FLOOD_PORT, PHANTOM, rport)
        irs = self.rng.getrandbits(32)
        opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True)
        self.host.on_segment(Segment(PHANTOM, VICTIM, rport, FLOOD_PORT, irs, 0, SYN, 65535, 0, opts), self.now)
        conn = self.host.connections[key]
        self.slot_conns.add(id(conn))  # the application keeps it (not a leftover)
        self._drain()
        self.host.on_segment(Segment(PHANTOM, VICTIM, rport, FLOOD_PORT, irs + 1, conn.snd_nxt, ACK, 65535), self.now)
        self._drain()
        assert conn.state is S.ESTABLISHED
        self.report.rebuilds["flood"] += 1
        return conn

    def _flood_segment(self) -> tuple[str, Segment]:
        """The next 1-byte segment of the flood: mostly two sequence numbers above the last, now and
        then below the highest block (which prunes from the top once memory is short) or the one
        that fills the first gap (a block moves to the application)."""
        c, rng = self.flood_conn, self.rng
        r = rng.random()
        above = seq_sub(self.flood_next, c.rcv_nxt)
        if r < 0.02:
            seq = c.rcv_nxt
        elif r < 0.12 and above > 3:
            seq = seq_add(c.rcv_nxt, 1 + 2 * rng.randrange(above // 2))
        else:
            if not 0 < above < c.rcv_wnd:
                self.flood_next = seq_add(c.rcv_nxt, 1)
            seq, self.flood_next = self.flood_next, seq_add(self.flood_next, 2)
        _, lport, _, rport = c.four_tuple
        return "ooo flood", Segment(PHANTOM, VICTIM, rport, lport, seq, c.snd_nxt, ACK, 65535, 0, TcpOptions(), b"f")

    def _forged_cookie(self) -> tuple[str, Segment] | None:
        """A stranger's SYN to the small listener; if it is answered with a cookie, the ACK that returns
        it with one field tampered with (None when the backlog had room: no cookie)."""
        rng, host = self.rng, self.host
        (victim, src), sport = self._stranger(), rng.randrange(1024, 65536)
        key = (victim, LISTEN_PORT, src, sport)
        if key in host.connections or key in host.time_wait:
            return None
        irs = rng.getrandbits(32)
        ts = rng.getrandbits(32) if rng.random() < 0.5 else None
        opts = TcpOptions(mss=rng.choice((536, 1460, 8960)), wscale=rng.choice((None, 7)),
                          sack_permitted=rng.random() < 0.5, timestamp=(ts, 0) if ts is not None else None)
        host.on_segment(Segment(src, victim, sport, LISTEN_PORT, irs, 0, SYN, 65535, 0, opts), self.now)
        out = self._drain()
        synack = next((x for x in out if x.flags & SYN and x.dst_addr == src and x.dst_port == sport), None)
        if synack is None or key in host.connections:
            return None  # no cookie: the backlog had room (or the SYN was refused)
        cookie, seq = synack.seq, irs + 1
        ecr = synack.options.timestamp[0] if synack.options.timestamp else None
        r = rng.random()
        if r < 0.35:
            cookie ^= 1 << rng.randrange(32)  # the time counter, the MSS index or the hash
        elif r < 0.5:
            cookie ^= rng.randrange(1, 8) << 24  # another MSS index
        elif r < 0.7 and ecr is not None:
            ecr ^= 1 << rng.randrange(6)  # the window shift or SACK bits echoed in the timestamp
        elif r < 0.85:
            seq += rng.choice((1, -1, 1 << 31))  # not the SYN's sequence number
        else:
            sport = (sport + 1) & 0xFFFF  # another 4-tuple
        ack_opts = TcpOptions(timestamp=((ts + 1) & MASK, ecr)) if ts is not None and ecr is not None else TcpOptions()
        return "forged cookie", Segment(src, victim, sport, LISTEN_PORT, seq & MASK, (cookie + 1) & MASK, ACK, 65535,
                                        0, ack_opts)

    def _feed_hostile(self, kind: str, seg: Segment, i: int) -> None:
        report = self.report
        report.by_kind[kind] += 1
        self._feed(seg, i)
        if kind == "ooo flood":
            c = self.flood_conn
            report.flood_segments += 1
            report.flood_max_mem = max(report.flood_max_mem, c.recv.mem)
            report.flood_max_blocks = max(report.flood_max_blocks, len(c.recv.ooo or ()))
            report.flood_limit = recv_memory(c)
            return
        report.forged_cookies += 1
        conn = self.host.connections.get((seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port))
        if conn is not None and conn.listen_port == LISTEN_PORT and conn.state is not S.SYN_RECEIVED:
            report.forged_accepted += 1
            conn.abort(self.now)
            self._drain()

    # ------------------------------------------------------------------ generating segments
    def _payload(self, n: int) -> bytes:
        start = self.rng.randrange(0, len(self._pool) - n) if n < len(self._pool) else 0
        return self._pool[start : start + n]

    def _pick_target(self) -> tuple[str, FourTuple, View | None, Connection | None]:
        """(kind, victim-side 4-tuple, what is known of it, its connection)."""
        rng = self.rng
        r = rng.random()
        if r < 0.62:
            slot = self.slots[rng.choice(SLOT_STATES)]
            informed = rng.random() < 0.75
            if slot.state is S.TIME_WAIT:
                tw = self.host.time_wait.get(slot.key)
                view = View(tw.rcv_nxt, tw.window, tw.snd_nxt, tw.snd_nxt, slot.conn.iss, slot.conn.irs,
                            65535, tw.ts_recent) if tw is not None else None
                return "slot", slot.key, view if informed else None, None
            return "slot", slot.key, view_of_conn(slot.conn) if informed else None, slot.conn
        if r < 0.72:
            victim, src = self._stranger()
            return "stranger", (victim, rng.choice((LISTEN_PORT, LISTEN_PORT, BUILD_PORT, PASSIVE_PORT)), src,
                                rng.randrange(1, 65536)), None, None
        if r < 0.77:
            victim, src = self._stranger()
            if rng.random() < 0.4:
                src = (PHANTOM6 if ":" in victim else rng.choice((PEER, PHANTOM)))
            return "stranger", (victim, rng.choice((CLOSED_PORT, rng.randrange(1, 65536))), src,
                                rng.randrange(1, 65536)), None, None
        if r < 0.90 and self.leftovers:
            key = self.leftovers[rng.randrange(len(self.leftovers))]
            conn = self.host.connections.get(key)
            if conn is not None:
                return "leftover", key, view_of_conn(conn), conn
            tw = self.host.time_wait.get(key) if self.host.time_wait else None
            if tw is not None:
                return "leftover", key, View(tw.rcv_nxt, tw.window, tw.snd_nxt, tw.snd_nxt, 0, 0, 65535,
                                             tw.ts_recent), None
        assert self.survivor is not None
        return "survivor", self.survivor.four_tuple, None, self.survivor  # blind: knows the 4-tuple only

    def _seq(self, v: View | None) -> int:
        rng = self.rng
        if v is None or rng.random() < 0.2:
            return rng.getrandbits(32)
        base = rng.choice((v.rcv_nxt, v.rcv_nxt, v.rcv_nxt, v.rcv_nxt + v.rcv_wnd, v.rcv_nxt + v.rcv_wnd // 2,
                           v.irs, v.rcv_nxt - 1, v.rcv_nxt + 0x80000000, v.rcv_nxt - v.rcv_wnd))
        return (base + rng.choice(DELTAS)) & MASK

    def _ack(self, v: View | None) -> int:
        rng = self.rng
        if v is None or rng.random() < 0.2:
            return rng.getrandbits(32) if rng.random() < 0.9 else 0
        base = rng.choice((v.snd_una, v.snd_max, v.snd_max, v.snd_max + 1, v.snd_una - v.max_snd_wnd,
                           v.snd_una - v.max_snd_wnd - 1, v.iss, v.iss + 1, v.snd_una + (v.snd_max - v.snd_una) // 2))
        return (base + rng.choice(DELTAS[:8])) & MASK

    def _options(self, v: View | None) -> TcpOptions:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return TcpOptions()
        if r < 0.7:
            if v is not None and v.ts_recent is not None and rng.random() < 0.8:
                tsval = (v.ts_recent + rng.choice((-1, 0, 1, 100, -100, 0x80000000))) & MASK
            else:
                tsval = rng.getrandbits(32)
            return TcpOptions(timestamp=(tsval, rng.getrandbits(32)))
        opts = TcpOptions()
        if rng.random() < 0.4:
            opts.mss = rng.choice((0, 1, 64, 536, 1460, 65535, rng.randrange(65536)))
        if rng.random() < 0.4:
            opts.wscale = rng.choice((0, 14, 15, 255, rng.randrange(256)))
        opts.sack_permitted = rng.random() < 0.3
        if rng.random() < 0.3:
            opts.sack_blocks = tuple((rng.getrandbits(32), rng.getrandbits(32)) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.4:
            opts.timestamp = (rng.getrandbits(32), rng.getrandbits(32))
        if rng.random() < 0.2:
            opts.unknown = ((rng.choice((6, 7, 19, 29, 30, 34, 253, 254)), rng.randbytes(rng.randint(0, 6))),)
        return opts

    def _segment(self, key: FourTuple, v: View | None) -> Segment:
        rng = self.rng
        flags = rng.getrandbits(8) if rng.random() < 0.25 else rng.choice(FLAG_CHOICES)
        r = rng.random()
        n = (0 if r < 0.45 else rng.randint(1, 64) if r < 0.75 else rng.randint(65, 1460) if r < 0.93
             else rng.randint(1461, 9000) if r < 0.99 else rng.randint(9001, 65_000))
        window = rng.choice((0, 65535, rng.randrange(65536), rng.randrange(65536), rng.randrange(65536)))
        urgent = rng.randrange(65536) if rng.random() < 0.15 else 0
        la, lp, ra, rp = key
        return Segment(ra, la, rp, lp, self._seq(v), self._ack(v), flags, window, urgent, self._options(v),
                       self._payload(n))

    # ------------------------------------------------------------------ feeding
    def run(self, segments: int, progress: Callable[[int], None] | None = None) -> FuzzReport:
        rng = self.rng
        report = self.report
        t0 = time.perf_counter()
        for i in range(segments):
            if i and i % BATCH == 0:
                self._tick()
                if progress is not None and i % 100_000 == 0:
                    progress(i)
            r = rng.random()
            if r > 1.0 - ICMP_SHARE:
                self._feed_icmp(i)
                continue
            hostile = (self._flood_segment() if r < FLOOD_SHARE else
                       self._forged_cookie() if r < FLOOD_SHARE + COOKIE_SHARE else None)
            if hostile is not None:
                self._feed_hostile(*hostile, i)
                continue
            kind, key, view, conn = self._pick_target()
            report.by_kind[kind] += 1
            seg = self._segment(key, view)
            if kind == "survivor" and conn is not None and would_hit(conn, seg):
                report.survivor_skipped += 1
                report.outcomes["skipped: would hit the survivor exactly"] += 1
                continue
            if rng.random() < 0.5:
                self._feed_raw(seg, i)
            else:
                self._feed(seg, i)
        self._tick()
        report.segments += segments
        report.seconds += time.perf_counter() - t0
        report.virtual_seconds = self.now
        report.counters = dict(self.host.counters)
        return report

    def _feed_raw(self, seg: Segment, i: int) -> None:
        report = self.report
        report.raw += 1
        try:
            packet = build_packet(seg)
        except ValueError:
            seg.options = TcpOptions()
            packet = build_packet(seg)
        if self.rng.random() < 0.8:
            packet = mutate(packet, self.rng)
        try:
            parsed = parse_packet(packet)
        except MalformedPacket as exc:
            report.malformed[exc.reason.value] += 1
            report.outcomes[OUTCOMES[0]] += 1
            report.by_target["(malformed)"] += 1
            report.target_outcomes[("(malformed)", OUTCOMES[0])] += 1
            self.host.on_malformed(exc.reason.value)
            return
        except Exception as exc:  # a wire-layer bug: parse_packet may raise only MalformedPacket
            self._exception(i, "parse_packet", packet.hex(), exc)
            return
        survivor = self.survivor
        if (survivor is not None and (parsed.dst_addr, parsed.dst_port, parsed.src_addr, parsed.src_port)
                == survivor.four_tuple and would_hit(survivor, parsed)):
            report.survivor_skipped += 1
            report.outcomes["skipped: would hit the survivor exactly"] += 1
            return
        self._feed(parsed, i)

    def _feed(self, seg: Segment, i: int) -> None:
        host = self.host
        report = self.report
        counters = host.counters
        key = (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)
        conn = host.connections.get(key)
        before = conn.state.value if conn is not None else self.state_of(key)
        rcv_nxt = conn.rcv_nxt if conn is not None else None
        challenge = counters["TCPChallengeACK"]
        skipped = counters["TCPACKSkippedChallenge"]
        try:
            host.on_segment(seg, self.now)
            out = self._drain()
        except Exception as exc:
            self._exception(i, before, seg.summary(), exc)
            return
        after_conn = host.connections.get(key)
        if conn is not None and after_conn is not conn:
            # The connection left the table: for CLOSED, LISTEN (a passive embryo) or TIME-WAIT.
            after = "TIME-WAIT" if key in host.time_wait else conn.state.value
        elif after_conn is None and before == "TIME-WAIT" and key not in host.time_wait:
            after = "CLOSED"  # the record ended (RST); the 4-tuple now only meets the listener
        else:
            after = after_conn.state.value if after_conn is not None else self.state_of(key)
        if (after_conn is not None and after_conn is not conn and id(after_conn) not in self.slot_conns
                and key[1] != LISTEN_PORT):
            self._leftover(key)  # made by the fuzzer (SYN reopening TIME-WAIT, a stranger's SYN)
        if before != after:
            outcome = "state change"
            report.transitions[(before, after)] += 1
        elif counters["TCPChallengeACK"] != challenge:
            outcome = "challenge ACK"
        elif counters["TCPACKSkippedChallenge"] != skipped:
            outcome = "challenge ACK suppressed (rate limit)"
        elif any(s.flags & RST for s in out):
            outcome = "RST sent"
        elif conn is not None and after_conn is conn and conn.rcv_nxt != rcv_nxt:
            outcome = "data/FIN accepted"
        elif any(s.flags & SYN for s in out):
            outcome = "SYN-ACK sent"
        elif out:
            outcome = "ACK sent"
        else:
            outcome = "dropped silently"
        report.outcomes[outcome] += 1
        report.by_target[before] += 1
        report.target_outcomes[(before, outcome)] += 1
        state = self.slot_keys.get(key)
        if state is not None:
            slot = self.slots[state]
            if not self._slot_alive(slot):
                self._fallen(slot)
                self._rebuild(state)

    # ------------------------------------------------------------------ ICMP
    def _icmp_message(self) -> tuple[IcmpMessage, FourTuple]:
        """An echo request, or an error about one of the targets (its quote names the 4-tuple),
        ICMPv6 for a target of that family."""
        rng = self.rng
        _kind, key, view, _conn = self._pick_target()
        la, lp, ra, rp = key
        v6 = ":" in la
        version = 6 if v6 else 4
        if rng.random() < 0.25:
            body = self._payload(rng.choice((0, 8, 56, 1400)))
            other = "2001:2::99" if v6 else "198.18.0.99"
            return IcmpMessage(version, ra, rng.choice((la, la, la, other)), 128 if v6 else ICMP_ECHO_REQUEST,
                               rng.choice((0, 0, 1)), rng.randrange(65536), rng.randrange(65536), body=body), key
        if view is None or rng.random() < 0.3:
            seq = rng.getrandbits(32)
        else:
            flight = seq_sub(view.snd_max, view.snd_una)
            seq = (view.snd_una + rng.choice((0, 0, -1, flight // 2, flight, flight - 1))) & MASK
        header = 40 if v6 else 20
        quoted = build_packet(Segment(la, ra, lp, rp, seq, 0, ACK, 1000))[: header + rng.choice((8, 8, 8, 20, 40))]
        kind = rng.choice(ICMPV6_TYPES if v6 else ICMP_TYPES)
        code = rng.randrange(16) if kind == 3 and not v6 else rng.randrange(7) if kind == 1 else rng.randrange(3)
        if kind == 3 and not v6 and rng.random() < 0.4:
            code = ICMP_FRAG_NEEDED
        mtu = rng.choice(MTUS) if rng.random() < 0.9 else rng.randrange(65536)
        router = "2001:2::5:1" if v6 else "198.18.5.1"
        return IcmpMessage(version, rng.choice((ra, router)), la, kind, code, mtu=mtu, body=quoted), key

    def _feed_icmp(self, i: int) -> None:
        rng = self.rng
        report = self.report
        host = self.host
        msg, key = self._icmp_message()
        report.icmp += 1
        report.by_kind["icmp"] += 1
        packet = bytearray(build_icmp(msg))
        if msg.version == 4:
            if rng.random() < 0.5:
                mutate_icmp(packet, rng)
        elif rng.random() < 0.3:
            packet[rng.randrange(40, len(packet))] ^= 1 << rng.randrange(8)  # ICMPv6: its checksum fails
        conn = host.connections.get(key)
        before = conn.state if conn is not None else None
        counted = _icmp_drops(host)
        try:
            parsed = parse_datagram(bytes(packet))
        except MalformedPacket as exc:
            report.malformed[exc.reason.value] += 1
            report.outcomes[OUTCOMES[0]] += 1
            host.on_malformed(exc.reason.value, msg.version)
            return
        except Exception as exc:  # parse_datagram may raise only MalformedPacket
            self._exception(i, "parse_datagram", packet.hex(), exc)
            return
        if isinstance(parsed, Segment):
            self._feed(parsed, i)  # a flip made it TCP again (checksums and all): a segment like any
            return
        try:
            reply = host.on_icmp(parsed, self.now)
            self._drain()
        except Exception as exc:
            self._exception(i, "on_icmp", parsed.summary(), exc)
            return
        if conn is not None and conn.state is not before:
            report.icmp_state_changes.append(f"#{i} {parsed.summary()}: {before} -> {conn.state}")
        if _icmp_drops(host) != counted:
            outcome = "ICMP: dropped, counted"
        elif reply is not None:
            outcome = "ICMP: echo answered"
        elif parsed.is_error and parsed.quote is not None and parsed.quote.protocol == 6 and conn is not None:
            outcome = "ICMP: error taken (PMTU, soft error)"
        else:
            outcome = "ICMP: ignored"
        report.outcomes[outcome] += 1

    def _exception(self, i: int, where: str, what: str, exc: BaseException) -> None:
        report = self.report
        report.exception_count += 1
        report.outcomes["exception"] += 1
        if len(report.exceptions) < 20:
            tb = traceback.format_exception(exc)[-3:]
            report.exceptions.append(f"#{i} seed={report.seed} [{where}] {what}: {''.join(tb).strip()}")

    # ------------------------------------------------------------------ after the fuzz
    def check_survivor(self, size: int = 200_000) -> bool:
        """The survivor moves `size` bytes each way intact and closes cleanly (four-way close)."""
        report = self.report
        a, v = self.survivor_peer, self.survivor.handle if self.survivor is not None else None
        assert a is not None and v is not None
        problems: list[str] = []
        if v.state is not S.ESTABLISHED or a.state is not S.ESTABLISHED:
            problems.append(f"not ESTABLISHED after the fuzz: victim {v.state}, peer {a.state}")
        if self._victim_rx or self._peer_rx:
            problems.append(f"data appeared during the fuzz: {len(self._victim_rx)} / {len(self._peer_rx)} bytes")
        if not problems:
            up = self.rng.randbytes(size)
            down = self.rng.randbytes(size)
            a.send(up, self.link.now)
            v.send(down, self.link.now)
            self._run_link_until(lambda: len(self._victim_rx) >= size and len(self._peer_rx) >= size, 120)
            if bytes(self._victim_rx) != up or bytes(self._peer_rx) != down:
                problems.append("data corrupted")
            a.close(self.link.now)
            self._run_link_until(lambda: v.eof, 120)
            v.close(self.link.now)
            self._run_link_until(lambda: v.state is S.CLOSED and a.state in (S.TIME_WAIT, S.CLOSED), 120)
            if not (v.state is S.CLOSED and a.state in (S.TIME_WAIT, S.CLOSED)):
                problems.append(f"did not close: victim {v.state}, peer {a.state}")
            elif v.close_reason is None or v.close_reason.value != "normal":
                problems.append(f"victim closed with {v.close_reason}")
        report.survivor_ok = not problems
        report.survivor_detail = "; ".join(problems) or f"{size:,} bytes each way intact, closed normally"
        return report.survivor_ok

    def _run_link_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        end = self.link.now + timeout
        while not predicate() and self.link.now < end:
            self.link.run(0.01)
            self.now = self.link.now
            victim_events = self.link.events_of(self.host)
            self._app(list(victim_events))
            victim_events.clear()
            self._peer_events()

    def drain(self) -> bool:
        """Abort everything, close the listeners, let TIME-WAIT expire: nothing may be left."""
        now = self.link.now
        self.slots.clear()
        self.leftovers.clear()
        for handle in self.host.handles():
            handle.abort(now)
        for listener in list(self.host.listeners.values()):
            listener.close(now)
        self._drain()
        for handle in self.peer.handles():
            handle.abort(now)
        self.link.run(3 * self.host.config.time_wait_duration + 1)
        for host in (self.host, self.peer):
            self.link.events_of(host).clear()
        left = {"connections": len(self.host.connections), "time_wait": len(self.host.time_wait),
                "timers": self.host.pending_timers(), "memory": self.host.memory.allocated,
                "peer": len(self.peer.connections) + len(self.peer.time_wait) + self.peer.pending_timers()}
        self.report.drained_ok = not any(left.values())
        self.report.drained_detail = " ".join(f"{k}={v}" for k, v in left.items())
        self.report.counters = dict(self.host.counters)
        return self.report.drained_ok


def run_fuzz(segments: int, seed: int = 1, *, ms_per_segment: float = 1.0, check: bool = True,
             progress: Callable[[int], None] | None = None) -> FuzzReport:
    """Build the world, fuzz it with `segments` segments, then check the survivor and drain."""
    world = FuzzWorld(seed, ms_per_segment=ms_per_segment)
    report = world.run(segments, progress)
    if check:
        world.check_survivor()
        world.drain()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=1_000_000, help="fuzz segments to feed (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (the run is deterministic per seed)")
    parser.add_argument("--ms-per-segment", type=float, default=1.0,
                        help="virtual time between fuzz segments (default 1 ms: 1,000,000 segments span 1000 s)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    def progress(i: int) -> None:
        rate = i / (time.perf_counter() - t0)
        print(f"  ... {i:,} segments, {rate:,.0f}/s", file=sys.stderr, flush=True)

    report = run_fuzz(args.segments, args.seed, ms_per_segment=args.ms_per_segment, progress=progress)
    print(report.format())
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
