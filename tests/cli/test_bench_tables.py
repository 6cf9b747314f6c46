"""The benchmark tables a person reads: one row per case, named columns with units under the names."""

from __future__ import annotations

from stack.bench.bulk import format_result
from stack.bench.cps import format_table

CASE = {"cps": 6812.4, "first_tenth_cps": 6790.0, "last_tenth_cps": 6420.5, "peak_time_wait": 0,
        "time_wait_side": "kernel", "cpu": 0.97, "cpu_us_per_conn": 142.3, "rss_mb": 61.0, "loadgen_cpu": 0.41,
        "c1_cps": 1510.0, "c1_latency_us": {"mean": 640.2}}


def test_cps_table_has_one_row_per_case_and_a_unit_under_each_name() -> None:
    report = {"seconds": 10, "concurrency": 16, "c1_seconds": 2.5, "time_wait_seconds": 60,
              "kernel_closes_first": CASE, "stack_closes_first": {**CASE, "time_wait_side": "stack",
                                                                  "peak_time_wait": 68123, "loadgen_cpu": None},
              "stack_as_client": {**CASE, "stack_counters": {}, "ports_note": "n"}, "kernel_to_kernel": CASE}
    lines = format_table(report).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("case "))
    names, units = lines[head], lines[head + 1]
    rows = lines[head + 2: head + 6]
    assert [r.split()[0] for r in rows] == ["kernel_closes_first", "stack_closes_first", "stack_as_client",
                                            "kernel_to_kernel"]
    for title, unit in (("rate", "conn/s"), ("peak TIME-WAIT", "sockets"), ("stack CPU", "cores"),
                        ("CPU per conn", "us"), ("stack RSS", "MB"), ("latency at c=1", "us, mean")):
        assert title in names and unit in units
        # The unit ends where its column's name ends: numbers are right-aligned under both.
        assert names.index(title) + len(title) == units.index(unit) + len(unit)
    stack_row = rows[1]
    assert "68,123" in stack_row and stack_row.split()[5] == "stack"
    assert names.index("peak TIME-WAIT") + len("peak TIME-WAIT") == stack_row.index("68,123") + len("68,123")
    assert " - " in stack_row + " "  # a value not measured


def test_bulk_tables() -> None:
    case = {"to_stack_MBps": 1012.3, "from_stack_MBps": 730.1, "to_stack_cpu": 1.0, "from_stack_cpu": 0.98,
            "to_stack_retransmits": 0, "from_stack_retransmits": 3, "to_stack_seconds": 0.066,
            "from_stack_seconds": 0.092}
    result = {"megabytes": 64, "faults": ["drop 1% seed=3"],
              "mtu1500": case, "mtu1500_no_offload": case, "mtu65000": case,
              "kernel_to_kernel": {"MBps": 4100.0, "path": "loopback in the namespace"},
              "raw_tun": {"mtu1500": {"mtu": 1500, "MBps": 900.5, "note": "read + write-back, no TCP"}}}
    lines = format_result(result)
    first = lines.index(next(line for line in lines if line.startswith("case")))
    assert "to the stack" in lines[first] and "MB/s" in lines[first + 1] and "segments" in lines[first + 1]
    assert [line.split()[0] for line in lines[first + 2: first + 5]] == ["mtu1500", "mtu1500_no_offload", "mtu65000"]
    assert lines[first + 2].split()[1:] == ["1,012.3", "730.1", "0.066", "0.092", "1.00", "0.98", "3"]
    assert "faults: drop 1% seed=3" in lines[:first]
    refs = lines[lines.index("references, without tcpstack:") + 2:]
    assert refs[0].split()[:2] == ["case", "throughput"] and refs[1].split() == ["MB/s"]
    assert refs[2].startswith("kernel_to_kernel") and "4,100.0" in refs[2] and refs[3].startswith("raw_tun mtu1500")
