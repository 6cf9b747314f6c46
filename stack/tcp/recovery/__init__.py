"""Loss recovery behind one interface: what to resend after duplicate or partial ACKs.

Detection of a loss by duplicate ACKs and what follows (fast retransmit, the recovery episode, its
end at a full acknowledgment) is common to every algorithm and lives in `LossRecovery`; an
algorithm decides what is in flight during recovery (`pipe`), what to resend (`_resend`), and how
the congestion window is adjusted at each step, touching the congestion control only through its
interface (stack.tcp.congestion.base). Two implementations: NewReno (RFC 6582) and SACK-based
recovery (RFC 6675). The retransmission timer (stack.tcp.timers) ends any episode (`on_timeout`).
"""

from __future__ import annotations

from stack.tcp.recovery.base import LossRecovery
from stack.tcp.recovery.newreno import NewRenoRecovery
from stack.tcp.recovery.sack import SackRecovery

__all__ = ["LossRecovery", "NewRenoRecovery", "SackRecovery", "for_connection"]


def for_connection(sack_ok: bool, iss: int) -> LossRecovery:
    """The algorithm for a connection: SACK-based once both SYNs carried SACK-permitted."""
    return SackRecovery(iss) if sack_ok else NewRenoRecovery(iss)
