"""Benchmarks for stack.native: checksum and timer wheel vs the best pure-Python equivalents.

Run: ``.venv/bin/python benchmarks/bench_native.py`` (prints a table; never asserts).
``run()`` returns the same numbers as a dict for other harnesses.

Timer numbers are per operation *including* the Python call (that is what the stack pays):
insert = ``schedule()``, cancel = ``cancel()``, expire = ``advance()`` time / timers fired.
The heapq baseline uses lazy cancellation (the usual asyncio-style design): cancel marks an
entry dead in O(1) and dead entries are skipped when they reach the top of the heap.
"""

from __future__ import annotations

import heapq
import os
import random
import struct
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Allow `python benchmarks/bench_native.py` from anywhere in a checkout.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack.native import TimerWheel, internet_checksum

# ---- checksum --------------------------------------------------------------------------------


def py_checksum(data: bytes) -> int:
    """Fastest pure-Python RFC 1071 checksum we know: the big-endian integer mod 0xffff.

    2^16 == 1 (mod 0xffff), so the one's-complement sum is the number mod 0xffff, with 0xffff
    standing in for a residue of 0 unless the data is all zero. int.from_bytes and bigint % are
    both C loops, so this beats summing 16-bit words by a wide margin.
    """
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and data.count(0) != len(data):
        s = 0xFFFF
    return ~s & 0xFFFF


def py_checksum_words(data: bytes) -> int:
    """The textbook version (sum of struct-unpacked words), for reference."""
    if len(data) & 1:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _best_ns(fn: Callable[[], object], min_time: float = 0.2) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(number, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=5, number=number)) / number * 1e9


def bench_checksum(sizes: Sequence[int] = (1460, 65536)) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for size in sizes:
        data = os.urandom(size)
        ba = bytearray(data)
        assert internet_checksum(data) == py_checksum(data) == py_checksum_words(data)
        native = _best_ns(partial(internet_checksum, data))
        native_ba = _best_ns(partial(internet_checksum, ba))
        pure = _best_ns(partial(py_checksum, data))
        words = _best_ns(partial(py_checksum_words, data))
        out[str(size)] = {
            "native_ns": native,
            "native_GBps": size / native,
            "native_bytearray_ns": native_ba,
            "python_ns": pure,
            "python_GBps": size / pure,
            "python_words_ns": words,
            "speedup": pure / native,
        }
    return out


# ---- timers ----------------------------------------------------------------------------------


class HeapTimers:
    """heapq baseline with lazy cancel; same interface as TimerWheel."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._seq = 0

    def schedule(self, deadline: float, user_id: int) -> list[Any]:
        entry = [deadline, self._seq, user_id, True]
        self._seq += 1
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: list[Any]) -> bool:
        alive: bool = entry[3]
        entry[3] = False
        return alive

    def advance(self, now: float) -> list[int]:
        heap, pop, fired = self._heap, heapq.heappop, []
        while heap and heap[0][0] <= now:
            entry = pop(heap)
            if entry[3]:
                entry[3] = False
                fired.append(entry[2])
        return fired


def _time_timers(make: Callable[[], Any], deadlines: list[float], cancel_frac: float) -> dict[str, float]:
    n = len(deadlines)
    horizon = max(deadlines) + 1.0

    # insert + cancel: every timer scheduled, then every timer cancelled, in random order (as
    # connections come and go; at 10^6 timers that is mostly cache misses) and in insertion order.
    res: dict[str, float] = {}
    order = list(range(n))
    random.Random(1).shuffle(order)
    for label, perm in (("cancel_ns", order), ("cancel_seq_ns", None)):
        t = make()
        schedule = t.schedule
        t0 = time.perf_counter_ns()
        handles = [schedule(d, i) for i, d in enumerate(deadlines)]
        t1 = time.perf_counter_ns()
        victims = handles if perm is None else [handles[i] for i in perm]
        cancel = t.cancel
        t2 = time.perf_counter_ns()
        for h in victims:
            cancel(h)
        t3 = time.perf_counter_ns()
        res["insert_ns"] = min(res.get("insert_ns", float("inf")), (t1 - t0) / n)
        res[label] = (t3 - t2) / n
        t.advance(horizon)  # the heap pays for its dead entries here; not part of cancel's cost
        del t, handles, victims

    # expire: fill, cancel a fraction (as TCP does with most RTO/delayed-ACK timers), then fire
    # the rest, once in a single batch and once stepping a 10 ms clock.
    for label, step in (("expire_ns", None), ("expire_stepped_ns", 0.01)):
        t = make()
        hs = [t.schedule(d, i) for i, d in enumerate(deadlines)]
        keep_every = round(1 / (1 - cancel_frac)) if cancel_frac else 1  # 0.9 -> keep 1 in 10
        for i in range(n):
            if i % keep_every:
                t.cancel(hs[i])
        del hs
        fired = 0
        t0 = time.perf_counter_ns()
        if step is None:
            fired = len(t.advance(horizon))
        else:
            now, advance = 0.0, t.advance
            while now < horizon:
                now += step
                fired += len(advance(now))
        res[label] = (time.perf_counter_ns() - t0) / max(fired, 1)
        del t
    return res


def bench_timers(
    counts: Sequence[int] = (100_000, 1_000_000), cancel_frac: float = 0.9, spread: float = 60.0
) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for n in counts:
        rng = random.Random(n)
        deadlines = [rng.uniform(0.0, spread) for _ in range(n)]
        out[str(n)] = {
            "wheel": _time_timers(TimerWheel, deadlines, 0.0),
            "wheel_cancel90": _time_timers(TimerWheel, deadlines, cancel_frac),
            "heapq": _time_timers(HeapTimers, deadlines, 0.0),
            "heapq_cancel90": _time_timers(HeapTimers, deadlines, cancel_frac),
        }
    return out


def run(
    checksum_sizes: Sequence[int] = (1460, 65536), timer_counts: Sequence[int] = (100_000, 1_000_000)
) -> dict[str, Any]:
    return {"checksum": bench_checksum(checksum_sizes), "timers": bench_timers(timer_counts)}


def _print(results: dict[str, Any]) -> None:
    print("checksum (internet_checksum on bytes; best of 5)")
    print(
        f"  {'size':>7} {'native ns':>10} {'GB/s':>7} {'bytearray ns':>13} {'py ns':>10} {'py GB/s':>8}"
        f" {'py words ns':>12} {'speedup':>8}"
    )
    for size, r in results["checksum"].items():
        print(
            f"  {size:>7} {r['native_ns']:10.0f} {r['native_GBps']:7.2f} {r['native_bytearray_ns']:13.0f}"
            f" {r['python_ns']:10.0f} {r['python_GBps']:8.2f} {r['python_words_ns']:12.0f}"
            f" {r['speedup']:7.1f}x"
        )
    print("\ntimers (ns per op incl. Python call; expire = per fired timer; deadlines U(0, 60 s))")
    print(
        f"  {'timers':>9} {'impl':<15} {'insert':>8} {'cancel':>8} {'cancel seq':>11} {'expire':>8} {'expire@10ms':>12}"
    )
    for n, impls in results["timers"].items():
        for impl, r in impls.items():
            print(
                f"  {n:>9} {impl:<15} {r['insert_ns']:8.0f} {r['cancel_ns']:8.0f} {r['cancel_seq_ns']:11.0f}"
                f" {r['expire_ns']:8.0f} {r['expire_stepped_ns']:12.0f}"
            )
    print("  (cancel: random order; cancel seq: insertion order; *_cancel90: 90% of timers cancelled")
    print("   before expiry, so expire is charged per timer that fired, dead heap entries included)")


if __name__ == "__main__":
    _print(run())
