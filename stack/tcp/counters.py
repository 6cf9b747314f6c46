"""Counters of a stack, named as Linux's `nstat` names them where the meaning matches."""

from __future__ import annotations

# Names and meaning follow Linux (`nstat -az`, without the Tcp/TcpExt prefix).
COUNTER_NAMES: tuple[str, ...] = (
    "ActiveOpens",  # connections that went CLOSED -> SYN-SENT
    "PassiveOpens",  # connections that went LISTEN -> SYN-RECEIVED
    "AttemptFails",  # SYN-SENT/SYN-RECEIVED -> CLOSED, or SYN-RECEIVED -> LISTEN
    "EstabResets",  # ESTABLISHED/CLOSE-WAIT -> CLOSED by a reset
    "InSegs",
    "OutSegs",
    "RetransSegs",
    "InErrs",  # segments dropped as malformed (every wire reason) or bad checksum
    "InCsumErrors",
    "OutRsts",
    "TCPTimeWaitOverflow",
    "TCPAbortOnClose",  # closed with unread data: RST instead of FIN
    "TCPAbortOnData",  # data after the application fully closed: RST
    "TCPAbortOnTimeout",
    "TCPAbortOnMemory",  # too many orphans (max_orphans): reset at close or at a timer
    "TCPLossProbes",  # tail loss probes sent (RFC 8985 §7)
    "TCPAbortOnLinger",  # abort() / SO_LINGER {1, 0}
    "TCPChallengeACK",
    "TCPSYNChallenge",
    "TCPACKSkippedChallenge",  # challenge ACK suppressed by the rate limit
    "TCPTimeouts",
    "TCPSynRetrans",
    "TCPFastRetrans",
    "DelayedACKs",
    "PAWSEstab",
    "TCPOFOQueue",  # segments queued out of order
    "TCPOFODrop",  # out-of-order segments dropped: no memory left for them
    "OfoPruned",  # prunings that dropped out-of-order data (tcp_prune_ofo_queue)
    "PruneCalled",  # times memory had to be made for a segment (tcp_prune_queue)
    "TCPRcvQDrop",  # in-order segments dropped: no memory left for them
    "TCPMemoryPressures",  # times the host entered memory pressure (tcp_mem)
    "TCPAbortOnMemory",  # orphans reset on close while memory was exhausted
    "TW",  # connections that entered TIME-WAIT
    "TWKilled",  # TIME-WAIT ended early by RST
    "TWRecycled",  # TIME-WAIT 4-tuple reused by an outgoing connect (tw_reuse)
    "TCPTimeWaitReopen",  # TIME-WAIT 4-tuple reopened by an incoming SYN (RFC 6191)
    "ListenOverflows",
    "ListenDrops",
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "TCPFinTimeout",  # orphan FIN-WAIT-2 reaped after fin_timeout
    "TCPKeepAliveProbes",
    "TCPZeroWindowProbes",
    "TCPRcvNoListener",  # segment to a port nobody listens on (answered with RST)
    "TCPMisrouted",  # another worker's flow reached this one (multi-queue TUN): dropped, no RST
    # ICMP and ICMPv6 (stack.tcp.icmp), named as Linux's /proc/net/snmp and snmp6 with their section;
    # per-type IcmpMsgInType<n> / Icmp6InType<n> (and Out) appear once counted.
    "IcmpInMsgs",
    "IcmpInErrors",  # malformed, or an error about no connection of ours
    "IcmpInCsumErrors",
    "IcmpInDestUnreachs",
    "IcmpInTimeExcds",
    "IcmpInParmProbs",
    "IcmpInEchos",
    "IcmpOutMsgs",
    "IcmpOutEchoReps",
    "IcmpOutRateLimitGlobal",  # echo replies the token bucket held back
    "Icmp6InMsgs",
    "Icmp6InErrors",
    "Icmp6InCsumErrors",
    "Icmp6InDestUnreachs",
    "Icmp6InPktTooBigs",
    "Icmp6InTimeExcds",
    "Icmp6InParmProblems",
    "Icmp6InEchos",
    "Icmp6OutMsgs",
    "Icmp6OutEchoReplies",
    "Icmp6OutRateLimitGlobal",
    "OutOfWindowIcmps",  # ICMP errors quoting a SEQ outside SND.UNA..SND.NXT (RFC 5927 §5.1)
    "PMTUReductions",  # connections whose MSS path MTU discovery lowered
)

# Counted drops of malformed input, one per wire reason: "InMalformed.<reason>".
MALFORMED_PREFIX = "InMalformed."


class Counters(dict[str, int]):
    """A dict of counter name -> value, with every known name present from the start."""

    def __init__(self) -> None:
        super().__init__((name, 0) for name in COUNTER_NAMES)

    def inc(self, name: str, n: int = 1) -> None:
        self[name] = self.get(name, 0) + n

    def malformed(self, reason: str) -> None:
        self.inc(MALFORMED_PREFIX + reason)
        self["InErrs"] += 1
