"""IPv6 on the TUN link: the kernel side is 2001:2::1/64 and usable at once (no DAD), the kernel
sends nothing of its own into the device (no router solicitation, no MLD, no neighbour discovery:
a TUN has no link layer), and TCP over IPv6 works both ways at the packet level."""

from __future__ import annotations

import select
import sys
import textwrap
import time

import pytest

from stack.link.tun import TunLink
from stack.wire import ACK, RST, SYN, Segment, build_packet, parse_packet

from .conftest import requires_kernel_link

pytestmark = [requires_kernel_link, pytest.mark.kernel]


def read_for(link: TunLink, seconds: float) -> list[bytes]:
    got: list[bytes] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        select.select([link.fileno()], [], [], left)
        got += link.read_batch()
    return got


def test_the_kernel_side_has_its_ipv6_address_at_once_and_nothing_leaks(netns_tun: TunLink) -> None:
    dev = netns_tun.name
    assert dev is not None
    addrs = netns_tun.namespace.ip("-6", "-o", "addr", "show", "dev", dev)
    assert "2001:2::1/64" in addrs and "nodad" in addrs
    assert "tentative" not in addrs and "fe80:" not in addrs  # usable now; no link-local address
    sysctl = netns_tun.run_in_netns(
        ["sysctl", "-n", f"net.ipv6.conf.{dev}.accept_dad", f"net.ipv6.conf.{dev}.accept_ra",
         f"net.ipv6.conf.{dev}.router_solicitations"], capture_output=True, text=True, check=True).stdout.split()
    assert sysctl == ["0", "0", "0"]
    # Nothing unsolicited: no router solicitation, no MLD report, no neighbour solicitation.
    assert read_for(netns_tun, 1.5) == []


def test_kernel_syn_over_ipv6_arrives_without_neighbour_discovery(netns_tun: TunLink) -> None:
    code = textwrap.dedent(
        """
        import socket, sys
        s = socket.socket(socket.AF_INET6)
        s.settimeout(5)
        try:
            s.connect(("2001:2::2", 7))
        except ConnectionRefusedError:
            print("refused")
        """
    )
    proc = netns_tun.popen_in_netns([sys.executable, "-c", code], stdout=-1, text=True)
    try:
        packets = read_for(netns_tun, 0.5)
        assert packets, "no packet from the kernel"
        # The first packet is the SYN itself: no neighbour solicitation comes before it, as the
        # TUN is NOARP (a point-to-point device without link-layer addresses).
        syn = parse_packet(packets[0])
        assert (syn.src_addr, syn.dst_addr, syn.dst_port, syn.flags) == ("2001:2::1", "2001:2::2", 7, SYN)
        assert syn.options.mss == 1440  # the kernel's MSS over IPv6 at MTU 1500
        # Our RST, built as IPv6, is taken by the kernel: its connect() is refused.
        rst = Segment("2001:2::2", "2001:2::1", 7, syn.src_port, 0, (syn.seq + 1) & 0xFFFFFFFF, RST | ACK, 0)
        netns_tun.write(build_packet(rst))
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert out.strip() == "refused"
    assert netns_tun.namespace.ip("-6", "neigh", "show") == ""
    assert netns_tun.stats.tx_errors == 0


def test_small_mtu_leaves_ipv6_out_and_explicit_ipv6_needs_1280() -> None:
    with TunLink(mtu=1000) as link:
        assert link.addr6 is None and link.name is not None
        assert "inet6" not in link.namespace.ip("-6", "-o", "addr", "show", "dev", link.name)
    with pytest.raises(ValueError, match="1280"):
        TunLink(mtu=1000, addr6="2001:2::5", peer_addr6="2001:2::1")


def test_custom_ipv6_addresses_and_bad_ones() -> None:
    with TunLink(addr6="2001:2:0:7::a", peer_addr6="2001:2:0:7::1", prefix6=120) as link:
        assert link.name is not None
        assert "2001:2:0:7::1/120" in link.namespace.ip("-6", "-o", "addr", "show", "dev", link.name)
    with pytest.raises(ValueError, match="not inside"):
        TunLink(addr6="2001:3::2")
    with pytest.raises(ValueError, match="IPv6"):
        TunLink(addr6="198.18.0.3", peer_addr6="198.18.0.1")
    with pytest.raises(ValueError, match="differ"):
        TunLink(addr6="2001:2::1")
    with pytest.raises(ValueError, match="together"):
        TunLink(addr6=None)
    assert ACK  # the flags module is the wire's


def test_sock_diag_lists_the_kernels_ipv6_sockets_too(netns_tun: TunLink) -> None:
    from stack.observe.sockdiag import SockDiag

    code = textwrap.dedent(
        """
        import socket, time
        a = socket.socket(socket.AF_INET6); a.bind(("2001:2::1", 9006)); a.listen()
        b = socket.socket(socket.AF_INET); b.bind(("198.18.0.1", 9004)); b.listen()
        print("up", flush=True)
        time.sleep(10)
        """
    )
    proc = netns_tun.popen_in_netns([sys.executable, "-c", code], stdout=-1, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        with SockDiag(netns_tun.netns) as diag:
            found = {(s.state, s.local) for s in diag.dump()}
    finally:
        proc.kill()
        proc.wait()
    assert ("LISTEN", ("2001:2::1", 9006)) in found and ("LISTEN", ("198.18.0.1", 9004)) in found


def test_stack_api_over_ipv6_names_addresses_as_sockets_do() -> None:
    import asyncio
    import socket

    from stack.link.nsenter import netns_socket
    from stack.runtime import Stack
    from stack.tcp.config import Config

    async def main() -> None:
        async with Stack(config=Config(msl=0.5, secret=b"6" * 16)) as stack:
            assert stack.netns is not None and stack.addr6 == "2001:2::2"
            seen: list[object] = []

            async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                seen.append(writer.get_extra_info("peername"))
                writer.write(await reader.read())
                writer.close()

            await stack.start_server(app, 7)
            sock = netns_socket(stack.netns, socket.AF_INET6)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("2001:2::2", 7))
            r, w = await asyncio.open_connection(sock=sock)
            w.write(b"six")
            w.write_eof()
            assert await r.read() == b"six"
            w.close()
            assert seen == [("2001:2::1", sock.getsockname()[1], 0, 0)]  # as an AF_INET6 socket says
            # The stack as a client, to the kernel's address written the long way.
            listener = netns_socket(stack.netns, socket.AF_INET6)
            listener.bind(("2001:2::1", 8080))
            listener.listen()
            server = await asyncio.start_server(lambda r, w: w.close(), sock=listener)
            r2, w2 = await stack.open_connection("2001:0002:0000::0001", 8080)
            assert w2.get_extra_info("sockname")[0] == "2001:2::2"
            assert w2.get_extra_info("peername")[:2] == ("2001:2::1", 8080)
            assert await r2.read() == b""
            w2.close()
            server.close()

    asyncio.run(asyncio.wait_for(main(), 30))
