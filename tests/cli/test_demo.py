"""`tcpstack demo` as a user runs it: exit 0, every closing state shown on both sides, the SVG."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stack.link.tun import kernel_link_available
from stack.observe.pcap import read_pcap
from stack.observe.trace import read_trace

OK, REASON = kernel_link_available()
pytestmark = pytest.mark.skipif(not OK, reason=REASON or "n/a")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_demo_shows_every_closing_state(tmp_path: Path, family: str) -> None:
    svg = tmp_path / "close.svg"
    extra = ["--ipv6"] if family == "ipv6" else []
    done = subprocess.run([sys.executable, "-m", "stack", "demo", "--svg", str(svg), *extra], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    kernel, stack = ("2001:2::1", "2001:2::2") if extra else ("198.18.0.1", "198.18.0.2")
    assert f"kernel   {kernel}  (" in out and f"tcpstack {stack}  (" in out
    assert out.count("seq/ack relative") == 3  # the same three ladders
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


# ------------------------------------------------------------------------------ with fault rules
def demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", "demo", "--msl", "0.5", *args], capture_output=True,
                          text=True, timeout=timeout)


def part(out: str, n: int) -> str:
    """The text of part n (its title to the next part's title)."""
    start = out.index(f"\n{n}. ")
    end = out.find(f"\n{n + 1}. ", start)
    return out[start: end if end >= 0 else len(out)]


def arrows(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r"(>\||\|<|\| *X--)", line)]


def test_demo_summary_says_what_really_ended_time_wait(tmp_path: Path) -> None:
    """A held FIN can make the kernel answer our ACK with a RST: then TIME-WAIT ended by that RST,
    and the summary must not claim the 2MSL expiry (the trace says which it was)."""
    trace = tmp_path / "demo.jsonl"
    done = demo("--fault", "reorder in flags=F hold=1", "--trace", str(trace))
    assert done.returncode == 0 and "Traceback" not in done.stderr + done.stdout, done.stderr
    ends = [r for r in read_trace(trace) if r["kind"] == "state" and r["old"] == "TIME-WAIT"
            and r["local"].endswith(":8")]
    assert len(ends) == 1
    two = part(done.stdout, 2)
    if ends[0]["cause"] == "timeout = 2MSL":
        assert "2MSL expired: TIME-WAIT -> CLOSED" in two
    else:
        assert "2MSL expired" not in two and "TIME-WAIT ended early" in two
        assert "a RST arrived" in two if ends[0]["cause"] == "rcv RST" else ends[0]["cause"] in two
    assert "(held" in two  # the reordered FIN says so


def test_demo_with_lost_fins_shows_them_and_ends_cleanly() -> None:
    done = demo("--fault", "drop in flags=F")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "Exception" not in done.stderr, done.stderr
    one = part(done.stdout, 1)
    lost = [line for line in arrows(one) if "X--" in line]
    assert lost and all("FA" in line and "dropped by a fault rule" in line for line in lost)
    assert "not finished" in one and "the fault rules kept it from ending" in one
    assert "TIME-WAIT count now" in done.stdout  # all three parts ran


def test_demo_with_delayed_output_draws_outgoing_arrows_with_relative_numbers() -> None:
    done = demo("--fault", "delay out 50ms")
    assert done.returncode == 0, done.stderr
    for n in (1, 2, 3):
        rows = arrows(part(done.stdout, n))
        outgoing = [line for line in rows if ">|" in line]
        assert outgoing and all("held" in line and "by delay" in line for line in outgoing)
        assert "SA seq=0 ack=1" in outgoing[0]  # relative, not the raw ISN
    assert "2MSL expired: TIME-WAIT -> CLOSED" in part(done.stdout, 2)


def test_demo_labels_fault_made_duplicates_as_duplicates() -> None:
    done = demo("--fault", "dup out payload=yes", "--fault", "dup in flags=F")
    assert done.returncode == 0, done.stderr
    rows = arrows(done.stdout)
    dups = [line for line in rows if "duplicate made by a fault rule" in line]
    assert len(dups) >= 3
    assert not any("retransmission" in line for line in dups)


def test_demo_pcap_and_trace(tmp_path: Path) -> None:
    pcap, trace = tmp_path / "demo.pcap", tmp_path / "demo.jsonl"
    done = demo("--pcap", str(pcap), "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    packets = read_pcap(pcap)
    shown = sum(len(arrows(part(done.stdout, n))) for n in (1, 2, 3))
    assert len(packets) == shown  # the ladders show every segment of the capture
    assert len([r for r in read_trace(trace) if r["kind"] == "segment"]) == len(packets)
    bad = demo("--pcap", "-")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
