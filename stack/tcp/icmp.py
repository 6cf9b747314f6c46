"""ICMP and ICMPv6 as a host answers them (RFC 1122 §3.2.2, RFC 4443), for TCP (RFC 5927).

The host (`Host.on_icmp`) hands every message here:

* an echo request to one of its addresses is answered with an echo reply carrying the same
  identifier, sequence number and data (RFC 1122 §3.2.2.6, RFC 4443 §4.2), as long as the
  host's ICMP token bucket allows (below);
* an error names, in its quote, a segment we sent. It must name a connection of ours and a SEQ in
  SND.UNA..SND.NXT (RFC 5927 §5.1, what Linux's tcp_v4_err checks), else it is dropped and counted
  (TcpExt OutOfWindowIcmps, or Icmp InErrors when no connection matches). Then:
  - fragmentation needed (RFC 1191) or Packet Too Big (RFC 8201): path MTU discovery lowers the
    connection's MSS and resends what was in flight at the new size (`reduce_mtu`, after Linux's
    tcp_v4_mtu_reduced + tcp_simple_retransmit). The path MTU never goes below 552 for IPv4 (a
    smaller one is taken as 552, Linux `min_pmtu`) and a Packet Too Big below 1280 is ignored
    (RFC 8201 §4: IPv6's minimum link MTU), so a spoofed tiny MTU cannot shrink segments to
    nothing;
  - every other error is a soft error (RFC 1122 §4.2.3.9, RFC 5461): remembered, never a reset,
    and what the application sees instead of ETIMEDOUT if the connection later gives up.
    Redirects and source quench are ignored (RFC 6633 deprecates source quench).

Which error each type and code means is Linux's table (icmp_err_convert, icmpv6_err_convert).

Rate limit. ICMP the host sends is limited by one token bucket, Linux's icmp_global_allow:
`icmp_msgs_per_sec` tokens a second, at most `icmp_msgs_burst` saved up. Unlike Linux's default
`icmp_ratemask` (which exempts echo replies) the bucket covers echo replies too: answering a ping
flood costs this stack far more than it costs a kernel (docs/linux-differences.md).
"""

from __future__ import annotations

from stack.tcp.config import Config
from stack.tcp.context import Context
from stack.tcp.counters import Counters
from stack.tcp.events import CloseReason
from stack.tcp.outcome import Outcome
from stack.tcp.sender import push
from stack.tcp.seq import seq_le, seq_lt
from stack.tcp.states import State
from stack.tcp.tcb import Tcb
from stack.wire.headers import IPPROTO_TCP, IPV6_VERSION
from stack.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_FRAG_NEEDED,
    ICMP_PARAMETER_PROBLEM,
    ICMP_TIME_EXCEEDED,
    ICMPV6_DEST_UNREACH,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG,
    ICMPV6_PARAMETER_PROBLEM,
    ICMPV6_TIME_EXCEEDED,
    IcmpMessage,
)

S = State
R = CloseReason

MIN_PMTU_V4 = 552  # Linux ip_rt_min_pmtu: an advertised MTU below it is taken as this
IPV6_MIN_MTU = 1280  # RFC 8200 §5; RFC 8201 §4: never reduce the path MTU below it
MIN_SND_MSS = 48  # Linux tcp_min_snd_mss: the MSS floor whatever the MTU says
TCP_HEADER = 20

# Destination Unreachable codes -> the error the application sees (Linux icmp_err_convert;
# codes 5, 7 and 8 are EOPNOTSUPP, EHOSTDOWN and ENONET there, see docs/linux-differences.md).
V4_UNREACH: dict[int, CloseReason] = {
    0: R.NET_UNREACHABLE, 1: R.HOST_UNREACHABLE, 2: R.PROTOCOL_UNREACHABLE, 3: R.REFUSED,
    5: R.HOST_UNREACHABLE, 6: R.NET_UNREACHABLE, 7: R.HOST_UNREACHABLE, 8: R.NET_UNREACHABLE,
    9: R.NET_UNREACHABLE, 10: R.HOST_UNREACHABLE, 11: R.NET_UNREACHABLE, 12: R.HOST_UNREACHABLE,
    13: R.HOST_UNREACHABLE, 14: R.HOST_UNREACHABLE, 15: R.HOST_UNREACHABLE,
}
# ICMPv6 Destination Unreachable codes (RFC 4443 §3.1; Linux icmpv6_err_convert).
V6_UNREACH: dict[int, CloseReason] = {
    0: R.NET_UNREACHABLE, 1: R.PROHIBITED, 2: R.HOST_UNREACHABLE, 3: R.HOST_UNREACHABLE,
    4: R.REFUSED, 5: R.PROHIBITED, 6: R.PROHIBITED,
}
# Counter names per received type, as Linux's /proc/net/snmp "Icmp:" and snmp6 "Icmp6" lines.
V4_IN_NAMES = {0: "IcmpInEchoReps", 3: "IcmpInDestUnreachs", 4: "IcmpInSrcQuenchs", 5: "IcmpInRedirects",
               8: "IcmpInEchos", 11: "IcmpInTimeExcds", 12: "IcmpInParmProbs", 13: "IcmpInTimestamps"}
V6_IN_NAMES = {1: "Icmp6InDestUnreachs", 2: "Icmp6InPktTooBigs", 3: "Icmp6InTimeExcds", 4: "Icmp6InParmProblems",
               128: "Icmp6InEchos", 129: "Icmp6InEchoReplies"}


def prefix(version: int) -> str:
    """The counter section of a family: "Icmp" or "Icmp6"."""
    return "Icmp6" if version == IPV6_VERSION else "Icmp"


class IcmpHost:
    """A host's ICMP state: the token bucket of what it sends, and the counting."""

    __slots__ = ("burst", "counters", "credit", "echo", "last", "rate")

    def __init__(self, config: Config, counters: Counters, now: float) -> None:
        self.counters = counters
        self.echo = config.icmp_echo
        self.rate = config.icmp_msgs_per_sec
        self.burst = config.icmp_msgs_burst
        self.credit = float(self.burst)
        self.last = now

    def received(self, msg: IcmpMessage) -> None:
        """Count one message in: InMsgs, its type's counter, and the IcmpMsg per-type line."""
        counters = self.counters
        v6 = msg.version == IPV6_VERSION
        counters.inc(prefix(msg.version) + "InMsgs")
        name = (V6_IN_NAMES if v6 else V4_IN_NAMES).get(msg.type)
        if name is not None:
            counters.inc(name)
        counters.inc(f"Icmp6InType{msg.type}" if v6 else f"IcmpMsgInType{msg.type}")

    def allow(self, now: float) -> bool:
        """Linux icmp_global_allow: refill by the elapsed time, take one token if there is one."""
        self.credit = min(float(self.burst), self.credit + (now - self.last) * self.rate)
        self.last = now
        if self.credit >= 1.0:
            self.credit -= 1.0
            return True
        return False

    def answer_echo(self, msg: IcmpMessage, addresses: tuple[str, ...], now: float) -> IcmpMessage | None:
        """The echo reply to `msg` (RFC 1122 §3.2.2.6: same identifier, sequence and data, from
        the address it was sent to), or None: not an echo request for us, or rate-limited."""
        v6 = msg.version == IPV6_VERSION
        if msg.type != (ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST) or msg.code != 0:
            return None  # replies to pings we never sent, timestamps, unknown types: nothing to do
        if not self.echo or msg.dst_addr not in addresses:
            return None
        section = prefix(msg.version)
        if not self.allow(now):
            self.counters.inc(section + "OutRateLimitGlobal")
            return None
        reply_type = ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY
        counters = self.counters
        counters.inc(section + "OutMsgs")
        counters.inc("Icmp6OutEchoReplies" if v6 else "IcmpOutEchoReps")
        counters.inc(f"Icmp6OutType{reply_type}" if v6 else f"IcmpMsgOutType{reply_type}")
        return IcmpMessage(msg.version, msg.dst_addr, msg.src_addr, reply_type, 0, msg.identifier, msg.sequence,
                           body=msg.body)


def error_key(msg: IcmpMessage) -> tuple[str, int, str, int] | None:
    """The 4-tuple (ours first) of the TCP segment an error quotes; None when it quotes no TCP."""
    quote = msg.quote
    if quote is None or quote.protocol != IPPROTO_TCP:
        return None
    return (quote.src_addr, quote.src_port, quote.dst_addr, quote.dst_port)


def seq_acceptable(c: Tcb, seq: int) -> bool:
    """RFC 5927 §5.1: the quoted SEQ must be one we sent and is not yet acknowledged,
    SND.UNA <= SEQ < SND.NXT (the highest SND.NXT: a go-back-N rewind moves ours back)."""
    return seq_le(c.snd_una, seq) and seq_lt(seq, c.snd_max)


def tcp_error(c: Tcb, msg: IcmpMessage, ctx: Context) -> Outcome | None:
    """An ICMP error about connection `c`, its quote already checked (`seq_acceptable`)."""
    if c.state is S.LISTEN:
        return None
    mtu = path_mtu(msg)
    if mtu is not None:
        reduce_mtu(c, mtu, msg.version, ctx)
        return None
    reason = soft_error(msg)
    if reason is not None:
        # Never a reset, in any state (RFC 1122 §4.2.3.9, RFC 5461 §4): the connection keeps
        # trying and the error is what it reports if it gives up.
        c.soft_error = reason
    return None


def path_mtu(msg: IcmpMessage) -> int | None:
    """The path MTU a frag-needed or Packet Too Big advertises (None: it is another error, or a
    Packet Too Big below IPv6's minimum MTU, which RFC 8201 §4 says to ignore)."""
    if msg.version == IPV6_VERSION:
        if msg.type != ICMPV6_PACKET_TOO_BIG:
            return None
        return msg.mtu if msg.mtu >= IPV6_MIN_MTU else -1
    if msg.type != ICMP_DEST_UNREACH or msg.code != ICMP_FRAG_NEEDED:
        return None
    return max(msg.mtu, MIN_PMTU_V4)  # zero from a pre-RFC 1191 router, or spoofed: the floor


def soft_error(msg: IcmpMessage) -> CloseReason | None:
    """The error an ICMP error means for TCP (None: nothing, e.g. a redirect or source quench)."""
    if msg.version == IPV6_VERSION:
        if msg.type == ICMPV6_DEST_UNREACH:
            return V6_UNREACH.get(msg.code)
        if msg.type == ICMPV6_TIME_EXCEEDED:
            return R.HOST_UNREACHABLE
        return R.PROTOCOL_ERROR if msg.type == ICMPV6_PARAMETER_PROBLEM else None
    if msg.type == ICMP_DEST_UNREACH:
        return V4_UNREACH.get(msg.code)
    if msg.type == ICMP_TIME_EXCEEDED:
        return R.HOST_UNREACHABLE
    return R.PROTOCOL_ERROR if msg.type == ICMP_PARAMETER_PROBLEM else None


def reduce_mtu(c: Tcb, mtu: int, version: int, ctx: Context) -> None:
    """Path MTU discovery (RFC 1191 §6.3, RFC 8201 §5.2): segments of the new MSS from now on, and
    what was in flight sent again at that size, since the too-big ones were dropped (Linux
    tcp_v4_mtu_reduced, tcp_simple_retransmit: no congestion response, this was no congestion)."""
    if mtu < 0 or c.state in (S.SYN_SENT, S.SYN_RECEIVED):
        return  # a Packet Too Big below 1280; or a handshake, whose segments are small anyway
    ip_header = 40 if version == IPV6_VERSION else 20
    mss = max(mtu - ip_header - TCP_HEADER, MIN_SND_MSS) - (12 if c.ts_ok else 0)
    if mss >= c.snd_mss:
        return  # RFC 1191 §6.3: a path MTU only ever decreases from this
    c.snd_mss = mss
    c.cc.set_mss(mss)
    ctx.counters.inc("PMTUReductions")
    if c.snd_una == c.snd_max:
        return
    # Resend from SND.UNA at the new size: go-back-N without the RTO's backoff or window cut.
    c.recovery.on_timeout()
    c.rtt_seq = None  # Karn: no RTT sample from what goes out twice
    c.tlp_high_seq = None
    c.snd_nxt = c.snd_una
    push(c, ctx)
