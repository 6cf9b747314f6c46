"""Helpers for the tests that run `tcpstack` as a user does: as subprocesses (the `serve` fixture is
in conftest.py)."""

from __future__ import annotations

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


def kernel_connect(netns: str, port: int) -> socket.socket:
    sock = netns_socket(netns)
    sock.setblocking(True)
    sock.settimeout(5.0)
    sock.connect((STACK_ADDR, port))
    return sock


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
