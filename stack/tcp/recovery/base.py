"""The loss-recovery interface and the part every algorithm shares (RFC 5681 §3.2 detection)."""

from __future__ import annotations

from stack.tcp.context import Context
from stack.tcp.seq import seq_ge, seq_sub
from stack.tcp.tcb import Tcb

DUP_THRESH = 3  # RFC 5681 §3.2: the third duplicate ACK signals a loss


class LossRecovery:
    """State of one connection's recovery; subclasses say what to resend and how cwnd moves."""

    __slots__ = ("dupacks", "in_recovery", "recover")

    name = "abstract"

    def __init__(self, iss: int) -> None:
        self.in_recovery = False
        self.dupacks = 0
        self.recover = iss  # RFC 6582 `recover`: SND.MAX when the episode began

    # ---- what the ACK processing reports (stack.tcp.acks)
    def on_sack_blocks(self, c: Tcb, blocks: tuple[tuple[int, int], ...]) -> None:
        """The SACK blocks of an ACK that acknowledges less than SND.MAX (ignored without SACK)."""

    def on_new_ack(self, c: Tcb, acked: int, ctx: Context) -> None:
        """SND.UNA advanced by `acked` bytes (already moved): grow the window, or continue or
        end the recovery episode."""
        cc = c.cc
        if not self.in_recovery:
            self.dupacks = 0
            cc.on_ack(acked, ctx.now, seq_sub(c.snd_max, c.snd_una))
        elif seq_ge(c.snd_una, self.recover):
            # RFC 6582 §3.2 step 3 / RFC 6675 §5: a full acknowledgment ends the episode.
            self.in_recovery = False
            self.dupacks = 0
            cc.on_recovery_exit(ctx.now, seq_sub(c.snd_max, c.snd_una))
        else:
            self._partial_ack(c, acked, ctx)

    def on_duplicate_ack(self, c: Tcb, ctx: Context) -> None:
        """An ACK that is a duplicate by RFC 5681 §2's definition."""
        self.dupacks += 1
        if self.in_recovery:
            self._further_duplicate(c, ctx)
        elif (self.dupacks == DUP_THRESH or self._lost_early(c)) and seq_ge(c.snd_una, self.recover):
            # Fast retransmit and recovery (RFC 6582 §3.2 steps 1-2, RFC 6675 §5); `recover`
            # keeps a second episode from starting on the same window's losses.
            self.in_recovery = True
            self.recover = c.snd_max
            c.cc.on_loss(ctx.now, seq_sub(c.snd_max, c.snd_una))
            ctx.counters.inc("TCPFastRetrans")
            self._enter(c, ctx)

    def on_timeout(self) -> None:
        """The retransmission timer fired: go-back-N takes over, the episode is over."""
        self.in_recovery = False
        self.dupacks = 0

    def pipe(self, c: Tcb) -> int:
        """Bytes in flight during recovery (what `sender.push` may add to)."""
        return seq_sub(c.snd_nxt, c.snd_una)

    # ---- what an algorithm decides
    def _lost_early(self, c: Tcb) -> bool:
        """Whether SND.UNA counts as lost before the third duplicate ACK."""
        return False

    def _enter(self, c: Tcb, ctx: Context) -> None:
        raise NotImplementedError

    def _partial_ack(self, c: Tcb, acked: int, ctx: Context) -> None:
        raise NotImplementedError

    def _further_duplicate(self, c: Tcb, ctx: Context) -> None:
        raise NotImplementedError
