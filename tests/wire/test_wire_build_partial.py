"""`build_head_partial`: the headers of a segment whose TCP checksum the link completes (TSO through
the virtio-net header). Head + payload, once the checksum is finished as the kernel finishes it,
must be exactly `build_packet`'s bytes, for the hot shapes and for the general path."""

from __future__ import annotations

import pytest

from stack.link import vnet
from stack.wire import ACK, FIN, PSH, Segment, TcpOptions, build_packet
from stack.wire.build import build_head_partial

OPTIONS = {
    "none": TcpOptions(),
    "timestamps": TcpOptions(timestamp=(0xDEADBEEF, 12345)),
    "sack blocks": TcpOptions(timestamp=(7, 8), sack_blocks=((1000, 2000), (3000, 4000))),
    "unknown option": TcpOptions(unknown=((254, b"\x01\x02"),)),
}
ADDRS = {"ipv4": ("198.18.0.2", "198.18.0.1"), "ipv6": ("2001:2::2", "2001:2::1")}


@pytest.mark.parametrize("family", sorted(ADDRS))
@pytest.mark.parametrize("shape", sorted(OPTIONS))
@pytest.mark.parametrize("size", [0, 1, 1447, 65_483 - 40])
def test_head_plus_payload_is_build_packet_once_the_checksum_is_finished(family: str, shape: str,
                                                                          size: int) -> None:
    src, dst = ADDRS[family]
    payload = bytes((i * 7) & 0xFF for i in range(size))
    seg = Segment(src, dst, 19, 40_001, 0xFFFF_FF00, 77, ACK | PSH | (FIN if size == 1 else 0), 501, 0,
                  OPTIONS[shape], payload)
    head = build_head_partial(seg)
    frame = bytearray(head + payload)
    vnet.complete_checksum(frame)
    assert bytes(frame) == build_packet(seg)
    # And the kernel is told where the TCP header ends and how to split.
    hdr = vnet.HEADER.unpack(vnet.gso_header(head, 1448))
    assert hdr == (vnet.NEEDS_CSUM, vnet.GSO_TCPV6 if family == "ipv6" else vnet.GSO_TCPV4, len(head), 1448,
                   40 if family == "ipv6" else 20, 16)
