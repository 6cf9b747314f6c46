"""Over TUN, one peer floods out-of-order segments (SegmentSmack, CVE-2018-5390) and a bystander's
echo connection on the same stack keeps short round trips.

The flooder (stack.bench.hostile, a raw socket in a process of its own inside the stack's
namespace) sends 1-byte segments at every other sequence number at 1,000/s; each is a new
out-of-order block. Before the out-of-order queue was rewritten, this flood took the bystander's
round trips to seconds (benchmarks/bench_ooo_tun.py: 9.5 s at 20 s of flood); the limit here is
generous, the point being that it stays bounded.
"""

from __future__ import annotations

import asyncio

import pytest

from stack.bench.hostile import flood_experiment
from tests.kernel.conftest import requires_kernel_link

pytestmark = [requires_kernel_link, pytest.mark.kernel]
RATE = 1000
SECONDS = 3.0
RTT_LIMIT = 1.0


def test_a_bystander_keeps_short_round_trips_under_an_out_of_order_flood() -> None:
    result = asyncio.run(asyncio.wait_for(flood_experiment(RATE, SECONDS), 60))
    assert result.sent == RATE * SECONDS
    # Every flood segment reached the stack and was queued out of order (the budget holds them all).
    assert result.counters["TCPOFOQueue"] == result.sent and result.counters["InternalErrors"] == 0
    assert len(result.rtts) >= 30  # the echo kept going every 50 ms
    assert result.max_rtt < RTT_LIMIT, f"bystander round trip of {result.max_rtt * 1e3:.0f} ms"
