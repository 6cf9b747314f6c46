"""`tcpstack serve` over IPv6: --ipv6 and v6 --addr/--peer-addr, a kernel client reaching
[2001:2::2], ss printing it as iproute2 does with the IPv6 column of ss -s, and the pcap of it
read by tcpdump."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.serving import (
    Serve,
    kernel_connect,
    needs_kernel,
    read_to_eof,
    ss_lines,
    tcpstack,
    unique_netns,
    wait_for,
)

pytestmark = [needs_kernel, pytest.mark.kernel]


def test_serve_ipv6_answers_a_kernel_client_and_ss_shows_it(serve: Callable[..., Serve], tmp_path: Path) -> None:
    name = unique_netns("v6")
    pcap = tmp_path / "v6.pcap"
    s = serve("--ipv6", "--app", "echo", "--port", "7", "--app", "reply-close", "--port", "8", "--pcap", str(pcap),
              "--msl", "20", netns=name)
    assert s.wait_ready() == f"ready netns={name} addr=2001:2::2 peer=2001:2::1"
    held = kernel_connect(name, 7, "2001:2::2")
    held.sendall(b"ping6")
    assert held.recv(5) == b"ping6"
    closer = kernel_connect(name, 8, "2001:2::2")
    closer.sendall(b"hello\n")
    read_to_eof(closer)  # the stack closes first: its TIME-WAIT is an IPv6 record
    closer.close()
    # The same serve answers over IPv4 as well.
    v4 = kernel_connect(name, 7)
    v4.sendall(b"ping4")
    assert v4.recv(5) == b"ping4"
    kport = held.getsockname()[1]
    assert wait_for(lambda: any("TIME-WAIT" in line for line in ss_lines("--netns", name, "-tan")))
    lines = ss_lines("--netns", name, "-tan")
    estab = [line.split() for line in lines if line.startswith("ESTAB")]
    assert ["ESTAB", "0", "0", "[2001:2::2]:7", f"[2001:2::1]:{kport}"] in estab
    assert any(row[3] == "198.18.0.2:7" for row in estab)
    assert any(line.startswith("TIME-WAIT") and "[2001:2::2]:8" in line for line in lines)
    assert len(ss_lines("--netns", name, "dst", f"[2001:2::1]:{kport}")) == 2  # header + the one
    summary = ss_lines("--netns", name, "-s")
    tcp_line = next(line for line in summary if line.startswith("TCP\t"))
    assert tcp_line.split()[1:] == ["4", "3", "1"]  # 2 listeners + the IPv4 one; the IPv6 one
    rows = json.loads(tcpstack("ss", "--netns", name, "--json").stdout)
    assert {r["local"] for r in rows} == {"[2001:2::2]:7", "198.18.0.2:7"}
    held.close()
    v4.close()
    assert s.stop() == 0
    if shutil.which("tcpdump"):
        out = subprocess.run(["tcpdump", "-nn", "-r", str(pcap)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"IP6 2001:2::1.{kport} > 2001:2::2.7: Flags [S]" in out.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--addr", "2001:2::2", "--peer-addr", "198.18.0.1"], "one family"),
    (["--ipv6", "--addr", "198.18.0.5"], "--ipv6 with IPv4"),
    (["--addr", "2001:3::2"], "not inside"),
    (["--addr", "2001:2::zz"], "not an IPv4 or IPv6 address"),
    (["--ipv6", "--mtu", "1000"], "below IPv6's minimum"),
])
def test_bad_ipv6_arguments_are_one_line(args: list[str], message: str) -> None:
    result = tcpstack("serve", "--app", "echo", "--port", "7", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3  # argparse's usage lines at most, no traceback
    assert "Traceback" not in result.stderr
