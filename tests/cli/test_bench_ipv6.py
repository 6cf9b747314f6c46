"""`tcpstack bench cps --ipv6` and `bench bulk --ipv6`: the same contract objects, measured over
IPv6 (the kernel dials 2001:2::2, the stack dials 2001:2::1). Speeds are measured, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stack.link.tun import kernel_link_available

OK, REASON = kernel_link_available()
pytestmark = [pytest.mark.skipif(not OK, reason=REASON or "n/a"), pytest.mark.kernel]


def test_bench_cps_ipv6_json() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "bench", "cps", "--ipv6", "--seconds", "1", "--c1-seconds",
                           "0.5", "--json"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["family"] == "ipv6"
    for case in ("kernel_closes_first", "stack_closes_first", "stack_as_client", "kernel_to_kernel"):
        assert report[case]["cps"] > 0 and report[case]["c1_cps"] > 0, case
        assert not report[case]["errors"].get("connect_errors"), report[case]["errors"]
    assert report["stack_closes_first"]["peak_time_wait"] > 0  # the stack's IPv6 TIME-WAIT records


def test_bench_bulk_ipv6_json() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "bench", "bulk", "--ipv6", "--mb", "8", "--mtu", "1500",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["family"] == "ipv6"
    for case in ("mtu1500", "mtu1500_no_offload"):
        assert result[case]["family"] == "ipv6"
        assert result[case]["to_stack_MBps"] > 0 and result[case]["from_stack_MBps"] > 0
    assert result["kernel_to_kernel"]["MBps"] > 0


def test_bench_bulk_ipv6_refuses_a_small_mtu() -> None:
    done = subprocess.run([sys.executable, "-m", "stack", "bench", "bulk", "--ipv6", "--mtu", "1000"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "1280" in done.stderr and "Traceback" not in done.stderr
