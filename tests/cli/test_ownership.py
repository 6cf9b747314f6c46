"""tcpstack deletes only what it created (issue: a user's namespace was deleted, with its processes).

* `serve --netns NAME` on a namespace the user made uses it as it is: the TUN device is added and
  removed again, the namespace and whatever runs in it stay exactly as they were.
* After `kill -9` of a serve, its namespace and control socket stay behind; `tcpstack cleanup
  --dry-run` lists them, `tcpstack cleanup` removes them, and the next start reaps the namespace
  on its own. A namespace merely named like tcpstack's is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.serving import (
    Serve,
    control_socket,
    kernel_connect,
    needs_kernel,
    netns_exists,
    read_to_eof,
    tcpstack,
)

pytestmark = [needs_kernel, pytest.mark.kernel]


def snapshot(netns: str) -> tuple[str, str]:
    """What a user would compare: the namespace's interfaces and addresses."""
    links = subprocess.run(["ip", "-n", netns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    addrs = subprocess.run(["ip", "-n", netns, "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return links, addrs


@pytest.fixture
def user_netns() -> Iterator[str]:
    """A namespace the user made with `ip netns add`, removed by the test, never by tcpstack."""
    name = f"tcpuser-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.parametrize("with_process", [False, True], ids=["idle", "with-a-process"])
def test_user_namespace_is_used_as_it_is_and_left_as_it_was(
        serve: Callable[..., Serve], user_netns: str, with_process: bool) -> None:
    sleeper = subprocess.Popen(["ip", "netns", "exec", user_netns, "sleep", "60"]) if with_process else None
    try:
        before = snapshot(user_netns)
        s = serve("--app", "echo", "--port", "7", netns=user_netns)
        s.wait_ready()
        with kernel_connect(user_netns, 7) as sock:
            sock.sendall(b"mine")
            sock.shutdown(1)
            assert read_to_eof(sock) == b"mine"
        assert s.stop(signal.SIGTERM) == 0
        assert s.proc.stderr is not None and "delete" not in s.proc.stderr.read()
        assert netns_exists(user_netns), "tcpstack deleted a namespace it did not create"
        assert snapshot(user_netns) == before  # the TUN device and its address are gone again
        if sleeper is not None:
            assert sleeper.poll() is None, "tcpstack killed a process it did not start"
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()


def killed_serve(serve: Callable[..., Serve]) -> tuple[str, Path]:
    """A serve that got SIGKILL: its namespace and control socket are left behind."""
    s = serve("--app", "echo", "--port", "7")
    s.wait_ready()
    assert s.netns is not None
    assert s.stop(signal.SIGKILL) == -signal.SIGKILL
    sock = control_socket(s.netns)
    assert netns_exists(s.netns) and sock.is_socket()
    return s.netns, sock


def test_cleanup_lists_then_removes_what_a_killed_serve_left(serve: Callable[..., Serve]) -> None:
    netns, sock = killed_serve(serve)
    os.utime(sock, (0, 0))  # old enough to be taken for stale (a fresh one may be a serve starting up)

    dry = tcpstack("cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove network namespace {netns}" in dry.stdout
    assert f"would remove control socket {sock}" in dry.stdout
    assert netns_exists(netns) and sock.is_socket()  # a dry run changes nothing

    done = tcpstack("cleanup")
    assert done.returncode == 0, done.stderr
    assert f"removed network namespace {netns}" in done.stdout
    assert f"removed control socket {sock}" in done.stdout
    assert not netns_exists(netns) and not sock.exists()
    assert netns not in tcpstack("cleanup", "--dry-run").stdout


def test_next_start_reaps_the_namespace_of_a_killed_serve(serve: Callable[..., Serve]) -> None:
    netns, _sock = killed_serve(serve)
    s = serve("--app", "echo", "--port", "7")
    s.wait_ready()
    assert not netns_exists(netns)
    assert s.stop(signal.SIGTERM) == 0
    assert s.proc.stderr is not None and netns in s.proc.stderr.read()  # it said what it removed


def test_a_namespace_only_named_like_ours_is_never_touched() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"tcps-{dead.pid}-1"  # tcpstack's pattern, a creator that is gone, but no owner record
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name not in tcpstack("cleanup", "--dry-run").stdout
        assert tcpstack("cleanup").returncode == 0
        assert netns_exists(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
