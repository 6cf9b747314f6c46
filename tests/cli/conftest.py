"""The `serve` fixture: `tcpstack serve` subprocesses that are stopped, and whose namespaces and
control sockets are removed, whatever the test did."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from stack.cli.control import remove_stale_socket
from stack.link.netns import reap_stale
from tests.cli.serving import REPO, Serve, control_socket


@pytest.fixture
def serve() -> Iterator[Callable[..., Serve]]:
    """Start `tcpstack serve ARGS`; every one is killed and its namespace removed at teardown."""
    started: list[Serve] = []

    def start(*args: str, netns: str | None = None) -> Serve:
        argv = [sys.executable, "-m", "stack", "serve", *args]
        if netns is not None:
            argv += ["--netns", netns]
        # A session of its own, as a terminal would give it: tests can SIGINT its whole group.
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        s = Serve(proc, netns)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop(signal.SIGTERM, timeout=10.0)
            for stream in (s.proc.stdout, s.proc.stderr):
                if stream is not None:
                    stream.close()
        # A serve that had to be SIGKILLed leaves its namespace (only ones tcpstack made: a borrowed
        # namespace is the test's to remove) and its socket: clear them here.
        reap_stale()
        for s in started:
            if s.netns:
                remove_stale_socket(str(control_socket(s.netns)))
