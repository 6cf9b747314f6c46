"""TUN offloads through the virtio-net header (IFF_VNET_HDR), as wireguard-go, gVisor and
packetdrill use them.

With TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the kernel treats the TUN device as a NIC that can do
TCP segmentation and checksums: toward the stack it hands over whole GSO segments (up to 64 KB of
payload at MTU 1500, checksum left partial), and from the stack it accepts 64 KB segments that it
splits into MSS-sized ones itself. Every packet on the fd then starts with a 10-byte header:

    flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16

in the host's byte order (legacy virtio; x86 and arm64 are little-endian, as assumed here).
IPv4 and IPv6 differ only in the pseudo-header the partial checksum starts from (RFC 9293 §3.1,
RFC 8200 §8.1) and in the GSO type; the stack never sends IPv6 extension headers, and the kernel's
own TCP puts none in front of the segments it hands over, so TCP starts right after the 40 octets.
"""

from __future__ import annotations

import fcntl
import struct

from stack.native import ones_complement_sum
from stack.wire.build import pseudo_header_sum

HEADER = struct.Struct("<BBHHHH")
HEADER_LEN = HEADER.size  # 10
NEEDS_CSUM = 0x01  # VIRTIO_NET_HDR_F_NEEDS_CSUM: the TCP checksum holds only the pseudo-header sum
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
PLAIN = bytes(HEADER_LEN)  # a packet that needs nothing from the kernel

TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
IPV6_HEADER_LEN = 40
TCP_CHECKSUM_OFFSET = 16  # within the TCP header


def enable_offload(fd: int) -> None:
    """Let the kernel hand us and take from us checksum-partial TSO segments."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)


def needs_checksum(raw: bytes | memoryview) -> bool:
    return bool(raw[0] & NEEDS_CSUM)


def _ip_header_and_pseudo_sum(packet: bytes | bytearray) -> tuple[int, int]:
    """Where TCP starts, and the one's-complement sum of the pseudo-header for the whole segment
    (stack.wire.build's, from the packet's own addresses and length)."""
    if packet[0] >> 4 == 6:
        return IPV6_HEADER_LEN, pseudo_header_sum(bytes(packet[8:24]), bytes(packet[24:40]),
                                                  len(packet) - IPV6_HEADER_LEN)
    ihl = (packet[0] & 0x0F) * 4
    return ihl, pseudo_header_sum(bytes(packet[12:16]), bytes(packet[16:20]), len(packet) - ihl)


def complete_checksum(packet: bytearray) -> None:
    """Fill in the TCP checksum the kernel left partial (only the pseudo-header sum is there)."""
    ihl, pseudo = _ip_header_and_pseudo_sum(packet)
    at = ihl + TCP_CHECKSUM_OFFSET
    packet[at : at + 2] = b"\x00\x00"
    total = ones_complement_sum(memoryview(packet)[ihl:], pseudo)
    packet[at : at + 2] = (~total & 0xFFFF or 0xFFFF).to_bytes(2, "big")


def gso_packet(packet: bytes, mss: int) -> bytes:
    """Header + packet for a TCP segment the kernel is to split into `mss`-sized ones.

    GSO wants CHECKSUM_PARTIAL: the checksum field carries the pseudo-header sum over the whole
    length (Linux recomputes it per piece), and csum_start/offset say where to finish it."""
    ihl, pseudo = _ip_header_and_pseudo_sum(packet)
    at = HEADER_LEN + ihl + TCP_CHECKSUM_OFFSET
    frame = bytearray(HEADER_LEN + len(packet))  # one copy of the 64 KB, not a slice and a join
    frame[:HEADER_LEN] = gso_header(packet, mss)
    frame[HEADER_LEN:] = packet
    frame[at : at + 2] = pseudo.to_bytes(2, "big")
    return frame  # type: ignore[return-value]  # os.write takes any buffer


def gso_header(head: bytes | bytearray, mss: int) -> bytes:
    """The virtio-net header asking the kernel to split the TCP segment that starts with `head`
    (its IP and TCP headers) into `mss`-sized ones and to finish the checksum, which must hold
    the pseudo-header sum (stack.wire.build_head_partial writes it so)."""
    v6 = head[0] >> 4 == 6
    ihl = IPV6_HEADER_LEN if v6 else (head[0] & 0x0F) * 4
    thl = (head[ihl + 12] >> 4) * 4
    return HEADER.pack(NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, ihl + thl, mss, ihl, TCP_CHECKSUM_OFFSET)


