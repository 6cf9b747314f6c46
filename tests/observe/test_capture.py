"""Live capture and trace of the asyncio runtime: complete in every path, in wire order, on disk as
the run goes. Two stacks on an in-loop pipe: what one stack's pcap says it sent must be exactly what
the other's pcap says it received, whatever `delay`/`reorder` rules held back. No kernel needed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stack.faults import FaultEngine
from stack.link.pipe import pipe_pair
from stack.observe.pcap import read_pcap
from stack.observe.trace import read_trace
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.wire import parse_packet

CLIENT, SERVER = "198.18.0.1", "198.18.0.2"


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def exchange(client: Stack, n: int = 3) -> None:
    """Three messages echoed one by one, then the client closes first (the server second)."""
    r, w = await client.open_connection(SERVER, 7)
    for i in range(n):
        w.write(f"message {i}".encode())
        assert await r.readexactly(9) == f"message {i}".encode()
    w.write_eof()
    assert await r.read() == b""
    w.close()


def from_server(path: Path) -> list[tuple[float, bytes]]:
    return [(t, p) for t, p in read_pcap(path) if parse_packet(p).src_addr == SERVER]


@pytest.mark.parametrize("rules", ["reorder out hold=1", "delay out 30ms", "reorder out hold=1\ndelay out 20ms",
                                   "delay out 20ms jitter=15ms seed=4"])
def test_held_segments_are_captured_when_they_cross_in_wire_order(tmp_path: Path, rules: str) -> None:
    sent_pcap, got_pcap, trace = tmp_path / "server.pcap", tmp_path / "client.pcap", tmp_path / "server.jsonl"
    observed: list[tuple[str, float, object]] = []

    async def main() -> None:
        a_end, b_end = pipe_pair()
        cfg = Config(msl=0.2, secret=b"c" * 16)
        client = Stack(a_end, addr=CLIENT, config=cfg, pcap=got_pcap)
        server = Stack(b_end, addr=SERVER, config=cfg, faults=FaultEngine(rules, seed=1), pcap=sent_pcap,
                       trace=trace)
        server.observers.append(lambda kind, when, *rest: observed.append((kind, when, rest[0])))
        async with client, server:
            await server.start_server(echo, 7)
            await exchange(client)
            await asyncio.sleep(1.2)  # reorder's timeout releases the last held segment; 2MSL passes

    asyncio.run(asyncio.wait_for(main(), 30))
    sent, received = from_server(sent_pcap), from_server(got_pcap)
    assert len(sent) >= 5  # SYN-ACK, three echoes, FIN at least
    # Every segment the server put on the wire is in its capture, in the order the client got them.
    assert [p for _, p in sent] == [p for _, p in received]
    times = [t for t, _ in sent]
    assert times == sorted(times)
    # The observers saw them too, at the time they crossed, and the trace says which were held.
    outs = [(when, seg) for kind, when, seg in observed if kind == "out"]
    assert len(outs) == len(sent)
    segments = [r for r in read_trace(trace) if r["kind"] == "segment" and r["dir"] == "out"]
    assert len(segments) == len(sent)
    held = "reorder" if "reorder" in rules else "delay"
    assert sum(1 for r in segments if r["fault"] and held in r["fault"]) >= len(sent) // 2


def test_drops_are_marked_in_the_trace_and_absent_from_the_pcap(tmp_path: Path) -> None:
    pcap, trace = tmp_path / "s.pcap", tmp_path / "s.jsonl"

    async def main() -> None:
        a_end, b_end = pipe_pair()
        cfg = Config(msl=0.2, secret=b"d" * 16, rto_min=0.05, rto_initial=0.1)
        client = Stack(a_end, addr=CLIENT, config=cfg)
        server = Stack(b_end, addr=SERVER, config=cfg, faults=FaultEngine("drop out flags=F nth=1"), pcap=pcap,
                       trace=trace)
        async with client, server:
            await server.start_server(echo, 7)
            await exchange(client, 1)
            await asyncio.sleep(0.6)

    asyncio.run(asyncio.wait_for(main(), 30))
    records = read_trace(trace)
    dropped = [r for r in records if r["kind"] == "segment" and r["fault"] == "drop"]
    assert len(dropped) == 1 and dropped[0]["dir"] == "out" and "[F" in dropped[0]["segment"]
    assert [r["detail"] for r in records if r["kind"] == "fault" and r["fault"] == "drop"] == ["drop out flags=F nth=1"]
    fins = [parse_packet(p) for _, p in from_server(pcap) if parse_packet(p).flags & 1]
    assert len(fins) == 1  # only the retransmission crossed
    # The trace's segment records match the capture one for one, in time order.
    sent = [r for r in records if r["kind"] == "segment" and r["dir"] == "out" and r["fault"] != "drop"]
    assert len(sent) == len(from_server(pcap))
    assert [r["time"] for r in sent] == sorted(r["time"] for r in sent)


def test_corrupted_packets_are_captured_as_they_crossed(tmp_path: Path) -> None:
    pcap = tmp_path / "c.pcap"

    async def main() -> None:
        a_end, b_end = pipe_pair()
        cfg = Config(msl=0.2, secret=b"e" * 16, rto_min=0.05, rto_initial=0.1)
        client = Stack(a_end, addr=CLIENT, config=cfg)
        server = Stack(b_end, addr=SERVER, config=cfg, faults=FaultEngine("corrupt in payload=yes nth=1"), pcap=pcap)
        async with client, server:
            await server.start_server(echo, 7)
            await exchange(client, 1)
            assert server.host is not None and server.host.counters["InCsumErrors"] == 1

    asyncio.run(asyncio.wait_for(main(), 30))
    from stack.wire import MalformedPacket

    bad = 0
    for _, packet in read_pcap(pcap):
        try:
            parse_packet(packet)
        except MalformedPacket:
            bad += 1
    assert bad == 1  # the corrupt segment is on the wire, as tcpdump would show it


def test_files_are_written_while_the_stack_runs(tmp_path: Path) -> None:
    """No buffering until the end: after each wake-up the files hold what happened."""
    pcap, trace = tmp_path / "live.pcap", tmp_path / "live.jsonl"

    async def main() -> None:
        a_end, b_end = pipe_pair()
        cfg = Config(msl=0.2, secret=b"f" * 16)
        client = Stack(a_end, addr=CLIENT, config=cfg)
        server = Stack(b_end, addr=SERVER, config=cfg, pcap=pcap, trace=trace)
        async with client, server:
            assert pcap.stat().st_size == 24  # the header is there from the start
            await server.start_server(echo, 7)
            r, w = await client.open_connection(SERVER, 7)
            w.write(b"live")
            assert await r.readexactly(4) == b"live"
            await asyncio.sleep(0.01)
            on_disk = read_pcap(pcap)  # read while the stack runs, as `tcpdump -r` would
            assert len(on_disk) >= 4
            assert any(json.loads(line)["kind"] == "state" for line in trace.read_text().splitlines())
            w.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_kill_9_leaves_a_readable_capture(tmp_path: Path) -> None:
    pcap = tmp_path / "killed.pcap"
    script = textwrap.dedent(f"""
        import asyncio, sys
        from stack.link.pipe import pipe_pair
        from stack.runtime import Stack
        from stack.tcp.config import Config

        async def echo(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)

        async def main():
            a_end, b_end = pipe_pair()
            client = Stack(a_end, addr="{CLIENT}", config=Config(secret=b"k" * 16))
            server = Stack(b_end, addr="{SERVER}", config=Config(secret=b"k" * 16), pcap={str(pcap)!r})
            async with client, server:
                await server.start_server(echo, 7)
                r, w = await client.open_connection("{SERVER}", 7)
                w.write(b"ping")
                await r.readexactly(4)
                print("exchanged", flush=True)
                await asyncio.sleep(60)

        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "exchanged"
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    packets = read_pcap(pcap)
    assert len(packets) >= 5  # SYN, SYN-ACK, ACK, data, echo: all on disk before the kill
