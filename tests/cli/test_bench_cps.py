"""`tcpstack bench cps` as a user runs it: one JSON object with the contract keys (speeds are measured,
never asserted), one-line errors with exit 2 for bad arguments, one line and exit 1 without root,
and no namespace left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stack.link.tun import kernel_link_available

KERNEL_LINK_OK, KERNEL_LINK_REASON = kernel_link_available()
REPO = Path(__file__).resolve().parents[2]
CASES = ("kernel_closes_first", "stack_closes_first", "stack_as_client", "kernel_to_kernel")
CASE_KEYS = ("cps", "first_tenth_cps", "last_tenth_cps", "peak_time_wait", "cpu", "rss_mb", "c1_cps")

needs_kernel = pytest.mark.skipif(not KERNEL_LINK_OK, reason=KERNEL_LINK_REASON or "n/a")


def tcpstack(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def leftover_namespaces(pid: int) -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(f"tcps-{pid}-")]
    except FileNotFoundError:
        return []


@needs_kernel
@pytest.mark.kernel
def test_json_run_prints_one_object_with_the_contract_keys() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "stack", "bench", "cps", "--seconds", "1", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert leftover_namespaces(proc.pid) == []
    assert out.count("\n") == 1, out  # exactly one line: one JSON object
    report = json.loads(out)
    assert isinstance(report, dict)
    assert report["seconds"] == 1.0
    assert report["concurrency"] == 16
    for case in CASES:
        entry = report[case]
        for key in CASE_KEYS:
            assert key in entry, (case, key)
        assert entry["cps"] > 0, (case, entry)
        assert entry["c1_cps"] > 0, (case, entry)
        assert entry["first_tenth_cps"] >= 0 and entry["last_tenth_cps"] >= 0
        assert entry["peak_time_wait"] >= 0
        assert entry["cpu"] >= 0 and entry["rss_mb"] > 0
    # The stack holds the TIME-WAITs where it closes first, the kernel where it does.
    assert report["stack_closes_first"]["time_wait_side"] == "stack"
    assert report["stack_closes_first"]["peak_time_wait"] > 0
    assert report["kernel_closes_first"]["time_wait_side"].startswith("kernel")


@needs_kernel
@pytest.mark.kernel
def test_json_with_workers_holds_each_count_beside_kernel_to_kernel() -> None:
    proc = tcpstack("bench", "cps", "--seconds", "1", "--c1-seconds", "1", "--case", "stack_closes_first",
                    "--case", "stack_as_client", "--case", "kernel_to_kernel", "--workers", "1,2", "--json",
                    timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    report = json.loads(proc.stdout)
    assert report["kernel_to_kernel"]["cps"] > 0
    assert set(report["workers"]) == {"1", "2"}
    for count in ("1", "2"):
        for case in ("stack_closes_first", "stack_as_client"):
            entry = report["workers"][count][case]
            assert entry["cps"] > 0 and entry["cpu_us_per_conn"] > 0
            assert entry["misrouted"] == 0
    assert report["workers"]["2"]["stack_closes_first"]["workers"] == 2
    assert report["workers"]["1"]["stack_closes_first"] is not None
    assert report["stack_closes_first"] == report["workers"]["1"]["stack_closes_first"]  # what it held before


@pytest.mark.parametrize("args", [
    ["--seconds", "0"],
    ["--workers", "0"],
    ["--workers", "two"],
    ["--seconds", "abc"],
    ["--seconds", "100000"],
    ["--concurrency", "0"],
    ["--concurrency", "x"],
    ["--case", "nope"],
    ["--ports", "0"],
    ["--bogus"],
])
def test_bad_arguments_give_one_line_and_exit_2(args: list[str]) -> None:
    proc = tcpstack("bench", "cps", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], proc.stderr


def test_bench_without_a_benchmark_is_a_usage_error() -> None:
    proc = tcpstack("bench")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_without_root_one_line_and_exit_1() -> None:
    code = textwrap.dedent(
        """
        import os, sys
        from stack.cli.main import build_parser, main
        # Everything imported while we still may read it (the interpreter's files need not be
        # readable by nobody); the second import inside main() comes from sys.modules.
        build_parser()
        import stack.bench.cps, stack.link.netns
        if os.geteuid() == 0:
            os.setgid(65534); os.setuid(65534)
        sys.exit(main(["bench", "cps", "--seconds", "1"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "root" in lines[0], proc.stderr
    assert proc.stdout == ""
