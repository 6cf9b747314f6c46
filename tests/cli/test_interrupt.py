"""Ctrl-C, as a terminal sends it (SIGINT to the whole foreground process group), to the real
commands in the middle of their work: each stops within a second, cleans up (no namespace, no
process of its group left), prints one line and exits 130. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.serving import REPO, needs_kernel

pytestmark = [needs_kernel, pytest.mark.kernel]

STOP_WITHIN = 1.0  # seconds from the first SIGINT to the exit
TCPSTACK = [sys.executable, "-m", "stack"]


class Command:
    """A command in a session of its own (so its process group is the terminal's foreground group)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        # Read raw, not through Python's line buffering: select() must see every byte not yet read.
        self.pending = {"stdout": b"", "stderr": b""}
        self.seen = ""

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> None:
        """Read stdout and stderr until a line matches (the command is then mid-way through its work);
        stderr after the matching line stays pending, for ctrl_c()."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        streams = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for fd in select.select(list(streams), [], [], 0.2)[0]:
                name = streams[fd]
                self.pending[name] += os.read(fd, 65536)
                while b"\n" in self.pending[name]:
                    line, self.pending[name] = self.pending[name].split(b"\n", 1)
                    self.seen += line.decode() + "\n"
                    if re.search(pattern, line.decode()):
                        return
            if self.proc.poll() is not None:
                break
        pytest.fail(f"no line matching {pattern!r} (exit {self.proc.poll()}): {self.seen[-3000:]}")

    def ctrl_c(self, times: int = 1) -> tuple[int, float, str]:
        """SIGINT to the group (`times` in a row); (exit status, seconds to exit, stderr not yet read)."""
        t0 = time.monotonic()
        for _ in range(times):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
            pytest.fail("still running 15 s after SIGINT")
        return self.proc.returncode, time.monotonic() - t0, (self.pending["stderr"] + err).decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


@pytest.fixture
def command() -> Iterator[type[Command]]:
    started: list[Command] = []

    class Tracked(Command):
        def __init__(self, argv: list[str]) -> None:
            super().__init__(argv)
            started.append(self)

    yield Tracked
    for c in started:
        c.kill()


def namespaces_of(pid: int) -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(f"tcps-{pid}-")]
    except FileNotFoundError:
        return []


def group_alive(pgid: int, grace: float = 1.0) -> bool:
    """Whether any process of the group is still there after `grace` seconds (a child that exited
    with its parent may take a moment to be reaped by init on a busy machine)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            print(subprocess.run(["ps", "-o", "pid,ppid,stat,args", "--sid", str(pgid)], capture_output=True,
                                 text=True).stdout)
            return True
        time.sleep(0.05)


def assert_stopped_cleanly(c: Command, status: int, seconds: float, err: str, name: str,
                           pid: int | None = None) -> None:
    assert status == 130, f"exit {status}: {err}"
    assert seconds < STOP_WITHIN, f"took {seconds:.2f} s to stop"
    assert err == f"{name}: interrupted\n", err  # one line: no traceback, nothing from children
    assert namespaces_of(pid or c.proc.pid) == []
    assert not group_alive(c.proc.pid), "a child outlived the command"


CASES = {
    "demo": (["demo", "--msl", "30"], r"waiting 2MSL", "tcpstack demo"),
    "serve": (["serve", "--app", "hold", "--port", "7"], r"^ready ", "tcpstack serve"),
    "bench cps": (["bench", "cps", "--seconds", "20"], r"kernel_closes_first: 20 s", "tcpstack bench cps"),
    "bench bulk": (["bench", "bulk", "--mb", "4096", "--mtu", "1500"], r"MTU 1500 with offloads",
                   "tcpstack bench bulk"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_first_ctrl_c_stops_cleans_up_and_says_one_line(command: type[Command], case: str) -> None:
    argv, marker, name = CASES[case]
    c = command([*TCPSTACK, *argv])
    c.wait_for_line(marker)
    time.sleep(1.0)  # well into the work: connections, children, timers all running
    status, seconds, err = c.ctrl_c()
    assert_stopped_cleanly(c, status, seconds, err, name)


def test_second_ctrl_c_stops_at_once(command: type[Command]) -> None:
    c = command([*TCPSTACK, "bench", "cps", "--seconds", "20"])
    c.wait_for_line(r"kernel_closes_first: 20 s")
    time.sleep(1.0)
    status, seconds, err = c.ctrl_c(times=2)
    assert_stopped_cleanly(c, status, seconds, err, "tcpstack bench cps")


# The examples that run long enough to be interrupted (kernel_client and raw_tun are done in a moment).
EXAMPLES = {
    "echo_server.py": (["--seconds", "60"], r"echo server on"),
    "time_wait_storm.py": (["--seconds", "20"], r"TIME-WAIT every 0.5 s"),
    "fault_scenarios.py": (["3b"], r"^3b\. "),
}


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_examples_stop_on_ctrl_c(command: type[Command], example: str, tmp_path: Path) -> None:
    args, marker = EXAMPLES[example]
    if example == "time_wait_storm.py":
        args = [*args, "--stats-dir", str(tmp_path)]  # its stats logs, not into the checkout
    c = command([sys.executable, str(REPO / "examples" / example), *args])
    c.wait_for_line(marker)
    time.sleep(0.5)
    status, seconds, err = c.ctrl_c()
    assert_stopped_cleanly(c, status, seconds, err, example)


def test_make_demo_ctrl_c(command: type[Command]) -> None:
    if not Path(REPO, ".venv", "bin", "tcpstack").exists():
        pytest.skip("make demo runs .venv/bin/tcpstack: no .venv here")
    c = command(["make", "--no-print-directory", "-C", str(REPO), "demo"])
    c.wait_for_line(r"waiting 2MSL")
    status, seconds, err = c.ctrl_c()
    # make itself dies of the SIGINT it received too (a shell reports that as 130); the one line is
    # tcpstack's, make adds none.
    assert status in (130, -signal.SIGINT), f"exit {status}: {err}"
    assert seconds < STOP_WITHIN
    assert err == "tcpstack demo: interrupted\n", err
    assert not group_alive(c.proc.pid)
