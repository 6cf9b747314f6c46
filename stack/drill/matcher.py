"""Script space <-> live packets, and the comparison of an outbound packet with the script's, as
packetdrill does them.

Sequence numbers (packetdrill's socket.h convention, tcpdump's): in segments with SYN set, seq and
ack are absolute; in all others they count from the first SYN of their side. The remote side's ISN
is the script's own (the seq of its first SYN, sent as written); the local ISN is whatever the side
under test picked, learned from its first SYN or SYN-ACK and mapped to the seq the script wrote on
that line (one exception: a RST with SEQ 0, the answer to a segment without ACK, is written 0,
which packetdrill's mapping cannot express once the local ISN is known). A later inbound SYN that
the side under test answers with a SYN,ACK opens a new connection on the 4-tuple (after a reset,
or out of TIME-WAIT): from that SYN,ACK on, both sides count from the new SYNs. SACK blocks move
with the ack. An inbound TS ecr is mapped to the live TS val of the outbound packet whose script
TS val it names (or interpolated from the first such pair).

An outbound packet matches when its flags (PSH included), seq, ack (when ACK is set), payload
length, window (when the script says `win`), options (in order; the TS val is not compared, as in
packetdrill) and payload (zeros, as the runner writes them) are what the script says. Time is
checked by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.drill.calls import Mismatch
from stack.drill.script import PacketSpec, TcpOption, flags_to_text
from stack.wire.segment import ACK, RST, SYN, Segment

MASK = 0xFFFFFFFF


@dataclass
class SeqMap:
    remote_isn: int = 0  # the script's (and the wire's) ISN of the remote peer
    script_local_isn: int | None = None
    live_local_isn: int | None = None
    ts_map: dict[int, int] = field(default_factory=dict)  # script TS val -> live TS val
    first_ts: tuple[int, int] | None = None  # (script, live) of the first outbound TS val
    seen_remote_syn: bool = False
    pending_remote_isn: int | None = None  # a later SYN's seq, until a SYN,ACK takes it up

    # --- remote (inbound) side
    def inbound(self, spec: PacketSpec) -> tuple[int, int, tuple[TcpOption, ...]]:
        """Live (seq, ack, options) of an inbound script packet."""
        syn = bool(spec.flags & SYN)
        if syn and not spec.flags & ACK:
            if not self.seen_remote_syn:
                self.seen_remote_syn = True
                self.remote_isn = spec.seq
            else:
                self.pending_remote_isn = spec.seq  # a new connection, once a SYN,ACK answers it
        seq = spec.seq if syn else (spec.seq + self.remote_isn) & MASK
        offset = self._local_offset(syn)
        ack = (spec.ack + offset) & MASK if spec.flags & ACK else 0
        options = tuple(self._inbound_option(o, offset, bool(spec.flags & ACK)) for o in spec.options or ())
        return seq, ack, options

    def _inbound_option(self, opt: TcpOption, offset: int, has_ack: bool) -> TcpOption:
        if opt.kind == "sack":
            return TcpOption("sack", tuple((v + offset) & MASK for v in opt.values))
        if opt.kind == "TS" and has_ack:
            val, ecr = opt.values
            live = self.ts_map.get(ecr)
            if live is None and self.first_ts is not None:
                live = (ecr - self.first_ts[0] + self.first_ts[1]) & MASK
            return TcpOption("TS", (val, ecr if live is None else live))
        return opt

    def _local_offset(self, syn: bool) -> int:
        live = self.live_local_isn or 0
        if syn:
            return (live - (self.script_local_isn or 0)) & MASK
        return live

    # --- local (outbound) side
    def learn_outbound(self, spec: PacketSpec, seg: Segment, options: list[TcpOption]) -> None:
        """Take the local ISN from our first SYN, and TS val pairs, before comparing."""
        pending = self.pending_remote_isn
        if seg.flags & SYN and seg.flags & ACK and pending is not None and (seg.ack - 1) & MASK == pending:
            # The SYN,ACK of a new connection on this 4-tuple: both sides count from the new SYNs.
            self.remote_isn = pending
            self.pending_remote_isn = None
            self.live_local_isn = None
            self.ts_map.clear()
            self.first_ts = None
        if seg.flags & SYN and self.live_local_isn is None:
            self.live_local_isn = seg.seq
            self.script_local_isn = spec.seq
        script_ts = next((o for o in spec.options or () if o.kind == "TS"), None)
        live_ts = next((o for o in options if o.kind == "TS"), None)
        if script_ts is not None and live_ts is not None:
            self.ts_map[script_ts.values[0]] = live_ts.values[0]
            if self.first_ts is None:
                self.first_ts = (script_ts.values[0], live_ts.values[0])

    def outbound(self, seg: Segment, options: list[TcpOption]) -> tuple[int, int, list[TcpOption]]:
        """Script-space (seq, ack, options) of a live outbound packet."""
        syn = bool(seg.flags & SYN)
        seq = (seg.seq - self._local_offset(syn)) & MASK
        if seg.flags & RST and seg.seq == 0:
            seq = 0  # the reset of a segment without ACK: <SEQ=0> (RFC 9293 §3.10.7.1), written as 0
        ack_offset = 0 if syn else self.remote_isn
        ack = (seg.ack - ack_offset) & MASK if seg.flags & ACK else 0
        mapped = []
        for opt in options:
            if opt.kind == "sack":
                opt = TcpOption("sack", tuple((v - self.remote_isn) & MASK for v in opt.values))
            elif opt.kind == "TS" and self.first_ts is not None:
                opt = TcpOption("TS", ((opt.values[0] - self.first_ts[1] + self.first_ts[0]) & MASK, opt.values[1]))
            mapped.append(opt)
        return seq, ack, mapped


def describe(seg: Segment, seqmap: SeqMap, options: list[TcpOption]) -> str:
    """A live outbound packet in script notation: `F. 1:1(0) ack 2 win 502 <nop,nop,TS val 5 ecr 7>`."""
    seq, ack, mapped = seqmap.outbound(seg, options)
    n = len(seg.payload)
    parts = [flags_to_text(seg.flags), f"{seq}:{(seq + n) & MASK}({n})"]
    if seg.flags & ACK:
        parts.append(f"ack {ack}")
    parts.append(f"win {seg.window}")
    if mapped:
        parts.append("<" + ",".join(o.text() for o in mapped) + ">")
    return " ".join(parts)


def compare(spec: PacketSpec, seg: Segment, options: list[TcpOption], seqmap: SeqMap) -> Mismatch | None:
    """The first field in which a live outbound packet differs from the script's, or None."""
    seqmap.learn_outbound(spec, seg, options)
    seq, ack, mapped = seqmap.outbound(seg, options)
    if seg.flags != spec.flags:
        return Mismatch("flags", flags_to_text(spec.flags), flags_to_text(seg.flags))
    if seq != spec.seq:
        return Mismatch("seq", f"seq {spec.seq}", f"seq {seq}")
    if spec.flags & ACK and ack != spec.ack:
        return Mismatch("ack", f"ack {spec.ack}", f"ack {ack}")
    if len(seg.payload) != spec.length:
        return Mismatch("len", f"len {spec.length}", f"len {len(seg.payload)}")
    if spec.window is not None and seg.window != spec.window:
        return Mismatch("win", f"win {spec.window}", f"win {seg.window}")
    if spec.options is not None and not _options_match(spec.options, mapped):
        return Mismatch("options", _options_text(spec.options), _options_text(mapped))
    if any(seg.payload):
        return Mismatch("payload", "zero bytes, as written", "other bytes")
    return None


def _options_match(expected: tuple[TcpOption, ...], actual: list[TcpOption]) -> bool:
    if len(expected) != len(actual):
        return False
    for want, got in zip(expected, actual, strict=True):
        if want.kind != got.kind:
            return False
        if want.kind != "TS" and want.values != got.values:
            return False
    return True


def _options_text(options: tuple[TcpOption, ...] | list[TcpOption]) -> str:
    return "<" + ",".join(o.text() for o in options) + ">" if options else "no options"
