"""Helpers for the tests that run `tcpstack` as a user does: as subprocesses (the `serve` fixture is
in conftest.py)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stack.link.nsenter import netns_socket
from stack.link.tun import kernel_link_available

KERNEL_LINK_OK, KERNEL_LINK_REASON = kernel_link_available()
REPO = Path(__file__).resolve().parents[2]
STACK_ADDR = "198.18.0.2"
CONTROL_DIR = "/run/tcpstack"
READY_TIMEOUT = 20.0

needs_kernel = pytest.mark.skipif(not KERNEL_LINK_OK, reason=KERNEL_LINK_REASON or "n/a")


def tcpstack(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def control_socket(netns: str) -> Path:
    """Where a serve in `netns` listens for `ss` and `stats`."""
    return Path(CONTROL_DIR, f"{netns}.sock")


def assert_cleaned_up(netns: str) -> None:
    """A serve that stopped left neither its namespace nor its control socket behind."""
    assert not netns_exists(netns)
    assert not control_socket(netns).exists()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The records of a --trace file (JSON lines)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


class Serve:
    def __init__(self, proc: subprocess.Popen[str], netns: str | None) -> None:
        self.proc = proc
        self.netns = netns
        self.ready_line = ""

    def wait_ready(self) -> str:
        """The ready line; fails with serve's stderr if it exits or stays silent."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line:
                    self.ready_line = line.rstrip("\n")
                    m = re.fullmatch(r"ready netns=(\S+) addr=(\S+) peer=(\S+)", self.ready_line)
                    assert m, f"unexpected first line from serve: {self.ready_line!r}"
                    self.netns = m.group(1)
                    return self.ready_line
            if self.proc.poll() is not None:
                break
        self.stop(signal.SIGKILL)
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        pytest.fail(f"serve did not get ready (exit {self.proc.returncode}): {stderr}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def unique_netns(tag: str) -> str:
    # Not in stack.link.netns's `tcps-<pid>-<n>` pattern, so reap_stale() elsewhere never touches it.
    return f"tcpcli-{tag}-{os.getpid()}"


def kernel_connect(netns: str, port: int, addr: str = STACK_ADDR, local_port: int | None = None) -> socket.socket:
    """A kernel socket in `netns` connected to `addr`:`port` (IPv6 when the address is), from
    `local_port` when given."""
    sock = netns_socket(netns, socket.AF_INET6 if ":" in addr else socket.AF_INET)
    sock.setblocking(True)
    sock.settimeout(5.0)
    if local_port is not None:
        sock.bind(("", local_port))
    sock.connect((addr, port))
    return sock


def stack_closes_first(netns: str, i: int) -> int:
    """reply-close (port 8): our message comes back, then the stack's FIN; we close after it.
    The kernel's port of the connection."""
    msg = f"stack closes {i}".encode()
    with kernel_connect(netns, 8) as sock:
        sock.sendall(msg)
        assert read_to_eof(sock) == msg
        local_port: int = sock.getsockname()[1]
    return local_port


def kernel_closes_first(netns: str, i: int) -> None:
    """echo: read the echo, then our FIN first; the stack closes after it."""
    msg = f"kernel closes {i}".encode()
    with kernel_connect(netns, 7) as sock:
        sock.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = sock.recv(65536)
            assert chunk, "echo closed before echoing"
            got += chunk
        assert got == msg
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""


def read_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def ss_lines(*args: str) -> list[str]:
    result = tcpstack("ss", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()
