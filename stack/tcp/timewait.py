"""TIME-WAIT as a compact record, not a full TCB (the Linux `tcp_minisocks.c` model).

A connection that reaches TIME-WAIT hands its table slot to a `TimeWait` holding only what
TIME-WAIT needs: the sequence numbers to ACK a retransmitted FIN, TS.Recent for PAWS and RFC 6191,
and its 2MSL timer. `process` is the counterpart of Linux's `tcp_timewait_state_process`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from enum import Enum

from stack.native import TimerWheel
from stack.tcp.config import Config, FourTuple
from stack.tcp.seq import seq_gt, seq_lt
from stack.wire.segment import ACK, FIN, RST, SYN, Segment, TcpOptions

PAWS_MSL = 60.0  # Linux TCP_PAWS_MSL: after this long TS.Recent no longer rejects an RST


class TwAction(Enum):
    NONE = 0  # absorbed (timer possibly restarted)
    ACK = 1  # answer with <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
    KILL = 2  # an exact RST ended TIME-WAIT (RFC 9293; rfc1337 off)
    REOPEN = 3  # a new SYN may take this 4-tuple (RFC 6191 / RFC 9293 MAY-2)
    CHALLENGE = 4  # an in-window, inexact RST: challenge ACK (RFC 5961 §3.2)


class TimeWait:
    __slots__ = (
        "deadline",
        "entered",
        "four_tuple",
        "handle",
        "last_oow_ack",
        "rcv_nxt",
        "snd_nxt",
        "ts_offset",
        "ts_recent",
        "ts_recent_time",
        "window",
        "wscale",
    )

    def __init__(
        self,
        four_tuple: FourTuple,
        snd_nxt: int,
        rcv_nxt: int,
        window: int,
        ts_recent: int | None,
        ts_recent_time: float,
        ts_offset: int,
        now: float,
        deadline: float,
        wscale: int = 0,
    ) -> None:
        self.four_tuple = four_tuple
        self.snd_nxt = snd_nxt
        self.rcv_nxt = rcv_nxt
        self.window = window  # the window field we last advertised ...
        self.wscale = wscale  # ... and its scale: what an RST must fall into (RFC 5961 §3)
        self.ts_recent = ts_recent  # None when timestamps were not negotiated
        self.ts_recent_time = ts_recent_time
        self.ts_offset = ts_offset
        self.entered = now
        self.deadline = deadline
        self.handle = -1
        self.last_oow_ack = -1e18

    @property
    def ts_ok(self) -> bool:
        return self.ts_recent is not None

    def tsval(self, now: float) -> int:
        return (int(now * 1000.0) + self.ts_offset) & 0xFFFFFFFF

    def process(self, seg: Segment, now: float, cfg: Config) -> TwAction:
        """What TIME-WAIT does with one segment (docs/closing-rules.md, TIME-WAIT)."""
        flags = seg.flags
        ts = seg.options.timestamp if self.ts_recent is not None else None
        paws_reject = False
        if ts is not None and self.ts_recent is not None and seq_lt(ts[0], self.ts_recent):
            # RFC 7323 §5.3; an RST is exempt once TS.Recent is stale (Linux tcp_paws_reject).
            paws_reject = not (flags & RST and now - self.ts_recent_time >= PAWS_MSL)
        seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)

        if not paws_reject and seg.seq == self.rcv_nxt and (seg_len == 0 or flags & RST):
            # In-window: only an RST or a bare ACK can be here.
            if flags & RST:
                if not cfg.rfc1337:
                    return TwAction.KILL
            else:
                self.restart(now, cfg)
            if ts is not None:
                self.ts_recent, self.ts_recent_time = ts[0], now
            return TwAction.NONE

        if flags & SYN and not flags & (RST | ACK) and not paws_reject and cfg.syn_reopen_time_wait:
            newer_ts = ts is not None and self.ts_recent is not None and seq_gt(ts[0], self.ts_recent)
            if seq_gt(seg.seq, self.rcv_nxt) or newer_ts:
                return TwAction.REOPEN

        if flags & RST:
            # Inexact: in the window it is challenged (RFC 5961 §3.2; Linux ignores it instead),
            # outside it is dropped. Challenges share the out-of-window ACK rate limit.
            in_window = 0 < (seg.seq - self.rcv_nxt) & 0xFFFFFFFF < max(self.window << self.wscale, 1)
            if paws_reject or not in_window or now - self.last_oow_ack < cfg.challenge_ack_interval:
                return TwAction.NONE
            self.last_oow_ack = now
            return TwAction.CHALLENGE
        if paws_reject or flags & ACK:
            self.restart(now, cfg)  # e.g. a retransmitted FIN: restart 2MSL (RFC 9293 §3.10.7.4)
        # Pure ACKs and SYNs are answered at most once per interval so two TIME-WAITs cannot
        # ping-pong; a segment carrying FIN or data always is (Linux tcp_oow_rate_limited).
        if seg.payload or flags & FIN:
            return TwAction.ACK
        if now - self.last_oow_ack < cfg.challenge_ack_interval:
            return TwAction.NONE
        self.last_oow_ack = now
        return TwAction.ACK

    def restart(self, now: float, cfg: Config) -> None:
        self.deadline = now + cfg.time_wait_duration

    def reopen_isn(self) -> int:
        """The ISN for a connection that takes over this 4-tuple: SND.NXT + 65535 + 2, as Linux picks."""
        isn = (self.snd_nxt + 65535 + 2) & 0xFFFFFFFF
        return isn or 1

    def ack_segment(self, now: float) -> Segment:
        la, lp, ra, rp = self.four_tuple
        ts = self.ts_recent
        opts = TcpOptions(timestamp=(self.tsval(now), ts)) if ts is not None else TcpOptions()
        return Segment(la, ra, lp, rp, self.snd_nxt, self.rcv_nxt, ACK, self.window, 0, opts, b"")


# ---------------------------------------------------------------------------------------------
# The table: packed records, so a busy server can hold a million TIME-WAITs.
#
# A TimeWait object costs ~500 bytes in CPython (boxed ints and floats). The table instead keeps,
# per local address, a dict from one 64-bit int key (local port, remote port, remote address) to a
# 60-byte packed record, and a timer wheel of its own whose timer ids ARE those keys, so a timer that
# fires needs no side map. Records are unpacked into a TimeWait only when a segment or a timer
# touches them, which is rare.
#
# An IPv6 remote address does not fit the key's 32 bits (nor would a 160-bit key fit the wheel's
# 64-bit timer ids), so a local IPv6 address numbers its records' remote addresses instead
# (`_RemoteIds`): the key holds that 32-bit number, and each distinct remote address costs one
# entry for as long as a record of it lives. Clients are far fewer than their connections, so a
# record stays the size of an IPv4 one (README: bytes per record of both families).

_RECORD = struct.Struct("!IIIIHBBQdddd")
_TS_OK = 1
_ADDR_BITS = 0xFFFFFFFF


def _addr_int(addr: str, cache: dict[str, int] = {}) -> int:  # noqa: B006 - a deliberate memo
    value = cache.get(addr)
    if value is None:
        value = int.from_bytes(socket.inet_aton(addr), "big")
        if len(cache) < 65536:
            cache[addr] = value
    return value


def _pack_key(four_tuple: FourTuple) -> int:
    _, lport, raddr, rport = four_tuple
    return (lport << 48) | (rport << 32) | _addr_int(raddr)


def _unpack_key(local: str, key: int) -> FourTuple:
    return (local, key >> 48, socket.inet_ntoa((key & _ADDR_BITS).to_bytes(4, "big")), (key >> 32) & 0xFFFF)


class _RemoteIds:
    """The remote IPv6 addresses of one local address's records, each as a 32-bit number with a
    count of the records that use it; a number is reused once its last record is gone."""

    __slots__ = ("addrs", "free", "ids", "refs")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.addrs: list[str] = []
        self.refs: list[int] = []
        self.free: list[int] = []

    def key(self, four_tuple: FourTuple) -> int | None:
        """The record key of `four_tuple`, None if no record has its remote address."""
        _, lport, raddr, rport = four_tuple
        number = self.ids.get(raddr)
        return None if number is None else (lport << 48) | (rport << 32) | number

    def acquire(self, four_tuple: FourTuple) -> int:
        _, lport, raddr, rport = four_tuple
        number = self.ids.get(raddr)
        if number is None:
            if self.free:
                number = self.free.pop()
                self.addrs[number] = raddr
            else:
                number = len(self.addrs)
                if number > _ADDR_BITS:
                    raise OverflowError("more than 2**32 remote addresses in TIME-WAIT")
                self.addrs.append(raddr)
                self.refs.append(0)
            self.ids[raddr] = number
        self.refs[number] += 1
        return (lport << 48) | (rport << 32) | number

    def release(self, key: int) -> None:
        number = key & _ADDR_BITS
        self.refs[number] -= 1
        if not self.refs[number]:
            del self.ids[self.addrs[number]]
            self.addrs[number] = ""
            self.free.append(number)

    def four_tuple(self, local: str, key: int) -> FourTuple:
        return (local, key >> 48, self.addrs[key & _ADDR_BITS], (key >> 32) & 0xFFFF)


class TimeWaitTable:
    """4-tuple -> TIME-WAIT record, with O(1) add, lookup, removal and expiry (no scans)."""

    def __init__(self, resolution: float, start: float) -> None:
        self._resolution = resolution
        self._start = start
        self._records: dict[str, dict[int, bytes]] = {}
        self._wheels: dict[str, TimerWheel] = {}
        self._count = 0  # records in all the dicts: the host asks on every segment without a connection
        self._remote_ids: dict[str, _RemoteIds] = {}  # per local IPv6 address

    def _key(self, four_tuple: FourTuple) -> int | None:
        ids = self._remote_ids.get(four_tuple[0])
        return _pack_key(four_tuple) if ids is None else ids.key(four_tuple)

    def _four_tuple(self, local: str, key: int) -> FourTuple:
        ids = self._remote_ids.get(local)
        return _unpack_key(local, key) if ids is None else ids.four_tuple(local, key)

    # ---- mapping-like reading (what observers and tests use)
    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __contains__(self, four_tuple: object) -> bool:
        if not isinstance(four_tuple, tuple) or len(four_tuple) != 4:
            return False
        records = self._records.get(four_tuple[0])
        return records is not None and self._key(four_tuple) in records

    def get(self, four_tuple: FourTuple) -> TimeWait | None:
        records = self._records.get(four_tuple[0])
        if not records:
            return None
        key = self._key(four_tuple)
        raw = None if key is None else records.get(key)
        return None if raw is None else _unpack(four_tuple, raw)

    def __getitem__(self, four_tuple: FourTuple) -> TimeWait:
        tw = self.get(four_tuple)
        if tw is None:
            raise KeyError(four_tuple)
        return tw

    def __iter__(self) -> Iterator[FourTuple]:
        for local, records in self._records.items():
            for key in list(records):
                yield self._four_tuple(local, key)

    def keys(self) -> Iterator[FourTuple]:
        return iter(self)

    def values(self) -> Iterator[TimeWait]:
        for local, records in self._records.items():
            for key, raw in list(records.items()):
                yield _unpack(self._four_tuple(local, key), raw)

    def items(self) -> Iterator[tuple[FourTuple, TimeWait]]:
        for tw in self.values():
            yield tw.four_tuple, tw

    def __repr__(self) -> str:
        return f"<TimeWaitTable {len(self)} records>"

    # ---- changes (the host's business)
    def add(self, tw: TimeWait) -> None:
        local = tw.four_tuple[0]
        wheel = self._wheels.get(local)
        if wheel is None:
            wheel = self._wheels[local] = TimerWheel(self._resolution, self._start)
            self._records[local] = {}
            if ":" in local:
                self._remote_ids[local] = _RemoteIds()
        ids = self._remote_ids.get(local)
        records = self._records[local]
        if ids is None:
            key = _pack_key(tw.four_tuple)
        else:
            found = ids.key(tw.four_tuple)
            key = found if found is not None and found in records else ids.acquire(tw.four_tuple)
        old = records.get(key)
        if old is not None:  # a record replaced: its timer goes with it
            wheel.cancel(_RECORD.unpack(old)[7])
        else:
            self._count += 1
        tw.handle = wheel.schedule(tw.deadline, key)
        records[key] = _pack(tw)

    def store(self, tw: TimeWait) -> None:
        """Write back a record changed by `TimeWait.process` (its deadline may have moved later:
        the wheel entry stays where it is and is re-armed when it fires, see `expire`)."""
        records = self._records.get(tw.four_tuple[0])
        key = self._key(tw.four_tuple)
        if records is not None and key in records:
            records[key] = _pack(tw)

    def remove(self, tw: TimeWait) -> None:
        local = tw.four_tuple[0]
        records = self._records.get(local)
        key = self._key(tw.four_tuple)
        if records is None or key is None or records.pop(key, None) is None:
            return
        self._count -= 1
        self._wheels[local].cancel(tw.handle)
        ids = self._remote_ids.get(local)
        if ids is not None:
            ids.release(key)

    def expire(self, now: float) -> list[TimeWait]:
        """Records whose 2MSL ran out by `now` (removed from the table); restarted ones re-arm."""
        done: list[TimeWait] = []
        for local, wheel in self._wheels.items():
            records = self._records[local]
            ids = self._remote_ids.get(local)
            for key in wheel.advance(now):
                raw = records.get(key)
                if raw is None:
                    continue
                tw = _unpack(self._four_tuple(local, key), raw)
                if tw.deadline > now:
                    tw.handle = wheel.schedule(tw.deadline, key)
                    records[key] = _pack(tw)
                else:
                    del records[key]
                    if ids is not None:
                        ids.release(key)
                    self._count -= 1
                    done.append(tw)
        return done

    def next_deadline(self) -> float | None:
        deadlines = [d for w in self._wheels.values() if (d := w.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def timers(self) -> int:
        return sum(len(w) for w in self._wheels.values())


def _pack(tw: TimeWait) -> bytes:
    ts = tw.ts_recent
    return _RECORD.pack(tw.snd_nxt, tw.rcv_nxt, ts or 0, tw.ts_offset, tw.window, _TS_OK if ts is not None else 0,
                        tw.wscale, tw.handle & 0xFFFFFFFFFFFFFFFF, tw.ts_recent_time, tw.entered, tw.deadline,
                        tw.last_oow_ack)


def _unpack(four_tuple: FourTuple, raw: bytes) -> TimeWait:
    (snd_nxt, rcv_nxt, ts, ts_offset, window, flags, wscale, handle, ts_time, entered, deadline,
     last_oow) = _RECORD.unpack(raw)
    tw = TimeWait(four_tuple, snd_nxt, rcv_nxt, window, ts if flags & _TS_OK else None, ts_time, ts_offset,
                  entered, deadline, wscale)
    tw.handle = handle
    tw.last_oow_ack = last_oow
    return tw
