"""`tcpstack serve` answers ping as a host does, `tcpstack stats` counts it under Linux's names,
and the capture holds the echo requests and replies (tcpdump reads them)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.serving import STACK_ADDR, Serve, needs_kernel, tcpstack, unique_netns

pytestmark = [needs_kernel, pytest.mark.kernel,
              pytest.mark.skipif(shutil.which("ping") is None, reason="ping (iputils-ping) is not installed")]


def test_ping_answers_while_serve_runs(serve: Callable[..., Serve], tmp_path: Path) -> None:
    name = unique_netns("ping")
    pcap = tmp_path / "ping.pcap"
    s = serve("--app", "echo", "--port", "7", "--pcap", str(pcap), netns=name)
    s.wait_ready()
    done = subprocess.run(["ip", "netns", "exec", name, "ping", "-c", "3", "-i", "0.2", "-W", "2", STACK_ADDR],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 packets transmitted, 3 received" in done.stdout
    stats = tcpstack("stats", "--netns", name, "--json")
    assert stats.returncode == 0, stats.stderr
    counters = json.loads(stats.stdout)
    assert counters["IcmpInEchos"] == 3 and counters["IcmpOutEchoReps"] == 3
    assert counters["IcmpMsgInType8"] == 3 and counters["IcmpMsgOutType0"] == 3
    text = tcpstack("stats", "--netns", name, "Icmp*").stdout
    assert any(line.split()[:2] == ["IcmpInEchos", "3"] for line in text.splitlines()), text
    assert s.stop() == 0
    if shutil.which("tcpdump"):
        read = subprocess.run(["tcpdump", "-nr", str(pcap), "icmp"], capture_output=True, text=True, timeout=30,
                              check=False)
        assert read.stdout.count("ICMP echo request") == 3, read.stdout
        assert read.stdout.count("ICMP echo reply") == 3, read.stdout
