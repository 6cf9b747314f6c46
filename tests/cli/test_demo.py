"""`tcpstack demo` as a user runs it: exit 0, every closing state shown on both sides, the SVG."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stack.link.tun import kernel_link_available

OK, REASON = kernel_link_available()
pytestmark = pytest.mark.skipif(not OK, reason=REASON or "n/a")


def test_demo_shows_every_closing_state(tmp_path: Path) -> None:
    svg = tmp_path / "close.svg"
    done = subprocess.run([sys.executable, "-m", "stack", "demo", "--svg", str(svg)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = [line for line in out.splitlines() if "|" in line and ("<" in line or ">" in line)]
    stack_states = {line.split()[1] for line in rows}
    kernel_states = {line.split()[-1] for line in rows}
    closing = {"FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK", "CLOSED"}
    assert closing <= stack_states, closing - stack_states
    assert closing - {"CLOSED"} <= kernel_states, closing - kernel_states
    assert "2MSL expired: TIME-WAIT -> CLOSED" in out
    assert "TIME-WAIT count now: tcpstack 0" in out
    # Relative numbering: a FIN at seq n is acknowledged by n + 1.
    assert "FA seq=6 ack=6" in out and "A seq=6 ack=7" in out
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root)) == 3
    netns = re.search(r"network namespace (\S+)\)", out)
    assert netns is not None
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert netns.group(1) not in after  # its namespace is gone


def test_demo_bad_argument_is_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "demo", "--msl", "zero"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
