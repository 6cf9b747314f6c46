"""A TUN device whose kernel side lives in a private network namespace.

Layout (defaults): the kernel in namespace `tcps-<pid>-<n>` owns 198.18.0.1/24 on the TUN device and
routes the whole /24 into it; the userspace stack reads those packets from the fd and answers as
198.18.0.2. 198.18.0.0/15 is the benchmarking range (RFC 2544), so it never collides with a real
network, and nothing is configured in the root namespace at all. The same device carries IPv6: the
kernel owns 2001:2::1/64 (2001:2::/48 is IPv6's benchmarking range, RFC 5180) and the stack answers
as 2001:2::2. A TUN has no link layer, so the kernel resolves no neighbours on it (no NDP: its
neighbour entries are NOARP) and sends the packets for the /64 straight into the fd.

The device is created in the root namespace (that is where /dev/net/tun is opened) and then moved
into the private one; the fd stays attached to the device across the move, so all reads and writes
happen on the same non-blocking fd. Deleting the namespace destroys the device (it is not
persistent, and TUN devices are not handed back to the root namespace), after which the fd reports
EBADFD.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from stack.link.netns import LinkUnavailable, Netns, NetnsError, netns_available

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_ADDR6",
    "DEFAULT_PEER_ADDR",
    "DEFAULT_PEER_ADDR6",
    "DEFAULT_PREFIX6",
    "DEFAULT_TXQUEUELEN",
    "IPV6_MIN_MTU",
    "LinkClosed",
    "LinkStats",
    "LinkUnavailable",
    "TunLink",
    "TunQueue",
    "check_addresses",
    "kernel_link_available",
    "require_kernel_link",
]

DEFAULT_ADDR = "198.18.0.2"
DEFAULT_PEER_ADDR = "198.18.0.1"
# IPv6 on the same device: 2001:2::/48 is reserved for benchmarking (RFC 5180), as 198.18.0.0/15
# is for IPv4 (RFC 2544); the kernel side takes ::1 of a /64, the stack answers as ::2.
DEFAULT_ADDR6 = "2001:2::2"
DEFAULT_PEER_ADDR6 = "2001:2::1"
DEFAULT_PREFIX6 = 64
IPV6_MIN_MTU = 1280  # RFC 8200 §5; below it Linux turns IPv6 off on the device
# The device's queue toward us, in packets (the kernel's default for TUN is 500). The stack handles
# some 10-30k packets/s, the kernel can send a whole burst at once: when a client holding 20,000
# connections exits, 20,000 FINs come in a millisecond, and while they wait the kernel retransmits
# them (its RTO is 200 ms) and our FINs draw its ACKs: about 100,000 packets over the 2 s the stack
# needs. Whatever the queue cannot hold is dropped and waits for the kernel's backoff (a minute
# at 500; benchmarks/bench_tun_burst.py). Queued packets cost kernel memory only while queued
# (~70 MiB at the peak of that burst); the ring itself costs 8 bytes per slot.
DEFAULT_TXQUEUELEN = 150_000
TUN_PATH = "/dev/net/tun"

# Errors that mean "the kernel could not take this packet right now": drop it, as a full NIC
# queue would. TUN writes almost never block, but a full socket buffer can return ENOBUFS.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ENOMEM})


class LinkClosed(OSError):
    """The link was closed by us (EBADF), or its device vanished with its namespace (EBADFD).

    An OSError, so code that already guards fd operations with `except OSError` handles it.
    """


def kernel_link_available() -> tuple[bool, str]:
    """(True, "") if a namespaced TUN link can be opened here, else (False, what is needed)."""
    ok, reason = netns_available()
    if not ok:
        return ok, reason
    if not os.path.exists(TUN_PATH):
        return False, f"{TUN_PATH} is missing: load the tun module (`modprobe tun`)"
    try:
        fd = os.open(TUN_PATH, os.O_RDWR)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return False, f"cannot open {TUN_PATH} ({exc.strerror}): tcpstack needs root or CAP_NET_ADMIN"
        # ENODEV and friends: the node exists but no driver answers it.
        return False, f"{TUN_PATH} cannot be opened ({exc.strerror}): load the tun module (`modprobe tun`)"
    os.close(fd)
    try:
        import pytun  # noqa: F401
    except ImportError:
        return False, "python-pytun is not installed: pip install python-pytun"
    return True, ""


def require_kernel_link() -> None:
    ok, reason = kernel_link_available()
    if not ok:
        raise LinkUnavailable(reason)


@dataclass
class LinkStats:
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_batches: int = 0  # read_batch calls that returned at least one packet
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # kernel had no room (EAGAIN/ENOBUFS): dropped like a full NIC queue
    tx_errors: int = 0  # kernel refused the packet (e.g. EINVAL: not IPv4/IPv6) or the device is gone
    last_tx_errno: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_addresses(addr: str, peer_addr: str, prefix: int, version: int) -> None:
    """`addr` (the stack) and `peer_addr` (the kernel side, with `prefix`) of one family: both of
    `version`, different, and the stack's inside the kernel side's network. Raises ValueError."""
    try:
        network = ipaddress.ip_network(f"{peer_addr}/{prefix}", strict=False)
        stack_ip = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise ValueError(f"bad IPv{version} address or prefix: {exc}") from None
    if network.version != version or stack_ip.version != version:
        raise ValueError(f"{addr} and {peer_addr}/{prefix} must both be IPv{version}")
    if stack_ip not in network:
        # The kernel only routes its connected prefix into the TUN (no routes are ever added),
        # so the stack's address has to sit inside it.
        raise ValueError(f"addr {addr} is not inside the kernel side's network {network}")
    if stack_ip == ipaddress.ip_address(peer_addr):
        raise ValueError("addr and peer_addr must differ")


# Bytes one read_batch takes at most (measured: 1 GB toward the stack over MTU-1500 offloads went
# ~960-980 MB/s unbounded, ~1,050-1,090 with 1 MB, ~1,220-1,290 with 256 KB; see read_batch).
READ_BATCH_BYTES = 256 * 1024


class _QueueIO:
    """Reads and writes on one TUN queue fd (a single-queue device has exactly one)."""

    gathers = True  # write_batch takes a packet as a tuple of parts (writev)

    _fd: int
    name: str | None
    stats: LinkStats
    _read_size: int

    def fileno(self) -> int:
        if self._fd < 0:
            raise LinkClosed(errno.EBADF, "TUN link is closed")
        return self._fd

    def read_batch(self, max_packets: int = 256, max_bytes: int = READ_BATCH_BYTES) -> list[bytes]:
        """Every packet waiting on the device, up to `max_packets` or until `max_bytes` are read;
        [] if none. Never blocks.

        A plain os.read loop ended by EAGAIN: TUN has no recvmmsg, one read returns one packet,
        and catching the single BlockingIOError per batch is cheaper than polling before each read.
        The byte bound matters with offloads, where a packet can be a 64 KB GSO segment: a batch
        that stays within the core's cache is parsed, queued and handed to the application before
        it is evicted (256 packets of 64 KB are 16 MB). Small packets never reach it.
        """
        fd = self.fileno()
        read = os.read
        size = self._read_size
        packets: list[bytes] = []
        append = packets.append
        budget = max_bytes
        try:
            for _ in range(max_packets):
                packet = read(fd, size)
                append(packet)
                budget -= len(packet)
                if budget <= 0:
                    break
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.EIO, errno.ENODEV):
                if packets:
                    # Hand over what already arrived; the next call reports the loss.
                    self._count_rx(packets)
                    return packets
                raise LinkClosed(exc.errno, f"TUN device {self.name} is gone ({exc.strerror})") from exc
            raise
        if packets:
            self._count_rx(packets)
        return packets

    def _count_rx(self, packets: list[bytes]) -> None:
        st = self.stats
        st.rx_packets += len(packets)
        st.rx_bytes += sum(map(len, packets))
        st.rx_batches += 1

    def write(self, packet: bytes) -> None:
        """Hand one IP packet to the kernel. Drops and counts instead of raising (see LinkStats)."""
        fd = self.fileno()
        try:
            os.write(fd, packet)
        except OSError as exc:
            self._count_tx_failure(exc)
            return
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)

    def write_batch(self, packets: Iterable[bytes | tuple[bytes, ...]]) -> int:
        """Write each packet in turn (TUN has no batched write); returns how many the kernel took.
        A packet given as a tuple of parts (a virtio-net header, the IP and TCP headers, a 64 KB
        payload) goes in one writev: the kernel gathers it, nothing is joined here."""
        fd = self.fileno()
        write = os.write
        sent = 0
        nbytes = 0
        for packet in packets:
            try:
                if isinstance(packet, tuple):
                    nbytes += os.writev(fd, packet)
                    sent += 1
                    continue
                write(fd, packet)
            except OSError as exc:
                self._count_tx_failure(exc)
                continue
            sent += 1
            nbytes += len(packet)
        self.stats.tx_packets += sent
        self.stats.tx_bytes += nbytes
        return sent

    def _count_tx_failure(self, exc: OSError) -> None:
        if exc.errno in _DROP_ERRNOS:
            self.stats.tx_dropped += 1
        else:
            self.stats.tx_errors += 1
            self.stats.last_tx_errno = exc.errno or 0


class TunQueue(_QueueIO):
    """Queue `index` of a multi-queue TUN link, as a link of its own for one worker (stack.runtime.
    workers): it shares the device, the namespace and the offload setting, not the fd."""

    def __init__(self, fd: int, index: int, *, name: str | None, netns: str, offload: bool) -> None:
        self._fd = fd
        self.index = index
        self.name = name
        self.netns = netns
        self.offload = offload
        self.stats = LinkStats()
        self._read_size = 65535 + 40 + 16  # as TunLink: the largest IPv6 packet, plus a virtio-net header

    def close(self) -> None:
        """Close this process's copy of the fd (the queue stays attached while others hold it)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class TunLink(_QueueIO):
    """A non-blocking TUN fd carrying raw IPv4 and IPv6 packets to and from the kernel in a private
    netns. The kernel side gets `peer_addr/prefix` and `peer_addr6/prefix6` (None: IPv4 only;
    an MTU below 1280 leaves the default IPv6 addresses out, since IPv6 needs 1280). With
    `queues=N` the device is multi-queue: `queue(i)` hands out each queue as a link of its own.

    With `netns=None` the link makes its own namespace and deletes it on close; a `Netns` passed in
    must already be created and stays the caller's to delete.
    """

    def __init__(
        self,
        netns: Netns | None = None,
        *,
        addr: str = DEFAULT_ADDR,
        peer_addr: str = DEFAULT_PEER_ADDR,
        prefix: int = 24,
        mtu: int = 1500,
        name: str | None = None,
        txqueuelen: int | None = DEFAULT_TXQUEUELEN,
        offload: bool = False,
        addr6: str | None = DEFAULT_ADDR6,
        peer_addr6: str | None = DEFAULT_PEER_ADDR6,
        prefix6: int = DEFAULT_PREFIX6,
        queues: int = 1,
        steering: str = "ports",
    ) -> None:
        self._fd = -1  # first, so repr/close work even if validation below raises
        self._tun: Any = None
        self._more: list[Any] = []  # the devices of queues 1..N-1 (pytun objects, one fd each)
        if not 1 <= queues <= 256:
            raise ValueError(f"queues {queues} out of range 1..256")
        # More than one: IFF_MULTI_QUEUE, and the kernel steers each TCP flow to the queue
        # (src_port ^ dst_port) % queues (stack.link.steering).
        self.queues = queues
        # "ports": our eBPF program; "automq": tun's own flow table (kept only to measure it:
        # docs/workers.md says why it is not the default).
        if steering not in ("ports", "automq"):
            raise ValueError(f"steering {steering!r}: 'ports' or 'automq'")
        self.steering = steering
        check_addresses(addr, peer_addr, prefix, 4)
        if not 68 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} out of range 68..65535 (68 is IPv4's minimum)")
        if mtu < IPV6_MIN_MTU and (addr6, peer_addr6) == (DEFAULT_ADDR6, DEFAULT_PEER_ADDR6):
            addr6 = peer_addr6 = None  # IPv4 only: the default IPv6 addresses need MTU 1280
        if (addr6 is None) != (peer_addr6 is None):
            raise ValueError("addr6 and peer_addr6 go together (both None: no IPv6)")
        if addr6 is not None and peer_addr6 is not None:
            check_addresses(addr6, peer_addr6, prefix6, 6)
            if mtu < IPV6_MIN_MTU:
                raise ValueError(f"mtu {mtu} is below IPv6's minimum of {IPV6_MIN_MTU} (RFC 8200 §5)")
        # IFNAMSIZ is 16 with the NUL; the charset also keeps the name one token in `ip -batch`.
        if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
            raise ValueError(f"bad interface name {name!r} (1..15 of letters, digits, '_', '.', '-')")
        self.addr = addr
        self.peer_addr = peer_addr
        self.prefix = prefix
        self.addr6 = addr6
        self.peer_addr6 = peer_addr6
        self.prefix6 = prefix6
        self.mtu = mtu
        self.txqueuelen = txqueuelen  # None: leave the kernel's default (500)
        # TSO/checksum offload through the virtio-net header (stack.link.vnet): every packet on the
        # fd is then prefixed by that header, and segments may be up to 64 KB at any MTU.
        self.offload = offload
        self.name: str | None = name  # the kernel's choice (tunN) once open, if not given
        self._owns_netns = netns is None
        self.namespace: Netns = netns if netns is not None else Netns()
        self.stats = LinkStats()
        # TUN hands out whole packets, never more than the MTU (no IFF_VNET_HDR, so no GSO);
        # reading 64 KiB stays correct even if someone raises the MTU inside the namespace later.
        self._read_size = 65535 + 40 + 16  # the largest IPv6 packet (40 + 65535), plus a virtio-net header

    @property
    def netns(self) -> str:
        """The namespace's name (final once the link is open)."""
        return self.namespace.name

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    # -- lifecycle --------------------------------------------------------------------------------

    def open(self) -> TunLink:
        if self.is_open:
            return self
        require_kernel_link()
        import pytun  # imported late so the module loads (and tests can skip) without it

        if self._owns_netns:
            if self.namespace.deleted:  # reopened after close(): a fresh namespace
                self.namespace = Netns()
            self.namespace.create()
        elif not self.namespace.active:
            raise NetnsError(f"network namespace {self.netns} is not active: create() it first")
        try:
            try:
                flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if self.offload else 0)
                if self.queues > 1:
                    flags |= pytun.IFF_MULTI_QUEUE
                tun = pytun.TunTapDevice(name=self.name or "", flags=flags)
                self._tun = tun
                self.name = str(tun.name)
                # Every queue is attached before the move: TUNSETIFF finds the device by name in
                # the opener's namespace, and after the move it is no longer in ours.
                for _ in range(self.queues - 1):
                    self._more.append(pytun.TunTapDevice(name=self.name, flags=flags))
            except pytun.Error as exc:
                raise LinkUnavailable(f"cannot create a TUN device: {exc}") from exc
            for dev in (tun, *self._more):
                if self.offload:
                    from stack.link.vnet import enable_offload

                    enable_offload(int(dev.fileno()))  # an ioctl on the fd: fine before or after the move
                os.set_blocking(int(dev.fileno()), False)
            if self.queues > 1 and self.steering == "ports":
                from stack.link.steering import attach_steering

                attach_steering(int(tun.fileno()))
            fd = int(tun.fileno())
            os.set_blocking(fd, False)
            self._fd = fd
            # The move is done from the root namespace; from here on the device is configured only
            # through `ip -n NS`, never by ioctl on our side (pytun's mtu/addr setters would act on
            # the root namespace, where the device no longer is).
            try:
                subprocess.run(
                    ["ip", "link", "set", "dev", self.name, "netns", self.netns],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
            except subprocess.CalledProcessError as exc:
                raise NetnsError(
                    f"could not move {self.name} into namespace {self.netns}: {exc.stderr.strip()}"
                ) from exc
            dev = self.name
            if self.peer_addr6 is not None:
                # The device's IPv6 knobs, before any address: no duplicate address detection
                # (nothing else is on a point-to-point TUN; the address is usable at once), no
                # router advertisements accepted and no solicitations sent.
                conf = f"net.ipv6.conf.{dev}"
                self.namespace.sysctl({f"{conf}.accept_dad": "0", f"{conf}.accept_ra": "0",
                                       f"{conf}.router_solicitations": "0", f"{conf}.disable_ipv6": "0"})
            commands = [f"link set dev {dev} mtu {self.mtu}"]
            if self.mtu >= IPV6_MIN_MTU:  # below it the kernel has no IPv6 on the device at all
                # No IPv6 link-local address: nothing of the kernel's own (router solicitations,
                # MLD reports from fe80::) goes into the TUN; the stack only needs the one below.
                commands.append(f"link set dev {dev} addrgenmode none")
            commands.append(f"addr add {self.peer_addr}/{self.prefix} dev {dev}")
            if self.peer_addr6 is not None:
                commands.append(f"addr add {self.peer_addr6}/{self.prefix6} dev {dev} nodad")
            if self.txqueuelen is not None:
                commands.append(f"link set dev {dev} txqueuelen {self.txqueuelen}")
            commands.append(f"link set dev {dev} up")
            self.namespace.ip_batch(commands)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the fd (which destroys the device), then delete our own namespace. Idempotent."""
        tun, self._tun, self._fd = self._tun, None, -1
        more, self._more = self._more, []
        try:
            for dev in more:
                dev.close()
            if tun is not None:
                tun.close()
        finally:
            if self._owns_netns:
                self.namespace.delete()

    def queue(self, index: int) -> TunQueue:
        """Queue `index` (0..queues-1) as a link of its own; queue 0 is this link's own fd."""
        if not self.is_open:
            raise LinkClosed(errno.EBADF, "TUN link is closed")
        fd = self._fd if index == 0 else int(self._more[index - 1].fileno())
        return TunQueue(fd, index, name=self.name, netns=self.netns, offload=self.offload)

    def queue_fds(self) -> list[int]:
        """The fd of every queue, in order (a worker closes the ones that are not its own)."""
        return [self._fd, *(int(dev.fileno()) for dev in self._more)] if self.is_open else []

    def __enter__(self) -> TunLink:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        v6 = f", {self.addr6} <-> {self.peer_addr6}/{self.prefix6}" if self.addr6 else ""
        return (
            f"TunLink({self.name or '?'} in {self.netns}, {self.addr} <-> "
            f"{self.peer_addr}/{self.prefix}{v6}, mtu {self.mtu}, {state})"
        )

    # -- conveniences -----------------------------------------------------------------------------

    def run_in_netns(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run` inside the link's namespace, e.g. to make the kernel send something."""
        return self.namespace.run(argv, **kwargs)

    def popen_in_netns(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return self.namespace.popen(argv, **kwargs)
