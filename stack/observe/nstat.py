"""`tcpstack stats` as `nstat` prints the kernel's counters: names, history and deltas.

Names. The stack counts under Linux's own names without the section (`ActiveOpens`, `TW`, ...,
see stack/tcp/counters.py); `nstat` prefixes the section they come from in /proc/net/snmp and
/proc/net/netstat. `nstat_view` does the same:

* `Tcp...`     the TCP MIB (RFC 4022) that Linux keeps in /proc/net/snmp: TcpActiveOpens,
               TcpPassiveOpens, TcpAttemptFails, TcpEstabResets, TcpCurrEstab, TcpInSegs, TcpOutSegs,
               TcpRetransSegs, TcpInErrs, TcpOutRsts, TcpInCsumErrors. TcpInErrs counts what Linux
               counts there, TCP-level errors only (short header, bad data offset or options, bad
               checksum); errors of the IP header are Ip counters, as in Linux.
* `TcpExt...`  Linux's TCP extensions, where the stack counts the same event: TcpExtTW,
               TcpExtTCPTimeWaitOverflow, TcpExtListenOverflows, ... (TCPKeepAliveProbes is Linux's
               TcpExtTCPKeepAlive, TCPZeroWindowProbes its TcpExtTCPWinProbe).
* `Ip...`      drops of the IP layer, made from the wire reasons: IpInHdrErrors (truncated,
               not IPv4, bad IHL, bad header checksum, bad total length), IpInUnknownProtos (not TCP),
               IpInDiscards (fragments: the stack does not reassemble).
* `TcpStack...` what only tcpstack counts, under a section of its own so that no one looks for it
               in the kernel: TcpStackTimeWait (records now), TcpStackTCPTimeWaitReopen,
               TcpStackTCPFinTimeout, TcpStackTCPRcvNoListener, TcpStackInternalErrors, the fault
               engine's TcpStackFaultDrop ..., and one TcpStackInMalformed<Reason> per wire reason.

* `Icmp...`, `IcmpMsg...`, `Icmp6...`  ICMP and ICMPv6 (stack.tcp.icmp), counted under Linux's full
               names already (IcmpInEchos, IcmpOutEchoReps, IcmpMsgInType8, Icmp6InPktTooBigs, ...),
               printed as they are, where nstat prints them: Icmp and IcmpMsg after Ip, Icmp6 last.
               TcpExtOutOfWindowIcmps counts errors whose quoted SEQ was not in flight (RFC 5927).

History, as nstat keeps it: each call prints the increase since the previous call and stores the
values it saw; the first call, or one after the stack restarted, prints the values since the
stack started. `-a` prints absolute values, `-z` zeros too, `-s` leaves the history alone, `-r`
starts it over. The history lives in `$TCPSTACK_NSTAT_HISTORY` if set (nstat: NSTAT_HISTORY),
else beside the stack's control socket, one file per user.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stack.tcp.counters import MALFORMED_PREFIX
from stack.wire.reasons import Reason

HISTORY_ENV = "TCPSTACK_NSTAT_HISTORY"
SOURCE = "tcpstack"  # the header line, as nstat's "#kernel"

# RFC 4022's TCP MIB objects, as Linux's /proc/net/snmp "Tcp:" line names them.
TCP_MIB = ("ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs",
           "RetransSegs", "InErrs", "OutRsts", "InCsumErrors")
# Counters of Linux's TcpExt section that the stack counts for the same event, by the stack's name.
LINUX_TCPEXT = {
    "SyncookiesSent": "SyncookiesSent", "SyncookiesRecv": "SyncookiesRecv", "SyncookiesFailed": "SyncookiesFailed",
    "TW": "TW", "TWRecycled": "TWRecycled", "TWKilled": "TWKilled", "PAWSEstab": "PAWSEstab",
    "DelayedACKs": "DelayedACKs", "ListenOverflows": "ListenOverflows", "ListenDrops": "ListenDrops",
    "TCPFastRetrans": "TCPFastRetrans", "TCPTimeouts": "TCPTimeouts", "TCPAbortOnData": "TCPAbortOnData",
    "TCPAbortOnClose": "TCPAbortOnClose", "TCPAbortOnTimeout": "TCPAbortOnTimeout",
    "TCPAbortOnLinger": "TCPAbortOnLinger", "TCPTimeWaitOverflow": "TCPTimeWaitOverflow",
    "TCPOFOQueue": "TCPOFOQueue", "TCPChallengeACK": "TCPChallengeACK", "TCPSYNChallenge": "TCPSYNChallenge",
    "TCPSynRetrans": "TCPSynRetrans", "TCPACKSkippedChallenge": "TCPACKSkippedChallenge",
    "TCPKeepAliveProbes": "TCPKeepAlive", "TCPZeroWindowProbes": "TCPWinProbe",
    "OutOfWindowIcmps": "OutOfWindowIcmps",
}
ICMP_PREFIXES = ("Icmp6", "IcmpMsg", "Icmp")  # the stack's ICMP counters carry their section already
# Wire reasons that Linux counts in the IP MIB rather than in TcpInErrs.
IP_REASONS: dict[str, str] = {
    Reason.TRUNCATED: "IpInHdrErrors",
    Reason.NOT_IPV4: "IpInHdrErrors",
    Reason.BAD_IHL: "IpInHdrErrors",
    Reason.BAD_IP_CHECKSUM: "IpInHdrErrors",
    Reason.BAD_TOTAL_LENGTH: "IpInHdrErrors",
    Reason.NOT_TCP: "IpInUnknownProtos",
    Reason.FRAGMENT: "IpInDiscards",
    # IPv6's header errors are summed with IPv4's (Linux keeps them apart, as Ip6InHdrErrors and
    # Ip6InTruncatedPkts, in a section of their own).
    Reason.BAD_PAYLOAD_LENGTH: "IpInHdrErrors",
    Reason.EXT_HEADER_OVERRUN: "IpInHdrErrors",
    Reason.EXT_HEADER_LOOP: "IpInHdrErrors",
    Reason.HOP_BY_HOP_NOT_FIRST: "IpInHdrErrors",
}
IP_COUNTERS = ("IpInHdrErrors", "IpInUnknownProtos", "IpInDiscards")


def _camel(reason: str) -> str:
    return "".join(part.capitalize() for part in reason.split("_"))


def nstat_name(raw: str) -> str:
    """The name `tcpstack stats` prints for one of the stack's own counter names."""
    if raw in TCP_MIB:
        return "Tcp" + raw
    if raw in LINUX_TCPEXT:
        return "TcpExt" + LINUX_TCPEXT[raw]
    if raw.startswith(ICMP_PREFIXES):
        return raw
    if raw.startswith(MALFORMED_PREFIX):
        return "TcpStackInMalformed" + _camel(raw[len(MALFORMED_PREFIX):])
    return "TcpStack" + raw


def nstat_view(raw: Mapping[str, int]) -> dict[str, int]:
    """The stack's counters under nstat's names, in nstat's order (Ip, Icmp, IcmpMsg, Tcp, TcpExt,
    Icmp6; then ours). Every counter of `raw` appears (zeros included); the Ip counters are sums of
    wire reasons."""
    ip = dict.fromkeys(IP_COUNTERS, 0)
    ip_errors = 0
    for reason, name in IP_REASONS.items():
        value = raw.get(MALFORMED_PREFIX + reason, 0)
        ip[name] += value
        ip_errors += value
    tcp: dict[str, int] = {}
    ext: dict[str, int] = {}
    own: dict[str, int] = {}
    icmp: dict[str, int] = {}
    icmp_msg: dict[str, int] = {}
    icmp6: dict[str, int] = {}
    for name, value in raw.items():
        if name == "InErrs":
            value = max(0, value - ip_errors)  # TcpInErrs: TCP-level errors, as Linux counts them
        shown = nstat_name(name)
        if name.startswith("Icmp6"):
            icmp6[shown] = value
        elif name.startswith("IcmpMsg"):
            icmp_msg[shown] = value
        elif name.startswith("Icmp"):
            icmp[shown] = value
        else:
            (tcp if name in TCP_MIB else ext if name in LINUX_TCPEXT else own)[shown] = value
    tcp = {"Tcp" + n: tcp["Tcp" + n] for n in TCP_MIB if "Tcp" + n in tcp}
    return {**ip, **icmp, **dict(sorted(icmp_msg.items())), **tcp, **ext, **icmp6, **own}


def all_raw_names(raw: Iterable[str], faults: Iterable[str] = ()) -> list[str]:
    """Every counter name a stack may report, known before it counts anything (a CSV header):
    the names in `raw`, one malformed counter per wire reason, and the fault counters given."""
    names = list(dict.fromkeys([*raw, *(MALFORMED_PREFIX + r.value for r in Reason), *faults]))
    return names


# ------------------------------------------------------------------------------------------ history
@dataclass(frozen=True, slots=True)
class History:
    """The values a previous call saw, of which stack (`identity`), and when (wall seconds)."""

    identity: str
    time: float
    values: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"identity": self.identity, "time": self.time, "values": self.values}


def history_path(control_path: str) -> str:
    env = os.environ.get(HISTORY_ENV)
    if env:
        return env
    return f"{control_path}.nstat.u{os.getuid()}"


def load_history(path: str, identity: str) -> History | None:
    """The stored history if it is of this stack (a restarted stack's counters start over)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        history = History(str(obj["identity"]), float(obj["time"]),
                          {str(k): int(v) for k, v in obj["values"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return history if history.identity == identity else None


def save_history(path: str, history: History) -> None:
    """Write atomically (a rename), so two calls at once never leave half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(history.to_json(), f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------------ output
@dataclass(frozen=True, slots=True)
class Report:
    """What one call prints: each counter's value (an increase unless absolute) and its rate."""

    values: dict[str, int]
    rates: dict[str, float]


def report(view: Mapping[str, int], previous: Mapping[str, int] | None, elapsed: float | None, *,
           absolute: bool = False) -> Report:
    """Increases since `previous` (None: no history, the values since start), with per-second
    rates over `elapsed` seconds (0.0 when unknown, as nstat prints without its daemon)."""
    values: dict[str, int] = {}
    rates: dict[str, float] = {}
    for name, value in view.items():
        delta = value - previous.get(name, 0) if previous is not None else value
        if delta < 0:  # a counter cannot go down: the history is of something else
            delta = value
        values[name] = value if absolute else delta
        rates[name] = delta / elapsed if elapsed else 0.0
    return Report(values, rates)


def select(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """nstat's name patterns (shell globs, any matches); no pattern selects everything."""
    if not patterns:
        return list(names)
    compiled = [re.compile(fnmatch.translate(p)) for p in patterns]
    return [n for n in names if any(c.match(n) for c in compiled)]


def format_report(rep: Report, *, zeros: bool = False, patterns: Sequence[str] = (),
                  source: str = SOURCE) -> list[str]:
    """nstat's text: a `#source` line, then `NAME VALUE RATE` (widths 32, 16, 6.1f), zeros hidden
    unless `zeros`."""
    lines = [f"#{source}"]
    for name in select(rep.values, patterns):
        value = rep.values[name]
        if value or zeros:
            lines.append(f"{name:<32}{value:<16}{rep.rates.get(name, 0.0):6.1f}")
    return lines


def parse_report(lines: Iterable[str]) -> dict[str, int]:
    """The NAME -> VALUE of nstat-shaped text (ours or the kernel's): '#' lines are skipped."""
    out: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            out[parts[0]] = int(parts[1])
    return out
