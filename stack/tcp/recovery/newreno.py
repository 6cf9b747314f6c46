"""NewReno loss recovery (RFC 6582), for connections without SACK."""

from __future__ import annotations

from stack.tcp.context import Context
from stack.tcp.recovery.base import LossRecovery
from stack.tcp.sender import retransmit_first
from stack.tcp.tcb import Tcb


class NewRenoRecovery(LossRecovery):
    __slots__ = ()

    name = "newreno"

    def _enter(self, c: Tcb, ctx: Context) -> None:
        retransmit_first(c, ctx)  # step 2: resend what SND.UNA points at

    def _partial_ack(self, c: Tcb, acked: int, ctx: Context) -> None:
        # Step 3, partial acknowledgment: the next hole starts at the new SND.UNA; resend it and
        # deflate the window by what was acknowledged.
        retransmit_first(c, ctx)
        c.cc.deflate(acked)

    def _further_duplicate(self, c: Tcb, ctx: Context) -> None:
        c.cc.inflate(c.snd_mss)  # step 4: another segment has left the network
