"""The serve apps that show the other ways to close, each against kernel sockets in the namespace:
`abort` (RST, no TIME-WAIT anywhere), `half-close` (answers after the peer's FIN), `hold` (CLOSE-WAIT
piles up), `sink` (bulk in, one line of count back)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Callable

import pytest

from tests.cli.serving import Serve, kernel_connect, needs_kernel, read_to_eof, ss_lines, tcpstack, wait_for

pytestmark = [needs_kernel, pytest.mark.kernel]


def stats(netns: str) -> dict[str, int]:
    done = tcpstack("stats", "--netns", netns, "--json")
    assert done.returncode == 0, done.stderr
    counters: dict[str, int] = json.loads(done.stdout)
    return counters


def kernel_time_waits(netns: str) -> list[str]:
    return subprocess.run(["ip", "netns", "exec", netns, "ss", "-tanH", "state", "time-wait"],
                          capture_output=True, text=True, check=True).stdout.splitlines()


def test_abort_answers_then_resets(serve: Callable[..., Serve]) -> None:
    s = serve("--app", "abort", "--port", "7")
    s.wait_ready()
    assert s.netns is not None
    with kernel_connect(s.netns, 7) as sock:
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass
    assert wait_for(lambda: stats(s.netns or "")["OutRsts"] >= 1)
    assert len(ss_lines("--netns", s.netns, "state", "time-wait")) == 1  # header only: none on the stack
    assert kernel_time_waits(s.netns) == []  # nor on the kernel


def test_half_close_answers_after_the_peers_fin(serve: Callable[..., Serve]) -> None:
    s = serve("--app", "half-close", "--port", "7")
    s.wait_ready()
    assert s.netns is not None
    with kernel_connect(s.netns, 7) as sock:
        sock.sendall(b"first ")
        sock.sendall(b"second")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # nothing comes back before our FIN
        sock.settimeout(5)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b"first second"


def test_hold_piles_up_close_wait(serve: Callable[..., Serve]) -> None:
    s = serve("--app", "hold", "--port", "7")
    s.wait_ready()
    assert s.netns is not None
    socks = [kernel_connect(s.netns, 7) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"x")
            sock.shutdown(socket.SHUT_WR)
        assert wait_for(lambda: len(ss_lines("--netns", s.netns or "", "state", "close-wait")) == 1 + len(socks))
        kernel = subprocess.run(["ip", "netns", "exec", s.netns, "ss", "-tanH", "state", "fin-wait-2"],
                                capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(kernel) == len(socks)
    finally:
        for sock in socks:
            sock.close()
    assert s.stop(signal.SIGTERM) == 0


def test_sink_counts_what_it_received(serve: Callable[..., Serve]) -> None:
    s = serve("--app", "sink", "--port", "9")
    s.wait_ready()
    assert s.netns is not None
    with kernel_connect(s.netns, 9) as sock:
        sock.sendall(b"b" * 3_000_000)
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_eof(sock).decode()
    assert re.fullmatch(r"3000000 bytes in \d+\.\d{3} s\n", reply), reply
