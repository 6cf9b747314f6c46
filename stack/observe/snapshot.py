"""What `tcpstack ss` and `tcpstack stats` show, as pure functions of a `Host` (no I/O, no clock).

`socket_rows(host, now)` turns the host's tables into one `SocketRow` per socket: listeners, live
connections and TIME-WAIT records. Rows travel over the control socket as JSON (`to_json` /
`row_from_json`) and are filtered and rendered on the client, so `now` is the only thing taken
from the running stack: timer expiries are computed where the clock is.

The text forms copy iproute2's `ss` (misc/ss.c), because that is what people already read:

* the table of `ss -tan`: State, Recv-Q, Send-Q, Local Address:Port, Peer Address:Port, with the
  address right-aligned against the ':' and the port left-aligned; when the states shown are
  exactly one (`ss state time-wait`), the State column is left out, as ss does;
* which sockets by default: ss's "connected" set (every state but LISTEN, SYN-RECV, TIME-WAIT and
  CLOSED) unless `-a` (all) or `-l` (listening) or `state X` say otherwise;
* `-o` timers: `timer:(NAME,DURATION,RETRANS)`, NAME as the kernel's inet_diag reports it (`on` for
  retransmission, `persist` for zero-window probes, `keepalive`, `timewait`), DURATION by ss's
  `print_ms_timer` rules (`1min2sec`, `59sec`, `1.500ms`, `200ms`);
* `-e` details: ` ino:0 sk:ID <->` (no inode: the stack's sockets are not files; sk is the
  connection's number; the arrows say which directions are still open, as ss prints the shutdown
  mask); `-i` the TCP info line: `ts sack newreno wscale:7,7 rto:204 rtt:0.5/0.25 mss:1448
  cwnd:10 bytes_sent:.. bytes_retrans:.. bytes_acked:.. bytes_received:.. send 1.2Gbps unacked:1
  retrans:0/2`, each shown when not zero, as ss shows them (cwnd, ssthresh and unacked in
  segments; ts and sack with -o only; retrans:R/T is R timeouts in a row / T segments in all);
* state filter names and groups of `ss state ...` (`scan_state`);
* `ss -s`, counted as iproute2 counts /proc/net/sockstat (see `summarize`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stack.tcp.handle import TcpInfo
from stack.tcp.host import Host
from stack.tcp.states import State
from stack.wire.address import endpoint

S = State

# ss's filter name of each state (iproute2 `sstate_namel`); CLOSED is ss's "unconnected".
SS_FILTER_NAMES: dict[State, str] = {
    S.ESTABLISHED: "established",
    S.SYN_SENT: "syn-sent",
    S.SYN_RECEIVED: "syn-recv",
    S.FIN_WAIT_1: "fin-wait-1",
    S.FIN_WAIT_2: "fin-wait-2",
    S.TIME_WAIT: "time-wait",
    S.CLOSED: "unconnected",
    S.CLOSE_WAIT: "close-wait",
    S.LAST_ACK: "last-ack",
    S.LISTEN: "listening",
    S.CLOSING: "closing",
}

_ALL = frozenset(State)
# ss's groups (iproute2 `scan_state`), spelled as sets of states.
SS_GROUPS: dict[str, frozenset[State]] = {
    "all": _ALL,
    "connected": _ALL - {S.CLOSED, S.LISTEN},
    "synchronized": _ALL - {S.CLOSED, S.LISTEN, S.SYN_SENT},
    "bucket": frozenset({S.SYN_RECEIVED, S.TIME_WAIT}),
    "big": _ALL - {S.SYN_RECEIVED, S.TIME_WAIT},
}
# Aliases ss accepts besides the names above.
_SS_ALIASES: dict[str, frozenset[State]] = {
    "close": frozenset({S.CLOSED}),
    "closed": frozenset({S.CLOSED}),
    "syn-rcv": frozenset({S.SYN_RECEIVED}),
}

STATE_FILTER_CHOICES: tuple[str, ...] = (*(SS_FILTER_NAMES[s] for s in State), *SS_GROUPS)

# Linux's CurrEstab counts these (tcp_set_state increments TCP_MIB_CURRESTAB on entering
# ESTABLISHED and decrements when leaving ESTABLISHED or CLOSE-WAIT); `ss -s` prints it as "estab".
_CURR_ESTAB = frozenset({S.ESTABLISHED, S.CLOSE_WAIT})


TCP_TIMEWAIT_LEN_MS = 60_000  # Linux's TCP_TIMEWAIT_LEN, which decides how an orphan FIN-WAIT-2 shows


class UnknownState(ValueError):
    """A state name `ss` would not accept."""


@dataclass(frozen=True, slots=True)
class TimerInfo:
    """One `-o` timer as inet_diag reports it: idiag_timer's name, expiry in ms, retransmits/probes."""

    name: str
    expires_ms: int
    retrans: int


@dataclass(frozen=True, slots=True)
class SocketRow:
    state: State
    recv_q: int
    send_q: int
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int | None  # None for a listener ("*")
    timer: TimerInfo | None
    orphan: bool
    sk: int | None = None  # the connection's number (`ss -e` sk:); None for listeners and TIME-WAIT
    shutdown: int = 0  # ss's shutdown mask: 1 = receiving done (peer's FIN), 2 = sending done (our FIN)
    info: dict[str, Any] | None = None  # `ss -i`'s TCP info (see tcp_info_json); connections only

    @property
    def local(self) -> str:
        return endpoint(self.local_addr, self.local_port)

    @property
    def peer(self) -> str:
        return endpoint(self.peer_addr, "*" if self.peer_port is None else self.peer_port)

    def to_json(self) -> dict[str, Any]:
        timer = None
        if self.timer is not None:
            timer = {"name": self.timer.name, "expires_ms": self.timer.expires_ms, "retrans": self.timer.retrans}
        return {
            "state": self.state.ss_name,
            "tcp_state": self.state.value,
            "recv_q": self.recv_q,
            "send_q": self.send_q,
            "local": self.local,
            "peer": self.peer,
            "local_addr": self.local_addr,
            "local_port": self.local_port,
            "peer_addr": self.peer_addr,
            "peer_port": self.peer_port,
            "timer": timer,
            "orphan": self.orphan,
            "sk": self.sk,
            "shutdown": self.shutdown,
            "info": self.info,
        }


def row_from_json(obj: Mapping[str, Any]) -> SocketRow:
    """The inverse of `SocketRow.to_json`; ValueError (or KeyError/TypeError) on a malformed object."""
    timer_obj = obj["timer"]
    timer = None
    if timer_obj is not None:
        timer = TimerInfo(str(timer_obj["name"]), int(timer_obj["expires_ms"]), int(timer_obj["retrans"]))
    peer_port = obj["peer_port"]
    return SocketRow(
        state=State(obj["tcp_state"]),
        recv_q=int(obj["recv_q"]),
        send_q=int(obj["send_q"]),
        local_addr=str(obj["local_addr"]),
        local_port=int(obj["local_port"]),
        peer_addr=str(obj["peer_addr"]),
        peer_port=None if peer_port is None else int(peer_port),
        timer=timer,
        orphan=bool(obj["orphan"]),
        sk=None if obj.get("sk") is None else int(obj["sk"]),
        shutdown=int(obj.get("shutdown", 0)),
        info=dict(obj["info"]) if obj.get("info") is not None else None,
    )


# ---------------------------------------------------------------------------------- host -> rows
def _expires_ms(deadline: float, now: float) -> int:
    # The kernel reports jiffies_delta_to_msecs(expires - now): truncated, never negative.
    return max(0, int((deadline - now) * 1000.0))


def connection_timer(info: TcpInfo, now: float) -> TimerInfo | None:
    """The timer `ss -o` would show, picked in the kernel's order (inet_diag's inet_sk_diag_fill):
    retransmission first, then the zero-window probe, then the socket (keepalive) timer. The
    delayed-ACK timer is never shown, as in Linux.

    The orphan FIN-WAIT-2 timeout is named as Linux names it: tcp_close() turns an orphan in
    FIN-WAIT-2 into a TIME-WAIT mini-socket (`timewait`) when at most TCP_TIMEWAIT_LEN (60 s) is
    left, and runs the longer rest on the keepalive timer. The time shown is ours, in one piece."""
    timers = info.timers
    deadline = timers.get("RTX")
    if deadline is not None:
        return TimerInfo("on", _expires_ms(deadline, now), info.retransmits)
    deadline = timers.get("PERSIST")
    if deadline is not None:
        return TimerInfo("persist", _expires_ms(deadline, now), 0)
    fin_wait_2 = timers.get("FIN_WAIT_2")
    if fin_wait_2 is not None:
        ms = _expires_ms(fin_wait_2, now)
        return TimerInfo("timewait" if ms <= TCP_TIMEWAIT_LEN_MS else "keepalive", ms, 0)
    deadline = timers.get("KEEPALIVE")
    if deadline is not None:
        return TimerInfo("keepalive", _expires_ms(deadline, now), info.keepalive_probes)
    return None


def socket_rows(host: Host, now: float) -> list[SocketRow]:
    """Every socket of the host: listeners (by port), then connections and TIME-WAIT records in
    (local port, peer address, peer port) order, so repeated calls list them stably."""
    rows: list[SocketRow] = []
    local = host.addresses[0]
    for port in sorted(host.listeners):
        listener = host.listeners[port]
        # A listener's Send-Q is its backlog and Recv-Q its accept queue, as Linux reports them; the
        # runtime accepts at once, so nothing ever waits in that queue.
        rows.append(SocketRow(S.LISTEN, 0, listener.backlog, local, port, "0.0.0.0", None, None, False))
    conns: list[SocketRow] = []
    for handle in host.handles():
        la, lp, ra, rp = handle.four_tuple
        info = handle.info()
        shutdown = (1 if handle.eof else 0) | (2 if info.state in _FIN_SENT else 0)
        conns.append(SocketRow(info.state, info.recv_queue, info.send_queue, la, lp, ra, rp,
                               connection_timer(info, now), handle.orphan, info.conn_id, shutdown,
                               tcp_info_json(info)))
    for tw in host.time_wait.values():
        la, lp, ra, rp = tw.four_tuple
        timer = TimerInfo("timewait", _expires_ms(tw.deadline, now), 0)
        conns.append(SocketRow(S.TIME_WAIT, 0, 0, la, lp, ra, rp, timer, True, None, 3))
    conns.sort(key=_row_order)
    rows.extend(conns)
    return rows


_FIN_SENT = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT})
_INFINITE_SSTHRESH = 1 << 30  # Linux leaves ssthresh out while it is "infinite"


def tcp_info_json(info: TcpInfo) -> dict[str, Any]:
    """The numbers `ss -i` prints, in its units: ms for times, segments for windows."""
    mss = max(1, info.snd_mss)
    srtt = info.rtt
    return {
        "ts": info.timestamps,
        "sack": info.sack,
        "cc": info.congestion_control,
        "wscale": [info.snd_wscale, info.rcv_wscale] if info.snd_wscale or info.rcv_wscale else None,
        "rto_ms": round(info.rto * 1000.0, 3),
        "backoff": info.backoff,
        "rtt_ms": None if srtt is None else round(srtt * 1000.0, 3),
        "rttvar_ms": round(info.rttvar * 1000.0, 3),
        "mss": info.snd_mss,
        "cwnd": -(-info.cwnd // mss),
        "ssthresh": info.ssthresh // mss if info.ssthresh < _INFINITE_SSTHRESH else None,
        "bytes_sent": info.bytes_sent,
        "bytes_retrans": info.bytes_retrans,
        "bytes_acked": info.bytes_acked,
        "bytes_received": info.bytes_received,
        "send_bps": info.cwnd * 8 / srtt if srtt else None,
        "unacked": -(-info.unacked // mss),
        "retrans": [info.retransmits, info.total_retrans],
    }


def _row_order(row: SocketRow) -> tuple[int, bytes, int]:
    # IPv4 peers (4 octets) before IPv6 ones (16), each in numeric order.
    addr = row.peer_addr
    try:
        peer = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
    except OSError:
        peer = b""
    return row.local_port, bytes([len(peer)]) + peer, row.peer_port or 0


def host_stats(host: Host, extra: Mapping[str, int] | None = None) -> dict[str, int]:
    """The counters of `tcpstack stats`: `Host.stats()` (nstat names), then driver counters."""
    stats = host.stats()
    if extra:
        for name, value in extra.items():
            stats.setdefault(name, value)
    return stats


# ---------------------------------------------------------------------------------- filtering
def parse_state_filter(names: Sequence[str]) -> frozenset[State] | None:
    """`state A state B ...` -> the states they select (None: no filter). Names are ss's, any case."""
    if not names:
        return None
    selected: set[State] = set()
    by_name = {name: state for state, name in SS_FILTER_NAMES.items()}
    for raw in names:
        name = raw.lower()
        if name in by_name:
            selected.add(by_name[name])
        elif name in SS_GROUPS:
            selected |= SS_GROUPS[name]
        elif name in _SS_ALIASES:
            selected |= _SS_ALIASES[name]
        else:
            raise UnknownState(f"wrong state name: {raw!r} (one of: {', '.join(STATE_FILTER_CHOICES)})")
    return frozenset(selected)


def filter_rows(rows: Iterable[SocketRow], states: frozenset[State] | None) -> list[SocketRow]:
    return [row for row in rows if states is None or row.state in states]


# ss's default: connected sockets, less LISTEN, SYN-RECV, TIME-WAIT and CLOSED (iproute2's SS_CONN).
SS_CONN: frozenset[State] = _ALL - {S.LISTEN, S.CLOSED, S.TIME_WAIT, S.SYN_RECEIVED}


def shown_states(names: Sequence[str], excluded: Sequence[str] = (), *, all_states: bool = False,
                 listening: bool = False) -> frozenset[State]:
    """The states ss shows: `state X` if given, else everything with -a, LISTEN (and unconnected)
    with -l, the connected ones otherwise; less `exclude X`."""
    chosen = parse_state_filter(names)
    if chosen is None:
        chosen = _ALL if all_states else frozenset({S.LISTEN, S.CLOSED}) if listening else SS_CONN
    gone = parse_state_filter(excluded) or frozenset()
    return chosen - gone


# ---------------------------------------------------------------------------------- summary
@dataclass(frozen=True, slots=True)
class Summary:
    """`ss -s`'s numbers, named after /proc/net/sockstat's fields they stand for."""

    sockets: int  # "sockets: used": sockets an application holds
    alloc: int  # TCP "alloc": full sockets (listeners and connections, orphans too; not TIME-WAIT)
    inuse: int  # TCP "inuse": of them, the ones in the lookup tables (all but CLOSED)
    estab: int  # Tcp CurrEstab: ESTABLISHED and CLOSE-WAIT
    orphaned: int  # TCP "orphan": connections no application holds any more
    timewait: int  # TCP "tw": TIME-WAIT records
    inuse6: int = 0  # of `inuse`, the IPv6 ones (/proc/net/sockstat6's TCP6 inuse)

    @property
    def total(self) -> int:
        """The `TCP:` number: alloc + tw."""
        return self.alloc + self.timewait

    @property
    def closed(self) -> int:
        """ss's `closed`: alloc - (inuse - tw), i.e. CLOSED sockets plus TIME-WAIT (ss counts them
        in both, as it does for the kernel)."""
        return self.alloc - (self.inuse - self.timewait)

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "estab": self.estab,
            "closed": self.closed,
            "orphaned": self.orphaned,
            "timewait": self.timewait,
            "sockets": self.sockets,
            "alloc": self.alloc,
            "inuse": self.inuse,
            "inuse6": self.inuse6,
        }


def summarize(rows: Iterable[SocketRow]) -> Summary:
    """The counts of `ss -s`, made as iproute2 makes them from the kernel's /proc/net/sockstat:

    * `Total` is "sockets: used", the sockets applications hold: here listeners and connections
      the application has not closed (an orphan or a TIME-WAIT record belongs to no one);
    * `TCP: N` is alloc + tw: every listener and connection (orphans included) plus the TIME-WAIT
      records;
    * `estab` is CurrEstab (ESTABLISHED + CLOSE-WAIT), `orphaned` the orphans, `timewait` the
      records, and `closed` is alloc - (inuse - tw), inuse being the sockets not CLOSED -- so
      TIME-WAIT records count in `closed` too, exactly as with the kernel;
    * the transport table's TCP line is inuse, split into IP and IPv6 by the local address.
    """
    sockets = alloc = inuse = inuse6 = estab = orphaned = timewait = 0
    for row in rows:
        if row.state is S.TIME_WAIT:
            timewait += 1
            continue
        alloc += 1
        if row.state is not S.CLOSED:
            inuse += 1
            if ":" in row.local_addr:
                inuse6 += 1
        if row.state in _CURR_ESTAB:
            estab += 1
        if row.orphan:
            orphaned += 1
        else:
            sockets += 1
    return Summary(sockets, alloc, inuse, estab, orphaned, timewait, inuse6)


def format_summary(summary: Summary) -> list[str]:
    """`ss -s`'s lines, less the transports tcpstack does not have (RAW, UDP, FRAG). The IP and
    IPv6 columns split the TCP sockets in use by family, as sockstat and sockstat6 do."""
    s = summary
    ip4 = s.inuse - s.inuse6
    return [
        f"Total: {s.sockets}",
        f"TCP:   {s.total} (estab {s.estab}, closed {s.closed}, orphaned {s.orphaned}, timewait {s.timewait})",
        "",
        "Transport Total     IP        IPv6",
        f"TCP\t  {s.inuse:<9d} {ip4:<9d} {s.inuse6:<9d}".rstrip(),
        f"INET\t  {s.inuse:<9d} {ip4:<9d} {s.inuse6:<9d}".rstrip(),
    ]


# ---------------------------------------------------------------------------------- text forms
def format_ms_timer(ms: int) -> str:
    """iproute2's print_ms_timer: minutes, then seconds, then milliseconds, dropping the finer unit
    once the coarser one has two digits (61000 -> '1min1sec', 59900 -> '59sec', 1500 -> '1.500ms',
    200 -> '200ms', 0 -> '')."""
    ms = max(0, ms)
    secs, msecs = divmod(ms, 1000)
    minutes, secs = divmod(secs, 60)
    out = ""
    if minutes:
        msecs = 0
        out += f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        out += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        out += f"{msecs:03d}ms"
    return out


def format_timer(timer: TimerInfo) -> str:
    return f"timer:({timer.name},{format_ms_timer(timer.expires_ms)},{timer.retrans})"


def format_details(row: SocketRow) -> str:
    """`ss -e`: ' ino:0 sk:ID <->' (ss prints uid only when not 0; the stack runs as root)."""
    out = " ino:0"
    if row.sk is not None:
        out += f" sk:{row.sk:x}"
    if row.state is not S.LISTEN:
        out += f" {'-' if row.shutdown & 1 else '<'}-{'-' if row.shutdown & 2 else '>'}"
    return out


def _bw(bps: float, numeric: bool) -> str:
    """iproute2's sprint_bw."""
    if numeric:
        return f"{bps:.0f}"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if bps > scale:
            return f"{bps / scale:.1f}{unit}"
    return f"{bps:g}"


def format_info(info: Mapping[str, Any], *, show_options: bool = False, numeric: bool = False) -> str:
    """`ss -i`'s TCP info line (without its leading tab), fields in ss's order, zeros left out."""
    parts: list[str] = []
    if show_options and info.get("ts"):
        parts.append("ts")
    if show_options and info.get("sack"):
        parts.append("sack")
    parts.append(str(info.get("cc", "")))
    if info.get("wscale"):
        parts.append(f"wscale:{info['wscale'][0]},{info['wscale'][1]}")
    if info.get("rto_ms"):
        parts.append(f"rto:{info['rto_ms']:g}")
    if info.get("backoff"):
        parts.append(f"backoff:{info['backoff']}")
    if info.get("rtt_ms") is not None:
        # Shown once measured, even at 0: timestamps tick in ms, so a local link can measure 0.
        parts.append(f"rtt:{info['rtt_ms']:g}/{info['rttvar_ms']:g}")
    for key in ("mss", "cwnd", "ssthresh", "bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received"):
        if info.get(key):
            parts.append(f"{key}:{info[key]}")
    if info.get("send_bps"):
        parts.append(f"send {_bw(info['send_bps'], numeric)}bps")
    if info.get("unacked"):
        parts.append(f"unacked:{info['unacked']}")
    retrans = info.get("retrans") or [0, 0]
    if retrans[0] or retrans[1]:
        parts.append(f"retrans:{retrans[0]}/{retrans[1]}")
    return " ".join(p for p in parts if p)


def format_table(rows: Sequence[SocketRow], *, show_state: bool = True, show_timers: bool = False,
                 show_details: bool = False, show_info: bool = False, header: bool = True,
                 numeric: bool = False) -> list[str]:
    """The lines of `ss -tan` (one header line, then one line per row; with -i a second, indented
    line per connection, as ss prints it)."""
    headers = {"state": "State", "recv": "Recv-Q", "send": "Send-Q", "laddr": "Local Address", "lport": "Port",
               "raddr": "Peer Address", "rport": "Port"}
    cells = [
        {
            "state": row.state.ss_name,
            "recv": str(row.recv_q),
            "send": str(row.send_q),
            "laddr": f"[{row.local_addr}]" if ":" in row.local_addr else row.local_addr,
            "lport": str(row.local_port),
            "raddr": f"[{row.peer_addr}]" if ":" in row.peer_addr else row.peer_addr,
            "rport": "*" if row.peer_port is None else str(row.peer_port),
        }
        for row in rows
    ]
    width = {key: max([len(title)] + [len(c[key]) for c in cells]) for key, title in headers.items()}

    def line(c: Mapping[str, str]) -> str:
        parts = []
        if show_state:
            parts.append(c["state"].ljust(width["state"]))
        parts.append(c["recv"].ljust(width["recv"]))
        parts.append(c["send"].ljust(width["send"]))
        parts.append(c["laddr"].rjust(width["laddr"]) + ":" + c["lport"].ljust(width["lport"]))
        parts.append(c["raddr"].rjust(width["raddr"]) + ":" + c["rport"].ljust(width["rport"]))
        return " ".join(parts)

    lines = [line(headers).rstrip()] if header else []
    for row, c in zip(rows, cells, strict=True):
        text = line(c)
        if show_timers and row.timer is not None:
            text += " " + format_timer(row.timer)
        if show_details:
            text += format_details(row)
        lines.append(text.rstrip())
        if show_info and row.info is not None:
            lines.append("\t " + format_info(row.info, show_options=show_timers, numeric=numeric))
    return lines
