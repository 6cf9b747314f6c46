"""`make bench`: every benchmark, printed (measured, never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def main() -> int:
    import bench_core
    import bench_native
    import bench_runtime_cps
    import bench_wire

    section("native: checksum and timer wheel")
    bench_native._print(bench_native.run())
    section("wire: IPv4+TCP header parse/build")
    bench_wire.main()
    section("core")
    bench_core.main()
    section("runtime + wire + core per short connection (kernel-like peer in memory)")
    bench_runtime_cps.main(["--runs", "3", "--connections", "3000"])
    from stack.link.tun import kernel_link_available

    ok, reason = kernel_link_available()
    if not ok:
        section("kernel benchmarks skipped")
        print(reason)
        return 0
    seconds = os.environ.get("BENCH_SECONDS", "10")
    for name, argv in (("connections per second", ["bench", "cps", "--seconds", seconds]),
                       ("bulk throughput", ["bench", "bulk"])):
        section(name)
        done = subprocess.run([sys.executable, "-m", "stack", *argv])
        if done.returncode == 2:
            print(f"(tcpstack {' '.join(argv[:2])} is not available in this version)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
