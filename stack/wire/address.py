"""Addresses as text, the form every 4-tuple, `Segment` and table in tcpstack uses.

An address is a dotted quad (IPv4) or IPv6 in RFC 5952's canonical form: compressed, lower case,
what `socket.inet_ntop` prints. `parse_packet` produces that form, so an address given by a user
(`2001:2:0::1`, `2001:0002::0001`) must be made canonical once before it is compared with one from
the wire. IPv6 text always has a ':' and IPv4 text never does: that one test tells the family.
"""

from __future__ import annotations

import functools
import ipaddress
import socket


def is_ipv6(addr: str) -> bool:
    return ":" in addr


def canonical_address(text: str) -> str:
    """`text` as the canonical address text of its family. Raises ValueError if it is neither."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, TypeError, ValueError):
        raise ValueError(f"not an IPv4 or IPv6 address: {text!r}") from None


def endpoint(addr: str, port: int | str) -> str:
    """`addr:port` as iproute2's ss prints it: IPv6 addresses in brackets, `[2001:2::2]:80`."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def network_text(text: str) -> str:
    """An address or prefix of either family in canonical text: '2001:2:0::1' -> '2001:2::1',
    '198.18.0.0/15' stays, a prefix as long as the address is left out. Raises ValueError."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address or prefix: {text!r}") from None
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


@functools.lru_cache(maxsize=256)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def address_matches(addr: str, text: str) -> bool:
    """Whether `addr` (canonical) is the address or inside the prefix `text` (from `network_text`)."""
    if "/" not in text:
        return addr == text
    try:
        return ipaddress.ip_address(addr) in _network(text)  # False for the other family
    except ValueError:
        return False
