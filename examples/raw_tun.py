"""Open the kernel link, make the kernel ping the stack's address, and show what arrives.

Run as root:  .venv/bin/python examples/raw_tun.py

Everything happens inside a private network namespace that is deleted on exit (also on Ctrl-C).
No TCP stack is involved: this is the raw packet view the stack gets from `TunLink.read_batch()`.
"""

from __future__ import annotations

import argparse
import select
import shutil
import struct
import sys
import textwrap
import time

from stack.cli import interrupt
from stack.cli.common import OneLineParser
from stack.link.tun import LinkUnavailable, TunLink

# The kernel-side sender: a raw ICMP socket in Python, so the example does not need `ping`.
PING = textwrap.dedent(
    """
    import socket, struct, sys
    def csum(b):
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        s = (s & 0xFFFF) + (s >> 16)
        return ~(s + (s >> 16)) & 0xFFFF
    msg = struct.pack("!BBHHH", 8, 0, 0, 0x7C5, 1) + b"hello from the kernel side!!"
    msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.sendto(msg, (sys.argv[1], 0))
    """
)

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}


def describe(packet: bytes) -> str:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return f"non-IPv4 packet, {len(packet)} bytes: {packet[:16].hex()}..."
    ihl = (packet[0] & 0x0F) * 4
    ttl, proto = packet[8], packet[9]
    src, dst = ".".join(map(str, packet[12:16])), ".".join(map(str, packet[16:20]))
    line = f"IPv4 {src} -> {dst} ttl={ttl} {PROTOCOLS.get(proto, proto)} len={len(packet)}"
    if proto == 1 and len(packet) >= ihl + 8:
        typ, code, _, ident, seq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
        line += f" type={typ} code={code} id={ident:#x} seq={seq} data={packet[ihl + 8 :]!r}"
    return line


def main() -> int:
    try:
        link = TunLink()
        link.open()
    except LinkUnavailable as exc:
        print(f"raw_tun.py: cannot open the kernel link: {exc.reason}", file=sys.stderr)
        return 1
    with link:
        print(f"opened {link!r}")
        if shutil.which("ping"):
            link.popen_in_netns(["ping", "-c1", "-W1", link.addr], stdout=sys.stderr)
            print("kernel side: ping -c1", link.addr)
        else:
            link.run_in_netns([sys.executable, "-c", PING, link.addr], check=True)
            print("kernel side: one ICMP echo request via a raw socket (no `ping` installed)")
        deadline = time.monotonic() + 3
        seen = 0
        while not seen and (left := deadline - time.monotonic()) > 0:
            if select.select([link], [], [], left)[0]:
                for packet in link.read_batch():
                    seen += 1
                    print("arrived:", describe(packet))
        if not seen:
            print("nothing arrived within 3 s")
        print("stats:", link.stats.as_dict())
    print(f"namespace {link.netns} deleted")
    return 0 if seen else 1


if __name__ == "__main__":
    OneLineParser(prog="raw_tun.py", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    # Ctrl-C: the `with` block deletes the namespace, one line, exit 130.
    sys.exit(interrupt.guarded("raw_tun.py", main))
