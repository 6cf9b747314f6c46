"""One capture from many workers: their pcap and trace parts merged in time order.

Each worker process (stack.runtime.workers) records what crossed its own queue into a part file of
its own; the times in all of them come from the one monotonic clock of the machine turned into wall
time, so sorting by time interleaves them as they happened (ties keep each worker's own order, the
lower worker first); then the parts are deleted.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import sys
from collections.abc import Iterator

from stack.observe.capture import STDOUT
from stack.observe.pcap import PcapFormatError, PcapReader, PcapWriter


def _pcap_records(path: str) -> Iterator[tuple[float, bytes]]:
    try:
        yield from PcapReader(path)
    except (OSError, PcapFormatError):
        return  # a worker that never started wrote nothing: nothing of it to merge


def merge_pcaps(parts: list[str], target: str) -> int:
    """Write every record of `parts` into `target` ("-": standard output) by time; the count."""
    writer = PcapWriter(sys.stdout.buffer if target == STDOUT else target)
    n = 0
    try:
        for when, packet in heapq.merge(*(_pcap_records(p) for p in parts), key=lambda r: r[0]):
            writer.write(packet, when)
            n += 1
    finally:
        writer.close()
        _remove(parts)
    return n


def _trace_lines(path: str) -> Iterator[tuple[float, str]]:
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    yield float(json.loads(line).get("time", 0.0)), line if line.endswith("\n") else line + "\n"
    except OSError:
        return


def merge_traces(parts: list[str], target: str) -> int:
    """Write every line of the JSON-lines `parts` into `target` ("-": standard output) by time."""
    n = 0
    out = sys.stdout if target == STDOUT else open(target, "w")  # noqa: SIM115 -- closed below
    try:
        # Not heapq.merge: within one worker a state change carries the time the core saw it, which
        # can be a little before the segment recorded just ahead of it; a stable sort by time
        # keeps ties in each worker's order.
        lines = [line for part in parts for line in _trace_lines(part)]
        lines.sort(key=lambda r: r[0])
        for _when, line in lines:
            out.write(line)
            n += 1
    finally:
        if out is sys.stdout:
            out.flush()
        else:
            out.close()
        _remove(parts)
    return n


def _remove(parts: list[str]) -> None:
    for path in parts:
        with contextlib.suppress(OSError):
            os.unlink(path)
