"""Classic libpcap capture files of raw IP packets (IPv4 and IPv6), written without a syscall per packet.

The format is the original one (not pcapng) because every tool opens it: `tcpdump -r`, Wireshark,
scapy's `rdpcap`. Layout (https://www.tcpdump.org/manpages/pcap-savefile.5.html)::

    global header, 24 octets:  magic a1b2c3d4 | major 2 | minor 4 | thiszone 0 | sigfigs 0
                               | snaplen | linktype
    per packet, 16 octets:     ts_sec | ts_usec | incl_len | orig_len   then incl_len octets

Link type 101 (LINKTYPE_RAW) means each record is a bare IP packet with no link-layer header,
which is exactly what a TUN device delivers and what `stack.wire.build.build_packet` returns.
Fields are written little-endian; readers recognise the byte order from the magic.

The writer keeps records in memory and hands them to the OS once `flush_bytes` have piled up,
on `flush()` and on `close()`. A capture of a test run is a few hundred packets, so the default
of 64 KiB means one write per test instead of one per packet; a crash loses at most that much.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from stack.observe._stream import OwnedStream

LINKTYPE_RAW = 101
"""Raw IPv4/IPv6, no link-layer header (DLT_RAW on Linux maps to 101 in files)."""

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
DEFAULT_SNAPLEN = 262144  # what tcpdump uses: never truncates an IPv4 packet (max 65535)
DEFAULT_FLUSH_BYTES = 64 * 1024

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_MAX_TS_SEC = 0xFFFFFFFF


def _split_time(when: float) -> tuple[int, int]:
    """Seconds -> (ts_sec, ts_usec), rounded to the nearest microsecond.

    Rounding the total first (rather than the fraction alone) keeps 1.9999996 from becoming
    (1, 1000000), which is not a valid timestamp.
    """
    if when != when or when < 0:  # NaN or negative: pcap timestamps are unsigned
        raise ValueError(f"pcap timestamp must be a non-negative number of seconds, got {when!r}")
    total_us = round(when * 1_000_000)
    sec, usec = divmod(total_us, 1_000_000)
    if sec > _MAX_TS_SEC:
        raise ValueError(f"pcap timestamp {when!r} does not fit in 32-bit seconds")
    return sec, usec


class PcapWriter(OwnedStream):
    """Append packets to a classic pcap file (LINKTYPE_RAW, microsecond timestamps).

    `target` is a path (the file is created/truncated and owned by the writer) or an already open
    binary file (written to, flushed on close, but left open: the caller owns it).
    `when` in `write` is any float seconds: UNIX time from a real run, or the simulated clock of a
    test (which starts near 0, and tcpdump then prints dates in 1970 -- harmless).
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        linktype: int = LINKTYPE_RAW,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
    ) -> None:
        if snaplen <= 0:
            raise ValueError("snaplen must be positive")
        self.snaplen = snaplen
        self.linktype = linktype
        self.flush_bytes = flush_bytes
        self.packets_written = 0
        self._buf = bytearray()
        self._owns: bool
        self._stream: BinaryIO | None
        if isinstance(target, (str, os.PathLike)):
            # buffering=0: our own bytearray is the buffer, so a second copy in BufferedWriter
            # would only add a memcpy.
            self._stream = open(target, "wb", buffering=0)  # noqa: SIM115 -- closed in close()
            self._owns = True
        else:
            self._stream = target
            self._owns = False
        self._buf += _GLOBAL_HEADER.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, snaplen, linktype)

    @property
    def closed(self) -> bool:
        return self._stream is None

    def write(self, packet: bytes | bytearray | memoryview, when: float) -> None:
        """Record one packet seen at `when` seconds. Longer than snaplen: kept truncated."""
        if self._stream is None:
            raise ValueError("write to a closed PcapWriter")
        sec, usec = _split_time(when)
        orig_len = len(packet)
        incl_len = min(orig_len, self.snaplen)
        buf = self._buf
        buf += _RECORD_HEADER.pack(sec, usec, incl_len, orig_len)
        buf += packet if incl_len == orig_len else bytes(packet[:incl_len])
        self.packets_written += 1
        if len(buf) >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Hand everything buffered to the OS (one write call)."""
        if self._stream is None or not self._buf:
            return
        view = memoryview(self._buf)
        # A raw (unbuffered) file may write less than asked; loop until all of it is out.
        while view:
            written = self._stream.write(view)
            if written is None:  # non-blocking file with nothing written: not supported
                raise BlockingIOError("pcap target would block")
            view = view[written:]
        view.release()
        self._buf.clear()
        if not self._owns:
            self._stream.flush()


class PcapFormatError(ValueError):
    """The file is not a classic pcap file, or is cut short in a header."""


class PcapReader:
    """Iterate (timestamp, packet bytes) over a classic pcap file of either byte order.

    Microsecond and nanosecond files are both read; timestamps come back as float seconds.
    A record cut short at the end of the file (a capture killed mid-write) ends the iteration
    quietly, as tcpdump does, and sets `truncated`.
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                data = f.read()
        else:
            data = source.read()
        self._data = data
        if len(data) < _GLOBAL_HEADER.size:
            raise PcapFormatError("file shorter than a pcap global header")
        magic_le = struct.unpack_from("<I", data)[0]
        magic_be = struct.unpack_from(">I", data)[0]
        if magic_le in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            self._endian, magic = "<", magic_le
        elif magic_be in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            self._endian, magic = ">", magic_be
        else:
            raise PcapFormatError(f"not a classic pcap file (magic {magic_le:#010x})")
        self._ts_divisor = 1_000_000_000 if magic == PCAP_MAGIC_NSEC else 1_000_000
        _, self.version_major, self.version_minor, _, _, self.snaplen, self.linktype = struct.unpack_from(
            self._endian + "IHHiIII", data
        )
        self.truncated = False

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        data = self._data
        record = struct.Struct(self._endian + "IIII")
        pos = _GLOBAL_HEADER.size
        while pos < len(data):
            if pos + record.size > len(data):
                self.truncated = True
                return
            sec, frac, incl_len, _orig_len = record.unpack_from(data, pos)
            pos += record.size
            if pos + incl_len > len(data):
                self.truncated = True
                return
            yield sec + frac / self._ts_divisor, data[pos : pos + incl_len]
            pos += incl_len


def read_pcap(source: str | os.PathLike[str] | BinaryIO) -> list[tuple[float, bytes]]:
    """All (timestamp, packet) records of a classic pcap file."""
    return list(PcapReader(source))
