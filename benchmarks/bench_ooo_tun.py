"""Out-of-order flood over TUN: a bystander's echo round trips while one peer floods. Printed, never asserted.

One kernel connection sends 1-byte segments at every other sequence number through a raw socket
(the SegmentSmack class, CVE-2018-5390) at `--rate` segments/s for `--seconds`; another kernel
connection times a 64-byte echo through the same stack every 50 ms (stack.bench.hostile).

    sudo .venv/bin/python benchmarks/bench_ooo_tun.py [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.bench.hostile import flood_experiment  # noqa: E402
from stack.link.netns import install_signal_handlers  # noqa: E402
from stack.link.tun import kernel_link_available  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="1000", help="flood segments per second (comma-separated: several runs)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    ok, reason = kernel_link_available()
    if not ok:
        print(f"skipped: {reason}")
        return 0
    install_signal_handlers()
    for rate in (int(r) for r in args.rate.split(",")):
        r = asyncio.run(flood_experiment(rate, args.seconds))
        print(f"out-of-order flood at {rate:,}/s for {args.seconds:g} s ({r.sent:,} segments): bystander echo RTT "
              f"max {r.max_rtt * 1e3:,.1f} ms, p99 {r.percentile(0.99) * 1e3:,.1f} ms, "
              f"median {r.percentile(0.5) * 1e3:,.2f} ms over {len(r.rtts)} round trips; {r.counters}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
