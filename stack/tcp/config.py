"""The one typed configuration object of a stack (every knob a user may turn, with Linux defaults).

The defaults follow Linux where RFC 9293 leaves a choice, because the peers tcpstack meets are Linux
kernels: 2MSL = 60 s (`TCP_TIMEWAIT_LEN`), `tcp_fin_timeout` = 60 s, `tcp_rfc1337` = 0, RFC 6191 SYN
reopen of TIME-WAIT on, 40 ms delayed ACK, initial window of 10 segments (RFC 6928).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

# (local_addr, local_port, remote_addr, remote_port)
FourTuple = tuple[str, int, str, int]

# Fixed headers in front of a segment's data, per family (RFC 9293 §3.7.1): 20 IPv4 or 40 IPv6, 20 TCP.
IPV4_TCP_HEADERS = 40
IPV6_TCP_HEADERS = 60


def default_peer_mss(addr: str) -> int:
    """The send MSS to assume when a SYN carries no MSS option (RFC 9293 §3.7.1, MUST-15): 536
    (576 - 40) over IPv4, 1220 (1280 - 60) over IPv6. `addr` is either address of the connection."""
    return 1220 if ":" in addr else 536
IsnFunction = Callable[[FourTuple, float], int]


@dataclass(frozen=True, slots=True)
class Config:
    # --- closing-state timers -------------------------------------------------------------------
    msl: float = 30.0
    """Maximum segment lifetime in seconds; TIME-WAIT lasts 2*msl (RFC 9293 §3.4.2)."""
    fin_timeout: float = 60.0
    """How long, in seconds, an orphaned connection may sit in FIN-WAIT-2 (Linux `tcp_fin_timeout`)."""
    rfc1337: bool = False
    """Ignore RST in TIME-WAIT (RFC 1337 protection; Linux `tcp_rfc1337`, default off)."""
    syn_reopen_time_wait: bool = True
    """Accept a new SYN on a TIME-WAIT 4-tuple when its SEQ or TSval is newer (RFC 6191, RFC 9293 MAY-2)."""
    max_time_wait: int = 262_144
    """Cap on TIME-WAIT records; a close beyond it skips TIME-WAIT (Linux `tcp_max_tw_buckets`)."""
    tw_reuse: bool = False
    """Let outgoing connects take a TIME-WAIT 4-tuple (timestamps seen, >= 1 s old; Linux `tcp_tw_reuse`)."""

    # --- retransmission (RFC 6298) and retry limits -----------------------------------------------
    rto_initial: float = 1.0
    """Retransmission timeout in seconds before any RTT sample (RFC 6298 §2.1)."""
    rto_min: float = 0.2
    """Lower bound of the retransmission timeout in seconds (Linux `TCP_RTO_MIN`)."""
    rto_max: float = 120.0
    """Upper bound of the retransmission timeout in seconds, backoff included (Linux `TCP_RTO_MAX`)."""
    syn_retries: int = 6
    """Retransmissions of a SYN before connect() gives up (Linux `tcp_syn_retries`)."""
    syn_linear_timeouts: int = 4
    """SYN retransmissions that keep the initial RTO before it starts doubling (Linux
    `tcp_syn_linear_timeouts`)."""
    synack_retries: int = 5
    """Retransmissions of a SYN-ACK before a half-open connection is dropped (Linux `tcp_synack_retries`)."""
    retries: int = 15
    """Retransmissions of data or FIN before the connection is aborted (Linux `tcp_retries2`)."""
    user_timeout: float | None = None
    """Abort when sent data stays unacknowledged, or a zero window unopened, this many seconds
    (RFC 9293 §3.8.3 USER TIMEOUT; Linux TCP_USER_TIMEOUT)."""
    orphan_retries: int = 0
    """Retransmissions or window probes of an orphan (closed by the application) before it is
    dropped; 0 means 8 while the RTO is below rto_max, and none once it reached it (Linux
    `tcp_orphan_retries`)."""
    max_orphans: int = 131072
    """Orphans a host keeps at most; a close beyond it resets the connection instead (Linux
    `tcp_max_orphans`, TCPAbortOnMemory)."""

    # --- acknowledgements and sending -------------------------------------------------------------
    delayed_ack: bool = True
    """Delay ACKs: ACK every second full segment, else when the delayed-ACK timer fires (RFC 9293 §3.8.6.3)."""
    delayed_ack_timeout: float = 0.04
    """How long an ACK may be delayed, in seconds (Linux: 40 ms)."""
    nagle: bool = True
    """Nagle: hold back small segments while data is unacknowledged (RFC 9293 §3.7.4)."""
    challenge_ack_interval: float = 0.5
    """At most one challenge ACK per connection per interval in seconds (RFC 5961 §7; Linux
    `tcp_invalid_ratelimit`)."""
    initial_cwnd_segments: int = 10
    """Initial congestion window in segments (RFC 6928)."""
    congestion_control: str = "newreno"
    """Congestion-control algorithm (docs/congestion-control.md)."""
    tail_loss_probe: bool = True
    """Probe for a lost tail after about two RTTs instead of waiting for the RTO (RFC 8985 §7,
    with SACK, as Linux does by default: `tcp_early_retrans`)."""

    # --- options and buffers ----------------------------------------------------------------------
    mtu: int = 1500
    """MTU of the link; the announced MSS is mtu - 40 over IPv4, mtu - 60 over IPv6. IPv6 needs 1280."""
    window_scaling: bool = True
    """Offer window scaling in SYNs (RFC 7323)."""
    sack: bool = True
    """Offer selective acknowledgements in SYNs (RFC 2018)."""
    timestamps: bool = True
    """Offer timestamps in SYNs (RFC 7323)."""
    recv_buffer: int = 4 * 1024 * 1024
    """Receive buffer in bytes; the window scale follows it."""
    send_buffer: int = 4 * 1024 * 1024
    """Send buffer in bytes."""
    recv_memory: int | None = None
    """Memory a connection's received data may take, counting the bookkeeping of out-of-order
    blocks (Linux `sk_rcvbuf`, from `tcp_rmem`); beyond it the out-of-order queue is pruned from
    the top, then segments are dropped (stack.tcp.budget). None: twice `recv_buffer`, as Linux
    keeps about half of sk_rcvbuf for overhead. Must not be below `recv_buffer`."""

    # --- memory of the whole host (stack.tcp.budget) ----------------------------------------------
    memory_limits: tuple[int, int, int] = (384 << 20, 512 << 20, 768 << 20)
    """(low, pressure, high) bytes queued by all connections, both ways (Linux `tcp_mem`, which
    counts pages; the defaults are Linux's on a machine with 8 GiB). Above `pressure`: memory
    pressure, receive windows stop growing, until below `low`. Above `high`: a connection may
    queue only a minimum more, and orphans still holding data to send are reset on close."""

    # --- ICMP (stack.tcp.icmp) ---------------------------------------------------------------------
    icmp_echo: bool = True
    """Answer echo requests, ping (Linux: `icmp_echo_ignore_all` = 0)."""
    icmp_msgs_per_sec: int = 1000
    """ICMP messages the host sends per second at most, echo replies included (Linux
    `icmp_msgs_per_sec`, a token bucket)."""
    icmp_msgs_burst: int = 50
    """Size of that token bucket: how many may leave at once (Linux `icmp_msgs_burst`)."""

    # --- keepalive (off by default, RFC 9293 §3.8.4) ----------------------------------------------
    keepalive: bool = False
    """Send keepalive probes on idle connections."""
    keepalive_time: float = 7200.0
    """Idle seconds before the first keepalive probe (Linux `tcp_keepalive_time`)."""
    keepalive_interval: float = 75.0
    """Seconds between keepalive probes (Linux `tcp_keepalive_intvl`)."""
    keepalive_probes: int = 9
    """Unanswered keepalive probes before the connection is dropped (Linux `tcp_keepalive_probes`)."""

    # --- listeners and ports ----------------------------------------------------------------------
    syn_backlog: int = 256
    """Half-open connections per listener (Linux `tcp_max_syn_backlog`)."""
    syn_cookies: bool = True
    """Once a listener's SYN backlog is full, answer SYNs with SYN cookies instead of keeping state
    (RFC 4987 §3.6; Linux `tcp_syncookies` = 1). Off: such SYNs are dropped."""
    ephemeral_ports: tuple[int, int] = (32768, 60999)
    """Local ports for outgoing connects, lowest and highest (Linux `ip_local_port_range`)."""

    # --- initial sequence numbers (RFC 6528) ------------------------------------------------------
    isn: IsnFunction | None = field(default=None, compare=False)
    """Replace the RFC 6528 generator, e.g. to start a test's sequence numbers near 2**32."""
    secret: bytes | None = field(default=None, compare=False, repr=False)
    """Key of the ISN hash; random per stack when None."""

    @property
    def time_wait_duration(self) -> float:
        return 2.0 * self.msl

    @property
    def mss(self) -> int:
        """The MSS this stack announces over IPv4: MTU less 20 bytes of IPv4 and 20 of TCP header."""
        return self.mtu - IPV4_TCP_HEADERS

    def mss_for(self, addr: str) -> int:
        """The MSS announced on a connection whose addresses are `addr`'s family: the MTU less the
        fixed IP and TCP headers (RFC 9293 §3.7.1: 40 octets over IPv4, 60 over IPv6)."""
        return self.mtu - (IPV6_TCP_HEADERS if ":" in addr else IPV4_TCP_HEADERS)

    def with_changes(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def __post_init__(self) -> None:
        if self.msl <= 0:
            raise ValueError("msl must be positive")
        if not 68 <= self.mtu <= 65535:
            raise ValueError("mtu must be between 68 and 65535")
        from stack.tcp.congestion import ALGORITHMS  # the registry lives beside the algorithms

        if self.congestion_control not in ALGORITHMS:
            known = ", ".join(sorted(ALGORITHMS))
            raise ValueError(f"unknown congestion control {self.congestion_control!r} (known: {known})")
        low, pressure, high = self.memory_limits
        if not 0 <= low <= pressure <= high:
            raise ValueError("memory_limits must be (low, pressure, high) with 0 <= low <= pressure <= high")
        if self.recv_memory is not None and self.recv_memory < self.recv_buffer:
            raise ValueError("recv_memory must not be below recv_buffer")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative")
