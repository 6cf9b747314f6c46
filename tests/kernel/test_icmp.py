"""ICMP between the kernel and the stack: ping answers, path MTU discovery against a real router,
and a blind spray of spoofed errors that must change nothing (stack.tcp.icmp)."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stack.faults import FaultEngine
from stack.link.netns import Netns
from stack.link.nsenter import netns_socket
from stack.observe.pcap import read_pcap
from stack.observe.trace import read_trace
from stack.runtime import Stack
from stack.tcp.config import Config
from stack.tcp.states import State
from stack.wire import ACK, Segment, build_packet
from stack.wire.icmp import ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, IcmpMessage, build_icmp
from tests.kernel.conftest import requires_kernel_link
from tests.kernel.peer import KERNEL_ADDR, STACK_ADDR, echo_until_eof, kernel_connect, running_stack, wait_for

pytestmark = [requires_kernel_link, pytest.mark.kernel]
needs_ping = pytest.mark.skipif(shutil.which("ping") is None, reason="ping (iputils-ping) is not installed")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 90))


async def ping(netns: str, addr: str, count: int = 3, family: str = "-4") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "ping", family, "-c", str(count), "-i", "0.2", "-W", "2", addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@needs_ping
def test_ping_answers_while_serving() -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            rc, out = await ping(ns, STACK_ADDR)
            assert rc == 0, out
            assert "3 received" in out, out
            counters = stack.counters()
            assert counters["IcmpInEchos"] == 3
            assert counters["IcmpOutEchoReps"] == 3
            assert counters["IcmpInMsgs"] >= 3

    run(main())


@needs_ping
def test_ping6_answers() -> None:
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            rc, out = await ping(ns, "2001:2::2", family="-6")
            assert rc == 0 and "3 received" in out, out
            counters = stack.counters()
            assert (counters["Icmp6InEchos"], counters["Icmp6OutEchoReplies"]) == (3, 3)
            assert counters["IcmpInEchos"] == 0

    run(main())


@needs_ping
def test_a_stack_nobody_observes_answers_ping_too() -> None:
    """No observer, capture or fault: the runtime's fast receive path must hand ICMP to the host too."""
    async def main() -> None:
        async with Stack() as stack:
            ns = stack.netns
            assert ns is not None and not stack.observers and stack.capture is None
            for addr, family in ((STACK_ADDR, "-4"), ("2001:2::2", "-6")):
                rc, out = await ping(ns, addr, count=2, family=family)
                assert rc == 0 and "2 received" in out, out
            counters = stack.counters()
            assert (counters["IcmpOutEchoReps"], counters["Icmp6OutEchoReplies"]) == (2, 2)
            assert counters.get("InMalformed.not_tcp", 0) == 0

    run(main())


@needs_ping
def test_a_fault_rule_drops_a_ping_and_the_capture_records_icmp(tmp_path: Path) -> None:
    trace, pcap = tmp_path / "run.jsonl", tmp_path / "run.pcap"

    async def main() -> None:
        faults = FaultEngine("drop in proto=icmp nth=2")
        async with running_stack(faults=faults, trace=str(trace), pcap=str(pcap)) as (stack, _log):
            ns = stack.netns
            assert ns is not None
            _rc, out = await ping(ns, STACK_ADDR)  # ping exits 1 when a reply is missing
            assert "3 packets transmitted, 2 received" in out, out
            assert stack.counters()["FaultDrop"] == 1
            assert stack.counters()["IcmpInEchos"] == 2

    run(main())
    records = [r for r in read_trace(trace) if r["kind"] == "icmp"]
    assert [r["dir"] for r in records] == ["in", "out", "in", "out"]
    assert "ICMP type 8 code 0" in records[0]["message"] and "ICMP type 0 code 0" in records[1]["message"]
    assert len(read_pcap(pcap)) == 4  # what crossed: the dropped request never did


FAMILIES = {  # far address, server socket family, the counter of the error, IP header octets
    "ipv4": ("198.18.1.2", "AF_INET", "IcmpInDestUnreachs", 20),
    "ipv6": ("2001:2:1::2", "AF_INET6", "Icmp6InPktTooBigs", 40),
}


@contextmanager
def narrow_hop(ns: str, mtu: int) -> Iterator[Netns]:
    """A second namespace behind the stack's kernel peer, over a veth link whose near end has
    `mtu`: the kernel forwards what the stack sends there, so a segment too big for that link gets
    frag-needed (RFC 1191) or Packet Too Big (RFC 8201) back, as from any router. The far end keeps
    1500, so the far host still announces an MSS for 1500 (the narrow hop is in the middle of the
    path, where PMTUD is for). Deleting the namespace deletes the veth pair too."""
    far = Netns().create()
    try:
        near = ["ip", "-n", ns]
        subprocess.run([*near, "link", "add", "tcps-icmp0", "mtu", str(mtu), "type", "veth", "peer", "name",
                        "tcps-icmp1", "netns", far.name], check=True)
        subprocess.run([*near, "addr", "add", "198.18.1.1/24", "dev", "tcps-icmp0"], check=True)
        subprocess.run([*near, "addr", "add", "2001:2:1::1/64", "dev", "tcps-icmp0", "nodad"], check=True)
        subprocess.run([*near, "link", "set", "tcps-icmp0", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                        "net.ipv6.conf.all.forwarding=1"], check=True)
        far.ip("addr", "add", "198.18.1.2/24", "dev", "tcps-icmp1")
        far.ip("addr", "add", "2001:2:1::2/64", "dev", "tcps-icmp1", "nodad")
        far.ip("link", "set", "tcps-icmp1", "up")
        far.ip("link", "set", "lo", "up")
        far.ip("route", "add", "198.18.0.0/24", "via", "198.18.1.1")
        far.ip("-6", "route", "add", "2001:2::/64", "via", "2001:2:1::1")
        yield far
    finally:
        far.delete()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_path_mtu_discovery_through_a_narrow_hop(family: str) -> None:
    """The stack sends full-sized segments toward a host behind a 1280-octet link; the kernel
    forwarding them answers frag-needed / Packet Too Big, the stack lowers its MSS and 1 MB
    arrives whole."""
    size = 1 << 20
    far_addr, sock_family, counter, ip_header = FAMILIES[family]

    async def main() -> None:
        async with running_stack(Config(msl=0.5, secret=b"t" * 16)) as (stack, _log):
            ns = stack.netns
            assert ns is not None
            with narrow_hop(ns, 1280) as far:
                server = subprocess.Popen(
                    far.exec_argv(["python3", "-c", (
                        "import socket,sys\n"
                        f"s=socket.socket(socket.{sock_family})\n"
                        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                        f"s.bind(('{far_addr}', 9000)); s.listen(1); print('ready', flush=True)\n"
                        "c,_=s.accept(); n=0\n"
                        "while True:\n"
                        "    d=c.recv(65536)\n"
                        "    if not d: break\n"
                        "    n+=len(d)\n"
                        "print(n, flush=True)\n")]),
                    stdout=subprocess.PIPE, text=True)
                try:
                    assert server.stdout is not None
                    loop = asyncio.get_running_loop()
                    assert (await loop.run_in_executor(None, server.stdout.readline)).strip() == "ready"
                    _reader, writer = await stack.open_connection(far_addr, 9000)
                    conn = writer.transport.get_extra_info("connection")
                    first_mss = stack.host.tcb(conn).snd_mss  # type: ignore[union-attr]
                    writer.write(bytes(size))
                    await writer.drain()
                    writer.close()
                    received = await loop.run_in_executor(None, server.stdout.readline)
                    assert int(received) == size
                    counters = stack.counters()
                    assert counters[counter] >= 1
                    assert counters["PMTUReductions"] >= 1
                    tcb = stack.host.tcb(conn)  # type: ignore[union-attr]
                    assert first_mss > 1280 - ip_header - 20
                    assert tcb.snd_mss == 1280 - ip_header - 20 - 12  # timestamps take 12 octets of it
                finally:
                    server.kill()
                    server.wait()

    run(main())


def test_blind_spray_of_spoofed_errors_changes_nothing() -> None:
    """Port unreachable, host unreachable and frag-needed (MTU 68) at random sequence numbers,
    claiming to be about a live connection: it stays ESTABLISHED with its MSS, and each is counted."""
    async def main() -> None:
        async with running_stack() as (stack, _log):
            ns = stack.netns
            assert ns is not None
            await stack.start_server(echo_until_eof, 7)
            reader, writer, kport = await kernel_connect(ns, 7)
            await wait_for(lambda: stack.state_of(7, (KERNEL_ADDR, kport)) is State.ESTABLISHED)
            key = (STACK_ADDR, 7, KERNEL_ADDR, kport)
            tcb = stack.host.connections[key]  # type: ignore[union-attr]
            mss = tcb.snd_mss
            rng = random.Random(5)
            # Sent from the kernel's side of the namespace with a raw socket: the stack gets them
            # exactly as a router's errors.
            raw = netns_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sent = 0
            try:
                for i in range(300):
                    seq = rng.getrandbits(32)
                    quoted = build_packet(_segment(key, seq))[:28]
                    code = (3, 1, ICMP_FRAG_NEEDED)[i % 3]
                    msg = IcmpMessage(4, KERNEL_ADDR, STACK_ADDR, ICMP_DEST_UNREACH, code, mtu=68, body=quoted)
                    raw.sendto(build_icmp(msg), (STACK_ADDR, 0))
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0.01)  # let the stack drain the device queue
            finally:
                raw.close()
            await wait_for(lambda: stack.counters()["IcmpInDestUnreachs"] >= sent)
            writer.write(b"still here")
            assert await reader.readexactly(10) == b"still here"
            counters = stack.counters()
            in_window = sent - counters["OutOfWindowIcmps"]
            assert in_window <= 2  # a random SEQ lands in a window of a few octets almost never
            assert stack.state_of(7, (KERNEL_ADDR, kport)) is State.ESTABLISHED
            assert tcb.snd_mss == mss
            writer.close()

    run(main())


def _segment(key: tuple[str, int, str, int], seq: int) -> Segment:
    return Segment(key[0], key[2], key[1], key[3], seq, 0, ACK, 1000)
