"""Stack CPU per connection over TUN, best of several short runs. Printed, never asserted.

`tcpstack bench cps` reports one run; on a shared machine its wall-clock rate moves with the
neighbours, and even CPU per connection picks up cache and scheduling noise. This runs each case
`--runs` times for `--seconds` and prints the lowest CPU µs per connection (user and system apart:
system time is mostly the kernel's receive path of what the stack writes, run inside write(2)).
Use it to measure one change: same machine state, before and after.

    sudo .venv/bin/python benchmarks/bench_cps_cpu.py [--runs 5] [--seconds 2] [--case stack_closes_first]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.bench.cps import CASES, run_case  # noqa: E402

STACK_CASES = CASES[:3]


def per_conn(result: dict[str, Any]) -> tuple[float, float, float]:
    """(total, user, system) CPU µs per connection of one run (cpu_user and cpu_sys are shares of
    the same wall time as cpu)."""
    total = result["cpu_us_per_conn"] or 0.0
    share = result["cpu"] or 1.0
    return total, total * result["cpu_user"] / share, total * result["cpu_sys"] / share


async def measure(case: str, runs: int, seconds: float, concurrency: int) -> dict[str, Any]:
    best: tuple[float, float, float] | None = None
    rates = []
    for _ in range(runs):
        result = await run_case(case, seconds, concurrency)
        us = per_conn(result)
        rates.append(result["cps"])
        if best is None or us[0] < best[0]:
            best = us
    assert best is not None
    return {"case": case, "us": best[0], "user_us": best[1], "sys_us": best[2], "best_cps": max(rates)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--case", action="append", choices=STACK_CASES)
    args = ap.parse_args()
    print(f"{'case':22} {'CPU us/conn':>12} {'user':>8} {'sys':>8} {'best conn/s':>12}   (best of {args.runs})")
    for case in args.case or STACK_CASES:
        r = asyncio.run(measure(case, args.runs, args.seconds, args.concurrency))
        print(f"{case:22} {r['us']:12.1f} {r['user_us']:8.1f} {r['sys_us']:8.1f} {r['best_cps']:12,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
