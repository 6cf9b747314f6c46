"""What `tcpstack ss` and `tcpstack stats` show, as pure functions of a `Host` (no I/O, no clock).

`socket_rows(host, now)` turns the host's tables into one `SocketRow` per socket: listeners, live
connections and TIME-WAIT records. Rows travel over the control socket as JSON (`to_json` /
`row_from_json`) and are filtered and rendered on the client, so `now` is the only thing taken
from the running stack: timer expiries are computed where the clock is.

The text forms copy iproute2's `ss` (misc/ss.c), because that is what people already read:

* the table of `ss -tan`: State, Recv-Q, Send-Q, Local Address:Port, Peer Address:Port, with the
  address right-aligned against the ':' and the port left-aligned; with a state filter the State
  column is left out, as `ss state STATE` does;
* `-o` timers: `timer:(NAME,DURATION,RETRANS)`, NAME as the kernel's inet_diag reports it (`on` for
  retransmission, `persist` for zero-window probes, `keepalive`, `timewait`), DURATION by ss's
  `print_ms_timer` rules (`1min2sec`, `59sec`, `1.500ms`, `200ms`);
* state filter names and groups of `ss state ...` (`scan_state`);
* the `ss -s` summary line `TCP:   N (estab E, closed C, orphaned O, timewait T)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stack.tcp.handle import TcpInfo
from stack.tcp.host import Host
from stack.tcp.states import State

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

    @property
    def local(self) -> str:
        return f"{self.local_addr}:{self.local_port}"

    @property
    def peer(self) -> str:
        return f"{self.peer_addr}:{'*' if self.peer_port is None else self.peer_port}"

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
        conns.append(SocketRow(info.state, info.recv_queue, info.send_queue, la, lp, ra, rp,
                               connection_timer(info, now), handle.orphan))
    for tw in host.time_wait.values():
        la, lp, ra, rp = tw.four_tuple
        timer = TimerInfo("timewait", _expires_ms(tw.deadline, now), 0)
        conns.append(SocketRow(S.TIME_WAIT, 0, 0, la, lp, ra, rp, timer, True))
    conns.sort(key=_row_order)
    rows.extend(conns)
    return rows


def _row_order(row: SocketRow) -> tuple[int, tuple[int, ...], int]:
    try:
        peer = tuple(int(part) for part in row.peer_addr.split("."))
    except ValueError:
        peer = ()
    return row.local_port, peer, row.peer_port or 0


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


# ---------------------------------------------------------------------------------- summary
@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    estab: int
    closed: int
    orphaned: int
    timewait: int
    listening: int

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "estab": self.estab,
            "closed": self.closed,
            "orphaned": self.orphaned,
            "timewait": self.timewait,
            "listening": self.listening,
        }


def summarize(rows: Iterable[SocketRow]) -> Summary:
    """The counts of `ss -s`. `orphaned` counts connections the application has closed that are not
    yet in TIME-WAIT (Linux's tcp_orphan_count); TIME-WAIT records are counted only as `timewait`."""
    total = estab = closed = orphaned = timewait = listening = 0
    for row in rows:
        total += 1
        if row.state in _CURR_ESTAB:
            estab += 1
        elif row.state is S.CLOSED:
            closed += 1
        elif row.state is S.TIME_WAIT:
            timewait += 1
        elif row.state is S.LISTEN:
            listening += 1
        if row.orphan and row.state is not S.TIME_WAIT:
            orphaned += 1
    return Summary(total, estab, closed, orphaned, timewait, listening)


def format_summary(summary: Summary) -> list[str]:
    """`ss -s`'s lines, less the transports tcpstack does not have (RAW, UDP, FRAG, IPv6)."""
    s = summary
    hashed = s.total - s.closed
    return [
        f"Total: {s.total}",
        f"TCP:   {s.total} (estab {s.estab}, closed {s.closed}, orphaned {s.orphaned}, timewait {s.timewait})",
        "",
        "Transport Total     IP        IPv6",
        f"TCP\t  {hashed:<9d} {hashed:<9d} {0:<9d}".rstrip(),
        f"INET\t  {hashed:<9d} {hashed:<9d} {0:<9d}".rstrip(),
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


def format_table(rows: Sequence[SocketRow], *, show_state: bool = True, show_timers: bool = False) -> list[str]:
    """The lines of `ss -tan` (one header line, then one line per row)."""
    headers = {"state": "State", "recv": "Recv-Q", "send": "Send-Q", "laddr": "Local Address", "lport": "Port",
               "raddr": "Peer Address", "rport": "Port"}
    cells = [
        {
            "state": row.state.ss_name,
            "recv": str(row.recv_q),
            "send": str(row.send_q),
            "laddr": row.local_addr,
            "lport": str(row.local_port),
            "raddr": row.peer_addr,
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

    lines = [line(headers).rstrip()]
    for row, c in zip(rows, cells, strict=True):
        text = line(c)
        if show_timers and row.timer is not None:
            text += " " + format_timer(row.timer)
        lines.append(text.rstrip())
    return lines


def format_stats(stats: Mapping[str, int]) -> list[str]:
    """`Name  value` per line, names padded to one column (the shape of `nstat -az`)."""
    if not stats:
        return []
    width = max(len(name) for name in stats) + 2
    return [f"{name.ljust(width)}{value}" for name, value in stats.items()]
