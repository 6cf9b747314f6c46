"""`tcpstack serve`, `tcpstack ss` and `tcpstack stats` run as a user runs them: as subprocesses.

A serve with an echo app (the kernel closes first) and a reply-close app (the stack closes first)
gets N + M connections from kernel sockets in its namespace. Then `ss state time-wait` must count
exactly the N the stack closed first (within 2MSL), `ss -o` show their timewait timers, `ss -s`
and `stats` agree, and the kernel's own `ss` show the M TIME-WAITs on its side. SIGTERM must leave
no namespace and no control socket behind, and the capture and trace must be readable.

Every serve started here is killed and its namespace deleted in a fixture finaliser, whatever the
assertions did.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.serving import (
    STACK_ADDR,
    Serve,
    assert_cleaned_up,
    control_socket,
    kernel_closes_first,
    kernel_connect,
    needs_kernel,
    netns_exists,
    read_to_eof,
    read_trace,
    ss_lines,
    stack_closes_first,
    tcpstack,
    unique_netns,
    wait_for,
)

N_STACK_CLOSES = 3  # connections to reply-close (port 8): the stack closes first -> its TIME-WAIT
M_KERNEL_CLOSES = 2  # connections to echo (port 7): the kernel closes first -> the kernel's TIME-WAIT


def check_fin_exchange(pcap: Path) -> None:
    """For one port-8 connection: the stack's FIN, the kernel's ACK of it, the kernel's FIN, our
    ACK of that, each ACK being the FIN's seq + 1."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    packets = [p for p in rdpcap(str(pcap)) if p.haslayer(TCP)]
    conns = sorted({p[TCP].dport for p in packets if p[TCP].sport == 8})
    assert conns, "no port-8 traffic in the capture"
    kport = conns[0]
    conv = [p[TCP] for p in packets if {p[TCP].sport, p[TCP].dport} == {8, kport}]
    fin = "F"
    i_our_fin = next(i for i, t in enumerate(conv) if t.sport == 8 and fin in str(t.flags))
    our_fin = conv[i_our_fin].seq
    i_their_ack = next(i for i, t in enumerate(conv) if i > i_our_fin and t.dport == 8
                       and "A" in str(t.flags) and t.ack == (our_fin + 1) % 2**32)
    i_their_fin = next(i for i, t in enumerate(conv) if i >= i_their_ack and t.dport == 8 and fin in str(t.flags))
    their_fin = conv[i_their_fin].seq
    assert conv[i_their_fin].ack == (our_fin + 1) % 2**32
    assert any(t.sport == 8 and "A" in str(t.flags) and t.ack == (their_fin + 1) % 2**32
               for t in conv[i_their_fin + 1:]), "the stack never ACKed the kernel's FIN"


@needs_kernel
def test_serve_time_wait_ss_stats_and_shutdown(serve: Callable[..., Serve], tmp_path: Path) -> None:
    name = unique_netns("tw")
    pcap, trace = tmp_path / "run.pcap", tmp_path / "run.jsonl"
    s = serve("--app", "echo", "--port", "7", "--app", "reply-close", "--port", "8", "--msl", "5",
              "--pcap", str(pcap), "--trace", str(trace), netns=name)
    assert s.wait_ready() == f"ready netns={name} addr=198.18.0.2 peer=198.18.0.1"
    control = control_socket(name)
    assert control.is_socket() and control.stat().st_mode & 0o777 == 0o600

    t0 = time.monotonic()
    for i in range(N_STACK_CLOSES):
        stack_closes_first(name, i)
    for i in range(M_KERNEL_CLOSES):
        kernel_closes_first(name, i)

    # The stack's TIME-WAIT: exactly the connections it closed first (2MSL = 10 s, far from over).
    assert wait_for(lambda: len(ss_lines("--netns", name, "state", "time-wait")) == N_STACK_CLOSES + 1)
    lines = ss_lines("--netns", name, "state", "time-wait")
    assert lines[0].split()[:2] == ["Recv-Q", "Send-Q"]  # one header, no State column
    assert all(":8 " in line for line in lines[1:])

    timers = [line for line in ss_lines("--netns", name, "-tano") if "TIME-WAIT" in line]
    assert len(timers) == N_STACK_CLOSES
    for line in timers:
        assert re.search(r" timer:\(timewait,(\d+sec|\d\.\d{3}ms|\d+ms),0\)$", line), line
    listeners = [line.split() for line in ss_lines("--netns", name, "-l") if line.startswith("LISTEN")]
    assert listeners == [["LISTEN", "0", "256", f"{STACK_ADDR}:7", "0.0.0.0:*"],
                         ["LISTEN", "0", "256", f"{STACK_ADDR}:8", "0.0.0.0:*"]]

    summary = "\n".join(ss_lines("--netns", name, "-s"))
    assert f"timewait {N_STACK_CLOSES})" in summary

    rows = json.loads(tcpstack("ss", "--netns", name, "--json", "state", "time-wait").stdout)
    assert [r["state"] for r in rows] == ["TIME-WAIT"] * N_STACK_CLOSES

    stats = tcpstack("stats", "--netns", name, "--json")
    assert stats.returncode == 0, stats.stderr
    counters = json.loads(stats.stdout)
    assert counters["PassiveOpens"] == N_STACK_CLOSES + M_KERNEL_CLOSES
    assert counters["TW"] == N_STACK_CLOSES
    text = tcpstack("stats", "--netns", name).stdout.splitlines()
    tw_line = next(line for line in text if line.startswith("TcpExtTW "))
    assert re.fullmatch(rf"TcpExtTW\s+{N_STACK_CLOSES}\s+\d+\.\d", tw_line)

    # The kernel's side of the echo connections: it closed first, it holds the TIME-WAIT.
    kernel = subprocess.run(["ip", "netns", "exec", name, "ss", "-tanH", "state", "time-wait"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(kernel) == M_KERNEL_CLOSES and all(f"{STACK_ADDR}:7" in line for line in kernel)
    assert time.monotonic() - t0 < 10.0, "checks ran past 2MSL: the TIME-WAIT count proves nothing"

    # A second serve on the same name fails cleanly and leaves the first alone.
    second = tcpstack("serve", "--app", "echo", "--port", "7", "--netns", name)
    assert second.returncode == 1
    assert len(second.stderr.strip().splitlines()) == 1 and "already" in second.stderr, second.stderr
    assert netns_exists(name) and control.is_socket()
    assert len(ss_lines("--netns", name, "state", "time-wait")) == N_STACK_CLOSES + 1

    # SIGTERM: exit 0, namespace and control socket gone, capture and trace complete.
    assert s.stop(signal.SIGTERM) == 0
    assert s.proc.stdout is not None and s.proc.stdout.read() == ""  # the ready line was all of stdout
    assert_cleaned_up(name)
    check_fin_exchange(pcap)
    records = read_trace(trace)
    states = [(r["old"], r["new"]) for r in records if r["kind"] == "state"]
    assert states.count(("FIN-WAIT-2", "TIME-WAIT")) == N_STACK_CLOSES
    assert states.count(("LAST-ACK", "CLOSED")) == M_KERNEL_CLOSES
    assert any(r["kind"] == "segment" for r in records)


@needs_kernel
def test_default_name_and_sigint(serve: Callable[..., Serve]) -> None:
    s = serve("--app", "discard", "--port", "9")
    s.wait_ready()
    assert s.netns and re.fullmatch(r"tcps-\d+-\d+", s.netns)
    with kernel_connect(s.netns, 9) as sock:
        sock.sendall(b"x" * 10000)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    lines = ss_lines("--netns", s.netns, "state", "listening")
    assert len(lines) == 2 and lines[1].split() == ["0", "256", f"{STACK_ADDR}:9", "0.0.0.0:*"]
    assert s.stop(signal.SIGINT) == 130  # Ctrl-C: interrupted, like every command
    assert s.proc.stderr is not None and s.proc.stderr.read() == "tcpstack serve: interrupted\n"
    assert_cleaned_up(s.netns)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--app", "nope", "--port", "7"],
        ["serve", "--app", "echo"],
        ["serve", "--port", "70000", "--app", "echo"],
        ["serve", "--msl", "-1", "--app", "echo", "--port", "7"],
        ["serve", "--addr", "1.2.3", "--app", "echo", "--port", "7"],
        ["serve", "--app", "echo", "--port", "7", "--addr", "10.9.9.9"],
        ["serve", "--app", "echo", "--port", "7", "--app", "discard", "--port", "7"],
        ["ss", "state", "bogus"],
        ["ss", "time-wait"],
        ["ss", "--netns", "bad/name"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    result = tcpstack(*argv)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("argv", [["ss"], ["ss", "-s"], ["stats", "--json"]])
def test_no_stack_running_exit_1(argv: list[str]) -> None:
    result = tcpstack(*argv, "--netns", unique_netns("none"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # As root: nothing serves that name. Otherwise the 0700 directory is the first obstacle.
    assert "no tcpstack" in result.stderr or "run as root" in result.stderr, result.stderr


# ------------------------------------------------------------------------------ the pure formatting
def test_ms_timer_follows_ss_print_ms_timer() -> None:
    from stack.observe.snapshot import format_ms_timer

    cases = {62_000: "1min2sec", 61_500: "1min1sec", 59_900: "59sec", 9_202: "9.202ms", 1_500: "1.500ms",
             200: "200ms", 600_000: "10min", 659_000: "10min", 5_000: "5sec", 0: ""}
    assert {ms: format_ms_timer(ms) for ms in cases} == cases


def test_state_filter_names_and_groups() -> None:
    from stack.observe.snapshot import UnknownState, parse_state_filter
    from stack.tcp.states import State

    assert parse_state_filter([]) is None
    assert parse_state_filter(["time-wait"]) == {State.TIME_WAIT}
    assert parse_state_filter(["TIME-WAIT", "listening"]) == {State.TIME_WAIT, State.LISTEN}
    assert parse_state_filter(["bucket"]) == {State.SYN_RECEIVED, State.TIME_WAIT}
    assert State.LISTEN not in (parse_state_filter(["connected"]) or set())
    assert State.SYN_SENT not in (parse_state_filter(["synchronized"]) or set())
    with pytest.raises(UnknownState):
        parse_state_filter(["bogus"])


def test_table_summary_and_stats_text() -> None:
    from stack.observe.snapshot import (
        SocketRow,
        TimerInfo,
        format_summary,
        format_table,
        row_from_json,
        summarize,
    )
    from stack.tcp.states import State

    rows = [
        SocketRow(State.LISTEN, 0, 256, STACK_ADDR, 7, "0.0.0.0", None, None, False),
        SocketRow(State.LAST_ACK, 0, 1, STACK_ADDR, 7, "198.18.0.1", 40000, TimerInfo("on", 200, 3), True),
        SocketRow(State.TIME_WAIT, 0, 0, STACK_ADDR, 8, "198.18.0.1", 40001, TimerInfo("timewait", 59_900, 0), True),
    ]
    assert [row_from_json(json.loads(json.dumps(r.to_json()))) for r in rows] == rows
    table = format_table(rows, show_timers=True)
    assert table[0].split() == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer", "Address:Port"]
    assert table[1].split() == ["LISTEN", "0", "256", "198.18.0.2:7", "0.0.0.0:*"]
    assert table[2].endswith("198.18.0.1:40000 timer:(on,200ms,3)")
    assert table[3].endswith("timer:(timewait,59sec,0)")
    assert format_table(rows[2:], show_state=False)[1].split()[0] == "0"
    # As iproute2 counts: closed = alloc - (inuse - tw), so the TIME-WAIT record is in it too.
    assert format_summary(summarize(rows))[:2] == ["Total: 1",
                                                   "TCP:   3 (estab 0, closed 1, orphaned 1, timewait 1)"]
