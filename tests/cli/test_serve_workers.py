"""`tcpstack serve --workers 2` is one stack to the user: `ss` and `stats` merge both workers' tables
and counters, the pcap and trace of both are one file each in time order, a worker that dies is
reported while the other keeps serving, and SIGINT stops everything and cleans up.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from stack.link.steering import owner
from stack.observe.pcap import read_pcap
from tests.cli.serving import (
    Serve,
    assert_cleaned_up,
    kernel_connect,
    needs_kernel,
    read_trace,
    ss_lines,
    stack_closes_first,
    tcpstack,
    unique_netns,
    wait_for,
)

pytestmark = [needs_kernel]

N = 24  # connections to reply-close: the stack closes first, so both workers hold TIME-WAITs


def test_serve_two_workers_merges_tables_captures_and_survives_a_dead_worker(
        serve: Callable[..., Serve], tmp_path: Path) -> None:
    netns = unique_netns("workers")
    pcap, trace = tmp_path / "run.pcap", tmp_path / "run.jsonl"
    s = serve("--workers", "2", "--app", "reply-close", "--port", "8", "--app", "echo", "--port", "7",
              "--pcap", str(pcap), "--trace", str(trace), netns=netns)
    s.wait_ready()
    ports = [stack_closes_first(netns, i) for i in range(N)]
    by_worker = [sum(1 for p in ports if owner(p, 8, 2) == w) for w in (0, 1)]
    assert min(by_worker) > 0, by_worker  # the kernel's ports spread the flows over both workers

    # ss: one table of both workers' TIME-WAITs; -s totals the same.
    tw = [line for line in ss_lines("--netns", netns, "state", "time-wait") if "198.18.0.2:8" in line]
    assert len(tw) == N
    summary = "\n".join(ss_lines("--netns", netns, "-s"))
    assert f"timewait {N}" in summary
    stats = tcpstack("stats", "--netns", netns)
    assert stats.returncode == 0, stats.stderr
    assert re.search(rf"TcpPassiveOpens\s+{N}\b", stats.stdout), stats.stdout

    # A worker killed outright: reported on stderr; the other still answers its flows.
    pids = _worker_pids(s.proc.pid)
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    assert wait_for(lambda: len(_worker_pids(s.proc.pid)) == 1, 5)
    # Flows of worker 0 (local ports chosen so) are still served; worker 1's would go unanswered.
    live_ports = [p for p in range(40000, 40400) if owner(p, 7, 2) == 0][:20]
    for port in live_ports:
        with kernel_connect(netns, 7, local_port=port) as sock:
            sock.sendall(b"still here")
            assert sock.recv(100) == b"still here"

    assert s.stop(signal.SIGINT) == 130
    stderr = s.proc.stderr.read() if s.proc.stderr else ""
    assert "worker 1 exited" in stderr
    assert_cleaned_up(netns)
    assert not any(p.name.startswith(".run.") for p in tmp_path.iterdir())  # parts merged and removed
    records = read_pcap(pcap)
    times = [t for t, _ in records]
    assert len(records) >= N * 6 and times == sorted(times)
    lines = read_trace(trace)
    assert [r["time"] for r in lines] == sorted(r["time"] for r in lines)
    assert sum(1 for r in lines if r["kind"] == "state" and r["new"] == "TIME-WAIT") == N


def _worker_pids(parent: int) -> list[int]:
    """The live children of the serve process (its workers)."""
    time.sleep(0.05)
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        return []
    alive = []
    for pid in children:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


def test_demo_with_two_workers_runs_every_part_and_misroutes_nothing() -> None:
    result = tcpstack("demo", "--workers", "2", timeout=90)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for title in ("1. The kernel closes first", "2. tcpstack closes first", "3. Simultaneous close"):
        assert title in out
    assert "(worker 0 of 2)" in out and "(worker 1 of 2)" in out
    assert "2MSL expired: TIME-WAIT -> CLOSED" in out
    assert out.rstrip().endswith("misrouted segments: 0.")
