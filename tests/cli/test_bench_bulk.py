"""`tcpstack bench bulk` as a user runs it: one JSON object with the contract keys (speeds are
measured, never asserted), and one line for a bad argument."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stack.link.tun import kernel_link_available

OK, REASON = kernel_link_available()


@pytest.mark.skipif(not OK, reason=REASON or "n/a")
def test_bench_bulk_json() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "bench", "bulk", "--mb", "8", "--mtu", "1500", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("mtu1500", "mtu1500_no_offload", "kernel_to_kernel", "raw_tun"):
        assert key in result
    for case in ("mtu1500", "mtu1500_no_offload"):
        assert result[case]["to_stack_MBps"] > 0 and result[case]["from_stack_MBps"] > 0
    assert result["kernel_to_kernel"]["MBps"] > 0


@pytest.mark.skipif(not OK, reason=REASON or "n/a")
def test_bench_bulk_workers_json() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "bench", "bulk", "--mb", "8", "--workers", "1,2",
                           "--flows", "2", "--json"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["kernel_to_kernel"]["MBps"] > 0 and result["kernel_to_kernel"]["flows"] == 2
    for count in ("1", "2"):
        run = result["workers"][count]
        assert run["to_stack_MBps"] > 0 and run["from_stack_MBps"] > 0
        assert run["misrouted"] == 0


def test_bench_bulk_bad_argument() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "bench", "bulk", "--mb", "lots"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
