"""What `tcpstack ss` and `tcpstack stats` print, checked against iproute2's own rules and output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stack.observe import nstat
from stack.observe.snapshot import (
    SS_CONN,
    SocketRow,
    TimerInfo,
    format_details,
    format_info,
    format_table,
    shown_states,
    summarize,
)
from stack.observe.ssfilter import SsFilterError, parse
from stack.tcp.counters import Counters
from stack.tcp.states import State

ME, PEER = "198.18.0.2", "198.18.0.1"
INFO = {"ts": True, "sack": True, "cc": "newreno", "wscale": [7, 7], "rto_ms": 204.0, "backoff": 0,
        "rtt_ms": 0.5, "rttvar_ms": 0.25, "mss": 1448, "cwnd": 10, "ssthresh": None, "bytes_sent": 1000,
        "bytes_retrans": 0, "bytes_acked": 1001, "bytes_received": 1000, "send_bps": 231_680_000.0,
        "unacked": 0, "retrans": [0, 2]}
ROWS = [
    SocketRow(State.LISTEN, 0, 256, ME, 7, "0.0.0.0", None, None, False),
    SocketRow(State.LISTEN, 0, 256, ME, 8, "0.0.0.0", None, None, False),
    SocketRow(State.ESTABLISHED, 0, 0, ME, 7, PEER, 40000, None, False, 0x1F, 0, INFO),
    SocketRow(State.CLOSE_WAIT, 0, 0, ME, 7, PEER, 40001, None, False, 0x20, 1, INFO),
    SocketRow(State.FIN_WAIT_2, 0, 0, ME, 8, PEER, 40002, TimerInfo("timewait", 50_000, 0), True, 0x21, 2, INFO),
    SocketRow(State.TIME_WAIT, 0, 0, ME, 8, PEER, 40003, TimerInfo("timewait", 59_000, 0), True, None, 3),
    SocketRow(State.TIME_WAIT, 0, 0, ME, 8, "10.9.9.9", 40004, TimerInfo("timewait", 58_000, 0), True, None, 3),
]


def select(*words: str) -> list[int]:
    flt = parse(list(words))
    states = shown_states(flt.states, flt.excluded, all_states=True)
    return [r.peer_port or 0 for r in ROWS if r.state in states and (flt.predicate is None or flt.predicate(r))]


@pytest.mark.parametrize(("words", "expected"), [
    (("sport", "=", ":8"), [0, 40002, 40003, 40004]),
    (("sport", ":8"), [0, 40002, 40003, 40004]),
    (("sport", "==", "8"), [0, 40002, 40003, 40004]),
    (("dport", "=", ":40001"), [40001]),
    (("dport", "!=", ":40001"), [40000, 40002, 40003, 40004]),  # listeners have no peer port
    (("dport", "ge", ":40003"), [40003, 40004]),
    (("dst", "198.18.0.1"), [40000, 40001, 40002, 40003]),
    (("dst", "198.18.0.0/24"), [40000, 40001, 40002, 40003]),
    (("dst", "198.18.0.1:40002"), [40002]),
    (("dst", ":40004"), [40004]),
    (("src", "198.18.0.2:7"), [0, 40000, 40001]),
    (("src", "10.0.0.0/8"), []),
    (("not", "sport", "=", ":8"), [0, 40000, 40001]),
    (("(", "dport", "=", ":40000", "or", "dport", "=", ":40004", ")", "and", "sport", "=", ":8"), [40004]),
    (("sport = :7 || dport = :40004",), [0, 40000, 40001, 40004]),
    (("state", "time-wait", "dst", "198.18.0.1"), [40003]),
    (("state", "connected", "exclude", "time-wait"), [40000, 40001, 40002]),
])
def test_filter_expressions(words: tuple[str, ...], expected: list[int]) -> None:
    assert select(*words) == expected


@pytest.mark.parametrize("words", [("sport", "=", ":99999"), ("dst", "1.2.3"), ("bogus",), ("(", "sport", ":8"),
                                   ("sport", "="), ("state",), ("src", "198.18.0.2", ")")])
def test_bad_filters_are_one_clear_error(words: tuple[str, ...]) -> None:
    with pytest.raises(SsFilterError) as err:
        select(*words)
    assert "\n" not in str(err.value)


def test_service_names_are_ports() -> None:
    assert parse(["dport", "=", ":http"]).predicate is not None
    row = SocketRow(State.ESTABLISHED, 0, 0, ME, 40000, PEER, 80, None, False)
    assert parse(["dport", "=", ":http"]).predicate(row)  # type: ignore[misc]


def test_which_states_by_default_as_ss() -> None:
    # ss shows connected sockets unless told: no listeners, no TIME-WAIT, no SYN-RECV.
    assert shown_states([]) == SS_CONN
    assert State.LISTEN not in SS_CONN and State.TIME_WAIT not in SS_CONN and State.SYN_RECEIVED not in SS_CONN
    assert State.CLOSE_WAIT in SS_CONN and State.FIN_WAIT_2 in SS_CONN
    assert shown_states([], all_states=True) == frozenset(State)
    assert shown_states([], listening=True) == {State.LISTEN, State.CLOSED}
    assert shown_states(["time-wait"], all_states=True) == {State.TIME_WAIT}  # state X wins
    assert shown_states(["all"], ["time-wait", "listening"]) == frozenset(State) - {State.TIME_WAIT, State.LISTEN}


def test_details_and_info_lines_as_ss_prints_them() -> None:
    assert format_details(ROWS[2]) == " ino:0 sk:1f <->"
    assert format_details(ROWS[3]) == " ino:0 sk:20 -->"  # the peer's FIN: nothing more to receive
    assert format_details(ROWS[4]) == " ino:0 sk:21 <--"  # our FIN: nothing more to send
    assert format_details(ROWS[0]) == " ino:0"
    line = format_info(INFO)
    assert line == ("newreno wscale:7,7 rto:204 rtt:0.5/0.25 mss:1448 cwnd:10 bytes_sent:1000 bytes_acked:1001 "
                    "bytes_received:1000 send 231.7Mbps retrans:0/2")
    assert format_info(INFO, show_options=True, numeric=True).startswith("ts sack newreno ")
    assert "send 231680000bps" in format_info(INFO, numeric=True)
    table = format_table(ROWS[2:3], show_timers=True, show_details=True, show_info=True)
    assert table[1].endswith(f"{PEER}:40000 ino:0 sk:1f <->")
    assert table[2] == "\t ts sack " + line  # with -o, as ss does: on its own line after a tab
    assert format_table(ROWS[2:3], header=False)[0].startswith("ESTAB")


def test_summary_counts_as_iproute2_does() -> None:
    s = summarize(ROWS)
    # sockets held by the application: 2 listeners + 2 connections not orphaned
    assert (s.sockets, s.alloc, s.inuse, s.estab, s.orphaned, s.timewait) == (4, 5, 5, 2, 1, 2)
    assert s.total == 7 and s.closed == 2  # alloc - (inuse - tw): the TIME-WAIT records


# ------------------------------------------------------------------------------------------ nstat
def test_nstat_names_and_sections() -> None:
    raw = dict(Counters())
    raw.update({"ActiveOpens": 2, "TCPTimeWaitOverflow": 3, "InErrs": 5, "InMalformed.bad_ip_checksum": 2,
                "InMalformed.not_tcp": 1, "InMalformed.bad_tcp_checksum": 2, "InCsumErrors": 2,
                "TCPTimeWaitReopen": 4, "CurrEstab": 1, "TimeWait": 9, "FaultDrop": 6, "TCPKeepAliveProbes": 7})
    view = nstat.nstat_view(raw)
    assert view["TcpActiveOpens"] == 2 and view["TcpExtTCPTimeWaitOverflow"] == 3
    assert view["IpInHdrErrors"] == 2 and view["IpInUnknownProtos"] == 1 and view["IpInDiscards"] == 0
    assert view["TcpInErrs"] == 2 and view["TcpInCsumErrors"] == 2  # TCP-level only, as Linux counts it
    assert view["TcpExtTCPKeepAlive"] == 7 and view["TcpCurrEstab"] == 1
    assert view["TcpStackTCPTimeWaitReopen"] == 4 and view["TcpStackTimeWait"] == 9
    assert view["TcpStackFaultDrop"] == 6 and view["TcpStackInMalformedBadIpChecksum"] == 2
    assert view["IcmpInEchos"] == 0 and view["Icmp6InPktTooBigs"] == 0  # Linux's names, as they are
    assert view["TcpExtOutOfWindowIcmps"] == 0
    names = list(view)
    assert names.index("IpInHdrErrors") < names.index("IcmpInMsgs") < names.index("TcpActiveOpens") \
        < names.index("TcpExtTW") < names.index("Icmp6InMsgs") < names.index("TcpStackTimeWait")
    assert len(view) == len(raw) + 3  # every counter once, plus the three Ip sums


def test_increases_since_the_last_call_and_absolute_values() -> None:
    first = {"TcpActiveOpens": 5, "TcpExtTW": 2, "TcpOutRsts": 0}
    rep = nstat.report(first, None, None)
    assert rep.values == first  # no history: since the start
    later = {"TcpActiveOpens": 8, "TcpExtTW": 2, "TcpOutRsts": 1}
    rep = nstat.report(later, first, 2.0)
    assert rep.values == {"TcpActiveOpens": 3, "TcpExtTW": 0, "TcpOutRsts": 1}
    assert rep.rates["TcpActiveOpens"] == 1.5
    assert nstat.report(later, first, 2.0, absolute=True).values == later
    assert nstat.report({"TcpActiveOpens": 1}, {"TcpActiveOpens": 9}, 1.0).values == {"TcpActiveOpens": 1}
    lines = nstat.format_report(rep)
    assert lines == ["#tcpstack", f"{'TcpActiveOpens':<32}{3:<16}{1.5:6.1f}", f"{'TcpOutRsts':<32}{1:<16}{0.5:6.1f}"]
    assert len(nstat.format_report(rep, zeros=True)) == 4
    assert nstat.format_report(rep, patterns=["TcpExt*"], zeros=True)[1:] == [f"{'TcpExtTW':<32}{0:<16}{0.0:6.1f}"]


def test_history_belongs_to_one_stack(tmp_path: Path) -> None:
    path = str(tmp_path / "hist")
    nstat.save_history(path, nstat.History("123:ns:1.5", 10.0, {"TcpActiveOpens": 4}))
    got = nstat.load_history(path, "123:ns:1.5")
    assert got is not None and got.values == {"TcpActiveOpens": 4} and got.time == 10.0
    assert nstat.load_history(path, "124:ns:9.0") is None  # another run of the stack: start over
    Path(path).write_text("{not json")
    assert nstat.load_history(path, "123:ns:1.5") is None


@pytest.mark.skipif(shutil.which("nstat") is None, reason="iproute2's nstat is not installed")
def test_lines_have_the_columns_of_the_kernels_nstat() -> None:
    kernel = subprocess.run(["nstat", "-asz", "TcpActiveOpens"], capture_output=True, text=True, check=True)
    theirs = kernel.stdout.splitlines()
    ours = nstat.format_report(nstat.report({"TcpActiveOpens": 115}, None, None))
    assert theirs[0] == "#kernel" and ours[0].startswith("#")
    theirs_line, ours_line = theirs[1], ours[1]
    # Same columns: the value starts at 32, the rate ends the line at the same width.
    assert theirs_line.index(theirs_line.split()[1]) == ours_line.index("115") == 32
    assert len(theirs_line) - len(theirs_line.split()[1]) == len(ours_line) - len("115")
    assert nstat.parse_report(theirs)["TcpActiveOpens"] >= 0 and nstat.parse_report(ours) == {"TcpActiveOpens": 115}


ME6, PEER6 = "2001:2::2", "2001:2::1"
ROWS6 = [
    SocketRow(State.ESTABLISHED, 0, 0, ME6, 7, PEER6, 41000, None, False, 0x30, 0, INFO),
    SocketRow(State.TIME_WAIT, 0, 0, ME6, 8, "2001:2:0:9::5", 41001, TimerInfo("timewait", 1_000, 0), True, None, 3),
]


@pytest.mark.parametrize(("words", "expected"), [
    (("dst", "2001:2::1"), [41000]),
    (("dst", "[2001:2::1]"), [41000]),
    (("dst", "[2001:2::1]:41000"), [41000]),
    (("dst", "[2001:2::1]:41001"), []),
    (("dst", "2001:2::/48"), [41000, 41001]),
    (("dst", "2001:2::/64"), [41000]),
    (("src", "[2001:2::2]:8"), [41001]),
    (("dst", "198.18.0.0/15"), [40000, 40001, 40002, 40003]),  # the other family never matches
    (("dst", "::/0"), [41000, 41001]),
])
def test_filters_of_ipv6_endpoints(words: tuple[str, ...], expected: list[int]) -> None:
    flt = parse(list(words))
    assert flt.predicate is not None
    assert [r.peer_port for r in ROWS + ROWS6 if r.peer_port and flt.predicate(r)] == expected


def test_ipv6_endpoints_print_as_iproute2_and_count_in_the_ipv6_column() -> None:
    assert ROWS6[0].local == "[2001:2::2]:7" and ROWS6[0].peer == "[2001:2::1]:41000"
    table = format_table(ROWS6)
    assert table[1].split()[3:] == ["[2001:2::2]:7", "[2001:2::1]:41000"]
    summary = summarize(ROWS + ROWS6)
    assert (summary.inuse, summary.inuse6) == (6, 1)  # TIME-WAIT is not "in use" in sockstat's sense
    assert summary.to_json()["inuse6"] == 1
    from stack.observe.snapshot import format_summary

    lines = format_summary(summary)
    assert lines[4].split() == ["TCP", "6", "5", "1"]


@pytest.mark.parametrize("word", ["[2001:2::1", "[2001:2::1]x", "2001:2::zz", "[::1]:99999"])
def test_bad_ipv6_filters_are_one_clear_error(word: str) -> None:
    with pytest.raises(SsFilterError):
        parse(["dst", word])
