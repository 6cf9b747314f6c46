"""PcapWriter output is a classic pcap file other tools read back byte for byte."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.observe.pcap import (
    LINKTYPE_RAW,
    PCAP_MAGIC_NSEC,
    PcapFormatError,
    PcapReader,
    PcapWriter,
    read_pcap,
)
from stack.wire.build import build_packet
from stack.wire.segment import ACK, FIN, PSH, SYN, Segment, TcpOptions

T0 = 1_700_000_000.0  # a real UNIX time, to exercise full-size timestamps


def close_packets() -> list[tuple[float, bytes]]:
    """A handshake, one data segment and a four-way close, as complete IPv4 packets."""
    a, b = 1000, 5000

    def out(seq: int, ack: int, flags: int, payload: bytes = b"", **kw: object) -> Segment:
        return Segment("10.0.0.2", "10.0.0.1", 40000, 7, seq, ack, flags, 64240, payload=payload, **kw)  # type: ignore[arg-type]

    def inn(seq: int, ack: int, flags: int) -> Segment:
        return Segment("10.0.0.1", "10.0.0.2", 7, 40000, seq, ack, flags, 65160)

    segs = [
        out(a, 0, SYN, options=TcpOptions(mss=1460, wscale=7, sack_permitted=True)),
        inn(b, a + 1, SYN | ACK),
        out(a + 1, b + 1, ACK),
        out(a + 1, b + 1, PSH | ACK, b"hello"),
        inn(b + 1, a + 6, ACK),
        out(a + 6, b + 1, FIN | ACK),
        inn(b + 1, a + 7, ACK),
        inn(b + 1, a + 7, FIN | ACK),
        out(a + 7, b + 2, ACK),
    ]
    return [(T0 + i * 0.000125 + 0.0000004, build_packet(s)) for i, s in enumerate(segs)]


def usec(t: float) -> int:
    return round(t * 1_000_000)


def test_global_header_is_classic_raw_ip(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    with PcapWriter(path):
        pass
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", path.read_bytes())
    assert (magic, major, minor, zone, sigfigs, linktype) == (0xA1B2C3D4, 2, 4, 0, 0, LINKTYPE_RAW)
    assert snaplen >= 65535


def test_scapy_reads_same_bytes_and_timestamps(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP  # importing registers link type 101 -> IP with scapy
    from scapy.utils import rdpcap

    packets = close_packets()
    path = tmp_path / "close.pcap"
    with PcapWriter(path) as w:
        for when, pkt in packets:
            w.write(pkt, when)
    read = rdpcap(str(path))
    assert len(read) == len(packets)
    for (when, pkt), got in zip(packets, read, strict=True):
        assert bytes(got) == pkt
        assert usec(float(got.time)) == usec(when)
    # scapy understood link type 101 as bare IP, not as some link-layer frame.
    assert isinstance(read[0], IP)
    assert read[0][TCP].flags == "S"
    assert read[0][IP].dst == "10.0.0.1"


def test_read_pcap_round_trip(tmp_path: Path) -> None:
    packets = close_packets()
    path = tmp_path / "close.pcap"
    with PcapWriter(path) as w:
        for when, pkt in packets:
            w.write(pkt, when)
    got = read_pcap(path)
    assert [p for _, p in got] == [p for _, p in packets]
    assert [usec(t) for t, _ in got] == [usec(t) for t, _ in packets]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed (apt-get install tcpdump)")
def test_tcpdump_lists_the_packets(tmp_path: Path) -> None:
    packets = close_packets()
    path = tmp_path / "close.pcap"
    with PcapWriter(path) as w:
        for when, pkt in packets:
            w.write(pkt, when)
    run = subprocess.run(
        ["tcpdump", "-r", str(path), "-nn", "-tt"], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "RAW" in run.stderr  # "reading from file ..., link-type RAW (Raw IP)"
    lines = run.stdout.splitlines()
    assert len(lines) == len(packets)
    assert "10.0.0.2.40000 > 10.0.0.1.7: Flags [S]" in lines[0]
    assert "Flags [S.]" in lines[1]
    assert "Flags [P.]" in lines[3] and "length 5" in lines[3]
    assert "Flags [F.]" in lines[5] and "Flags [F.]" in lines[7]
    assert lines[0].startswith(f"{packets[0][0]:.6f}")


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed (apt-get install tcpdump)")
def test_tcpdump_reads_ipv6_and_ipv4_in_one_raw_capture(tmp_path: Path) -> None:
    # LINKTYPE_RAW carries either family: the reader tells them apart by the version nibble.
    syn6 = Segment("2001:2::1", "2001:2::2", 40000, 80, 1, 0, SYN, 64800, options=TcpOptions(mss=1440))
    ack6 = Segment("2001:2::2", "2001:2::1", 80, 40000, 7, 2, SYN | ACK, 65535)
    packets = [(T0, build_packet(syn6)), (T0 + 0.001, build_packet(ack6)), close_packets()[0]]
    path = tmp_path / "v6.pcap"
    with PcapWriter(path) as w:
        for when, pkt in packets:
            w.write(pkt, when)
    run = subprocess.run(["tcpdump", "-r", str(path), "-nn", "-v"], capture_output=True, text=True, timeout=30,
                         check=False)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "IP6" in text and "2001:2::1.40000 > 2001:2::2.80: Flags [S]" in text
    assert "mss 1440" in text and "2001:2::2.80 > 2001:2::1.40000: Flags [S.]" in text
    assert "10.0.0.2.40000 > 10.0.0.1.7: Flags [S]" in text
    assert text.count("(correct)") == 3  # tcpdump -v checks each TCP checksum (IPv6 pseudo-header too)


def test_buffered_until_size_or_close(tmp_path: Path) -> None:
    """No write per packet: nothing reaches the file until flush_bytes pile up or close()."""
    pkt = close_packets()[0][1]
    path = tmp_path / "buf.pcap"
    w = PcapWriter(path)
    for i in range(50):
        w.write(pkt, i)
    assert path.stat().st_size == 0
    w.close()
    assert path.stat().st_size == 24 + 50 * (16 + len(pkt))

    path2 = tmp_path / "small.pcap"
    with PcapWriter(path2, flush_bytes=200) as w2:
        w2.write(pkt, 0.0)
        w2.write(pkt, 1.0)
        w2.write(pkt, 2.0)
        size_mid = path2.stat().st_size
        assert size_mid > 0  # crossed 200 buffered bytes: flushed before close
        w2.write(pkt, 3.0)
    assert len(read_pcap(path2)) == 4


def test_binary_stream_target_is_left_open() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf)
    w.write(b"\x45" + bytes(19), 1.5)
    w.close()
    w.close()  # idempotent
    assert not buf.closed
    buf.seek(0)
    assert read_pcap(buf) == [(1.5, b"\x45" + bytes(19))]
    with pytest.raises(ValueError, match="closed"):
        w.write(b"x", 0)


def test_timestamps_round_to_the_microsecond() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write(b"a", 1.9999996)  # rounds up into the next second, not to usec=1000000
        w.write(b"b", 0.0000004)
        w.write(b"c", 12.345678)
    sec_usec = [struct.unpack_from("<II", buf.getvalue(), off) for off in (24, 24 + 17, 24 + 34)]
    assert sec_usec == [(2, 0), (0, 0), (12, 345678)]
    with pytest.raises(ValueError):
        PcapWriter(io.BytesIO()).write(b"x", -1.0)
    with pytest.raises(ValueError):
        PcapWriter(io.BytesIO()).write(b"x", float("nan"))


def test_snaplen_truncates_but_keeps_original_length() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, snaplen=8) as w:
        w.write(bytes(range(20)), 0.0)
    _, _, incl, orig = struct.unpack_from("<IIII", buf.getvalue(), 24)
    assert (incl, orig) == (8, 20)
    buf.seek(0)
    assert read_pcap(buf) == [(0.0, bytes(range(8)))]


def test_reader_handles_big_endian_nanosecond_and_truncated_files() -> None:
    data = struct.pack(">IHHiIII", PCAP_MAGIC_NSEC, 2, 4, 0, 0, 65535, 101)
    data += struct.pack(">IIII", 3, 500_000_000, 2, 2) + b"hi"
    data += struct.pack(">IIII", 4, 0, 10, 10) + b"cut"  # killed mid-write
    reader = PcapReader(io.BytesIO(data))
    assert list(reader) == [(3.5, b"hi")]
    assert reader.truncated and reader.linktype == 101
    with pytest.raises(PcapFormatError):
        PcapReader(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(40)))  # pcapng is not classic pcap


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 4e9, allow_nan=False), st.binary(max_size=300)), max_size=20))
def test_any_packets_round_trip(records: list[tuple[float, bytes]]) -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, flush_bytes=512) as w:
        for when, pkt in records:
            w.write(pkt, when)
    buf.seek(0)
    got = read_pcap(buf)
    assert [p for _, p in got] == [p for _, p in records]
    assert [usec(t) for t, _ in got] == [usec(t) for t, _ in records]
