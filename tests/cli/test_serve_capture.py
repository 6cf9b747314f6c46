"""`tcpstack serve --pcap/--trace` as a user runs them, read with tcpdump while the stack runs.

The capture must hold every segment the stack put on the wire -- including those a `reorder out`
or `delay out` rule held back -- in wire order: its count of segments from the stack must equal
the kernel's own count of segments it received (TcpInSegs of the namespace, which is fresh). The
files must be readable live, after `kill -9`, and `--pcap -` must stream to a pipe.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stack.observe.pcap import read_pcap
from stack.observe.trace import read_trace
from tests.cli.serving import (
    REPO,
    Serve,
    kernel_closes_first,
    needs_kernel,
    netns_exists,
    stack_closes_first,
    unique_netns,
)

STACK = "198.18.0.2"
TCPDUMP = shutil.which("tcpdump")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed (.ci/run installs it)")


def tcpdump_read(path: Path | str, *expr: str) -> list[str]:
    """`tcpdump -nr FILE EXPR` lines; fails on a file tcpdump calls truncated or unreadable."""
    assert TCPDUMP is not None
    done = subprocess.run([TCPDUMP, "-nr", str(path), *expr], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "truncated" not in done.stderr, done.stderr
    return done.stdout.splitlines()


def kernel_in_segs(netns: str) -> int:
    """TcpInSegs of the namespace's kernel: every segment it received, i.e. every one the stack sent."""
    snmp = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    names, values = (line.split()[1:] for line in snmp if line.startswith("Tcp:"))
    return int(dict(zip(names, values, strict=True))["InSegs"])


def settled(read: Callable[[], int], quiet: float = 1.5, timeout: float = 10.0) -> int:
    """The value of `read()` once it stopped changing for `quiet` seconds (held segments released)."""
    value, since, end = read(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(0.25)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return value


@needs_kernel
@needs_tcpdump
@pytest.mark.parametrize("rule", ["reorder out hold=1", "delay out 50ms"])
def test_capture_holds_every_segment_the_kernel_got(serve: Callable[..., Serve], tmp_path: Path, rule: str) -> None:
    pcap, trace = tmp_path / "c.pcap", tmp_path / "c.jsonl"
    s = serve("--app", "echo", "--port", "7", "--app", "reply-close", "--port", "8", "--msl", "1",
              "--fault", rule, "--pcap", str(pcap), "--trace", str(trace), netns=unique_netns("cap"))
    s.wait_ready()
    assert s.netns is not None
    kernel_closes_first(s.netns, 0)
    stack_closes_first(s.netns, 1)
    kernel_got = settled(lambda: kernel_in_segs(s.netns or ""))
    live = tcpdump_read(pcap, "src", STACK)  # while serve runs
    assert kernel_got > 0 and len(live) == kernel_got, (kernel_got, live)
    assert s.stop(signal.SIGINT) == 130  # Ctrl-C: cleaned up, one line, 130 (stack/cli/interrupt.py)
    lines = tcpdump_read(pcap, "src", STACK)
    assert lines[: len(live)] == live
    # Wire order: timestamps never go back.
    times = [t for t, _ in read_pcap(pcap)]
    assert times == sorted(times)
    held = "reorder" if "reorder" in rule else "delay"
    out = [r for r in read_trace(trace) if r["kind"] == "segment" and r["dir"] == "out"]
    assert len(out) == len(lines)
    assert all(r["fault"] and held in r["fault"] for r in out)


@needs_kernel
@needs_tcpdump
def test_kill_9_leaves_a_capture_tcpdump_reads(serve: Callable[..., Serve], tmp_path: Path) -> None:
    pcap, trace = tmp_path / "k.pcap", tmp_path / "k.jsonl"
    s = serve("--app", "echo", "--port", "7", "--pcap", str(pcap), "--trace", str(trace),
              netns=unique_netns("kill"))
    s.wait_ready()
    assert s.netns is not None
    kernel_closes_first(s.netns, 0)
    time.sleep(0.3)
    s.stop(signal.SIGKILL)
    lines = tcpdump_read(pcap)
    assert len(lines) >= 8  # handshake, data, echo, both FINs and their ACKs
    assert len([r for r in read_trace(trace) if r["kind"] == "segment"]) == len(lines)


@needs_kernel
@needs_tcpdump
def test_pcap_to_stdout_streams_into_tcpdump() -> None:
    assert TCPDUMP is not None
    name = unique_netns("pipe")
    serve_proc = subprocess.Popen([sys.executable, "-m", "stack", "serve", "--app", "echo", "--port", "7",
                                   "--netns", name, "--pcap", "-"], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
    assert serve_proc.stdout is not None and serve_proc.stderr is not None
    dump = subprocess.Popen([TCPDUMP, "-nlr", "-"], stdin=serve_proc.stdout, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    serve_proc.stdout.close()  # tcpdump holds the read end now
    assert dump.stdout is not None
    try:
        ready = serve_proc.stderr.readline().decode()
        assert re.fullmatch(rf"ready netns={name} addr=\S+ peer=\S+\n", ready), ready
        kernel_closes_first(name, 0)
        # Live: tcpdump prints the exchange while serve still runs.
        # Raw reads: a buffered readline() may take several lines at once, and select() would then
        # wait for more on the pipe while they sit in the buffer.
        got = b""
        deadline = time.monotonic() + 10
        while got.count(b"\n") < 8 and time.monotonic() < deadline:
            if select.select([dump.stdout], [], [], 0.5)[0]:
                chunk = os.read(dump.stdout.fileno(), 65536)
                if not chunk:
                    break
                got += chunk
        seen = got.decode().splitlines()
        assert len(seen) >= 8, seen
        assert serve_proc.poll() is None
        assert any(f"{STACK}.7 >" in line for line in seen)
    finally:
        if serve_proc.poll() is None:
            serve_proc.send_signal(signal.SIGTERM)
        serve_proc.wait(15)
        dump.wait(15)
        dump.stdout.close()
        serve_proc.stderr.close()
        if netns_exists(name):
            subprocess.run(["ip", "netns", "del", name], check=False)
            sock = Path("/run/tcpstack", f"{name}.sock")
            if sock.exists():
                os.unlink(sock)
    assert serve_proc.returncode == 0
