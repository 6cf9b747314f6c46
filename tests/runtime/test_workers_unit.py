"""The pieces of the worker pool that need no kernel: the steering function and program, flow
ownership in the host (TCPMisrouted, no RST; local ports), seeds per worker, and the capture merge."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
from pathlib import Path

import pytest

from stack.link.steering import _program, flow_hash, owner
from stack.observe.merge import merge_pcaps, merge_traces
from stack.observe.pcap import PcapWriter, read_pcap
from stack.runtime.workers import all_within, derive_seed, part_path, worker_count
from stack.tcp.config import Config
from stack.tcp.host import Host
from stack.wire.segment import SYN, Segment


def test_flow_hash_is_symmetric_and_spreads_one_server_port_over_workers() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        a, b = rng.randrange(65536), rng.randrange(65536)
        assert flow_hash(a, b) == flow_hash(b, a) < 65536
    # Linux's connect() hands out even ports first: a plain XOR would put all of them on one worker.
    even = [owner(p, 80, 2) for p in range(32768, 40000, 2)]
    assert 0.4 < sum(even) / len(even) < 0.6
    four = [owner(p, 443, 4) for p in range(10000, 20000)]
    assert all(0.2 < four.count(w) / len(four) < 0.3 for w in range(4))


def test_the_steering_program_is_whole_instructions_ending_in_exit() -> None:
    code = _program()
    assert len(code) % 8 == 0
    assert code[-8] == 0x95  # BPF_EXIT
    n = len(code) // 8
    for i in range(n):
        op, _regs, off, _imm = struct.unpack_from("<BBhi", code, 8 * i)
        if op & 0x07 == 0x05 and op != 0x95:  # a jump (class BPF_JMP) lands inside the program
            assert 0 <= i + 1 + off < n, (i, hex(op), off)


def test_a_flow_of_another_worker_is_counted_and_never_reset() -> None:
    host = Host("198.18.0.2", Config())
    host.owns_flow = lambda lport, rport: owner(lport, rport, 2) == 0
    host.listen(80)
    theirs = next(p for p in range(40000, 41000) if owner(80, p, 2) == 1)
    seg = Segment("198.18.0.1", "198.18.0.2", theirs, 80, seq=1, ack=0, flags=SYN, window=65535)
    host.on_segment(seg, 0.0)
    out = host.take(0.0)
    assert out.segments == []  # neither a SYN-ACK nor a RST: the other worker answers it
    assert host.counters["TCPMisrouted"] == 1
    mine = next(p for p in range(40000, 41000) if owner(80, p, 2) == 0)
    host.on_segment(Segment("198.18.0.1", "198.18.0.2", mine, 80, seq=1, ack=0, flags=SYN, window=65535), 0.0)
    assert len(host.take(0.0).segments) == 1  # its own flow gets the SYN-ACK


def test_local_ports_a_worker_picks_are_its_own() -> None:
    for index in (0, 1):
        host = Host("198.18.0.2", Config())
        host.owns_flow = lambda lport, rport, i=index: owner(lport, rport, 2) == i  # type: ignore[misc]
        for _ in range(50):
            handle = host.connect("198.18.0.1", 9000, 0.0)
            assert owner(handle.local_address[1], 9000, 2) == index


def test_worker_seeds_differ_per_worker_and_repeat_per_run() -> None:
    assert derive_seed(7, 0) == derive_seed(7, 0)
    assert len({derive_seed(7, i) for i in range(8)}) == 8
    assert derive_seed(7, 1) != derive_seed(8, 1)


def test_worker_count_and_part_paths() -> None:
    assert worker_count("3") == 3 and worker_count("auto") >= 1
    with pytest.raises(ValueError):
        worker_count("0")
    assert part_path("/tmp/x/run.pcap", 1) == "/tmp/x/.run.pcap.w1"


def test_merge_puts_every_workers_records_in_time_order(tmp_path: Path) -> None:
    parts = [str(tmp_path / f"p{i}") for i in range(2)]
    for i, path in enumerate(parts):
        with PcapWriter(path) as w:
            for k in range(5):
                w.write(bytes([i, k]), 100.0 + k * 0.01 + i * 0.005)
    target = tmp_path / "all.pcap"
    assert merge_pcaps(parts, str(target)) == 10
    records = read_pcap(target)
    assert [t for t, _ in records] == sorted(t for t, _ in records)
    assert [p[0] for _, p in records] == [0, 1] * 5
    assert not any(Path(p).exists() for p in parts)

    lines = [[{"kind": "state", "time": 5.0 + k * 0.01 + i * 0.005, "w": i} for k in range(3)] for i in range(2)]
    lines[0][1]["time"] = 4.0  # a part need not be in order itself
    for i, path in enumerate(parts):
        Path(path).write_text("".join(json.dumps(r) + "\n" for r in lines[i]))
    merge_traces(parts, str(tmp_path / "all.jsonl"))
    times = [json.loads(line)["time"] for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert times == sorted(times) and len(times) == 6


def test_all_within_leaves_nothing_unretrieved_when_cut_short(caplog: pytest.LogCaptureFixture) -> None:
    import gc

    async def main() -> None:
        loop = asyncio.get_running_loop()
        never = [loop.create_future(), loop.create_future()]
        with pytest.raises(TimeoutError):
            await all_within(never, 0.01)
        # Cancelled while waiting, as the benchmark's sampler is at the end of a run.
        waiting = asyncio.ensure_future(all_within([loop.create_future()], 5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        done = [loop.create_future()]
        done[0].set_result(7)
        assert await all_within(done, 1) == [7]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert "never retrieved" not in caplog.text
