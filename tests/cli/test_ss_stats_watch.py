"""`tcpstack ss` / `tcpstack stats` against a running serve, with iproute2's flags, filters and
nstat's history; `--watch` on a pipe and on a terminal; `serve --stats-log`."""

from __future__ import annotations

import csv
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.serving import (
    REPO,
    STACK_ADDR,
    Serve,
    kernel_connect,
    needs_kernel,
    stack_closes_first,
    tcpstack,
    unique_netns,
)


@pytest.fixture
def running(serve: Callable[..., Serve], tmp_path: Path) -> Iterator[tuple[Serve, list[socket.socket], Path]]:
    """A serve (echo on 7, reply-close on 8) with two open echo connections that moved 1000 bytes
    each way, and two connections the stack closed first (its TIME-WAIT)."""
    log = tmp_path / "stats.csv"
    s = serve("--app", "echo", "--port", "7", "--app", "reply-close", "--port", "8", "--msl", "30",
              "--stats-log", str(log), netns=unique_netns("ss"))
    s.wait_ready()
    assert s.netns is not None
    socks = []
    for _ in range(2):
        sock = kernel_connect(s.netns, 7)
        sock.sendall(b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += sock.recv(65536)
        socks.append(sock)
    for i in range(2):
        stack_closes_first(s.netns, i)
    env_history = tmp_path / "nstat.history"
    os.environ["TCPSTACK_NSTAT_HISTORY"] = str(env_history)
    try:
        yield s, socks, log
    finally:
        os.environ.pop("TCPSTACK_NSTAT_HISTORY", None)
        for sock in socks:
            sock.close()


def ss(s: Serve, *args: str) -> list[str]:
    done = tcpstack("ss", "--netns", s.netns or "", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@needs_kernel
def test_ss_flags_and_filters(running: tuple[Serve, list[socket.socket], Path]) -> None:
    s, socks, _ = running
    kports = sorted(sock.getsockname()[1] for sock in socks)
    default = ss(s)[1:]
    assert len(default) == 2 and all(line.startswith("ESTAB") for line in default)  # as ss: connected only
    everything = ss(s, "-tan")[1:]
    assert {line.split()[0] for line in everything} == {"LISTEN", "ESTAB", "TIME-WAIT"}
    assert len(everything) == 2 + 2 + 2
    assert len(ss(s, "-l")[1:]) == 2
    assert ss(s, "-H", "-a") == everything  # no header
    tw = ss(s, "state", "time-wait", "sport", "=", ":8")
    assert tw[0].split()[:2] == ["Recv-Q", "Send-Q"] and len(tw) == 3  # one state: no State column
    assert [line.split()[-1].rsplit(":", 1)[1] for line in ss(s, "dport", "=", f":{kports[0]}")[1:]] == [
        str(kports[0])]
    assert len(ss(s, "-a", "dst", "198.18.0.1")[1:]) == 4 and len(ss(s, "-a", "src", f"{STACK_ADDR}:8")[1:]) == 3
    assert len(ss(s, "-a", "not", "sport", "=", ":8")[1:]) == 3
    # -e and -i: the details and the TCP info of each connection, as ss prints them.
    lines = ss(s, "-tnei")
    rows, infos = lines[1::2], lines[2::2]
    assert len(rows) == 2 and all(re.search(r" ino:0 sk:[0-9a-f]+ <->$", r) for r in rows)
    for info in infos:
        assert info.startswith("\t ")
        fields = dict(f.split(":", 1) for f in info.split() if ":" in f and not f.startswith("send"))
        assert fields["bytes_sent"] == "1000" and fields["bytes_received"] == "1000"
        assert fields["bytes_acked"] == "1000" and int(fields["mss"]) > 500 and int(fields["cwnd"]) >= 10
        assert re.fullmatch(r"[\d.]+/[\d.]+", fields["rtt"]) and float(fields["rto"]) >= 200
    bad = tcpstack("ss", "--netns", s.netns or "", "sport", "=", ":x y")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@needs_kernel
def test_summary_and_nstat_history(running: tuple[Serve, list[socket.socket], Path]) -> None:
    s, _, _ = running
    summary = ss(s, "-s")
    # 2 listeners + 2 open connections are held by the app; 2 records in TIME-WAIT.
    assert summary[0] == "Total: 4"
    assert summary[1] == "TCP:   6 (estab 2, closed 2, orphaned 0, timewait 2)"
    first = tcpstack("stats", "--netns", s.netns or "").stdout.splitlines()
    assert first[0] == f"#tcpstack {s.netns}"
    values = {line.split()[0]: int(line.split()[1]) for line in first[1:]}
    assert values["TcpPassiveOpens"] == 4 and values["TcpExtTW"] == 2
    assert all(v != 0 for v in values.values())  # zeros hidden
    stack_closes_first(s.netns or "", 9)
    second = tcpstack("stats", "--netns", s.netns or "").stdout.splitlines()
    delta = {line.split()[0]: int(line.split()[1]) for line in second[1:]}
    assert delta["TcpPassiveOpens"] == 1 and delta["TcpExtTW"] == 1  # the increase since the last call
    absolute = tcpstack("stats", "--netns", s.netns or "", "-a", "TcpPassiveOpens").stdout.splitlines()
    assert absolute[1].split()[:2] == ["TcpPassiveOpens", "5"]
    zeros = tcpstack("stats", "--netns", s.netns or "", "-asz", "TcpExtTCPTimeWaitOverflow").stdout.splitlines()
    assert zeros[1].split()[:2] == ["TcpExtTCPTimeWaitOverflow", "0"]


@needs_kernel
def test_stats_history_lives_beside_the_socket_and_goes_with_it(serve: Callable[..., Serve]) -> None:
    s = serve("--app", "echo", "--port", "7", netns=unique_netns("hist"))
    s.wait_ready()
    history = Path("/run/tcpstack", f"{s.netns}.sock.nstat.u{os.getuid()}")
    assert tcpstack("stats", "--netns", s.netns or "").returncode == 0
    assert history.exists()
    assert s.stop(signal.SIGTERM) == 0
    assert not history.exists()


@needs_kernel
def test_watch_on_a_pipe_prints_plain_lines(running: tuple[Serve, list[socket.socket], Path]) -> None:
    s, _, log = running
    done = tcpstack("ss", "--netns", s.netns or "", "-s", "--watch", "0.3", "--count", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and "\033" not in done.stdout
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d Total: 4  TCP:   6 \(estab 2, .*timewait 2\)", line) for line in lines)
    done = tcpstack("stats", "--netns", s.netns or "", "--watch", "0.3", "--count", "2", "-z", "TcpPassiveOpens")
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[1:3] == ["TcpPassiveOpens", "4"]
    assert lines[1].split()[1:3] == ["TcpPassiveOpens", "0"]  # the increase per interval
    # The stats log has a row a second with every counter and the states.
    time.sleep(1.2)
    rows = list(csv.DictReader(log.open()))
    assert len(rows) >= 2
    last = rows[-1]
    assert last["TIME-WAIT"] == "2" and last["ESTABLISHED"] == "2" and last["LISTEN"] == "2"
    assert last["TcpPassiveOpens"] == "4" and "TcpExtTCPTimeWaitOverflow" in last
    assert float(rows[1]["elapsed"]) - float(rows[0]["elapsed"]) == pytest.approx(1.0, abs=0.2)


@needs_kernel
def test_watch_on_a_terminal_refreshes_in_place(running: tuple[Serve, list[socket.socket], Path]) -> None:
    s, _, _ = running
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "stack", "ss", "--netns", s.netns or "", "-s", "--watch", "0.3"],
                            cwd=REPO, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 10
        while out.count(b"\033[H\033[2J") < 2 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        os.close(master)
        if proc.stderr is not None:
            proc.stderr.close()
    text = out.decode()
    assert text.count("\033[H\033[2J") >= 2  # cleared and redrawn, like watch(1)
    assert "Every 0.3s: tcpstack ss -s" in text and "timewait 2" in text
    assert proc.returncode == 130  # Ctrl-C ends a watch as every command: one line, 130
