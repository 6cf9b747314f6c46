"""Retransmission timer computation (RFC 6298)."""

from __future__ import annotations


class RttEstimator:
    """SRTT/RTTVAR/RTO per RFC 6298 §2, with the backoff of §5.5 kept separately.

    Samples are taken per RFC 6298 §3 (Karn's rule: never from a retransmitted segment) or from
    the timestamp echo (RFC 7323 §4), which is unambiguous.
    """

    __slots__ = ("_rto", "backoff", "rto_max", "rto_min", "rttvar", "srtt")

    K = 4
    ALPHA = 1 / 8
    BETA = 1 / 4
    CLOCK_GRANULARITY = 0.001  # G of RFC 6298 §2: the timestamp clock ticks in milliseconds

    def __init__(self, initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._rto = initial
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.backoff = 0

    def sample(self, rtt: float) -> None:
        """A new round-trip measurement (RFC 6298 §2.2, §2.3). Also ends any backoff (§5.7)."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt
        # RFC 6298 (2.3) with Linux's floor: rto_min bounds the variance term, not the sum
        # (tcp_set_rto: srtt + max(4 * mdev, rto_min)), so a fast path's RTO is SRTT + 200 ms.
        self._rto = self.srtt + max(self.CLOCK_GRANULARITY, self.K * self.rttvar, self.rto_min)
        self.backoff = 0

    @property
    def rto(self) -> float:
        """The current RTO with backoff applied, clamped to [rto_min, rto_max] (§2.4, §2.5, §5.5)."""
        base = max(self.rto_min, min(self._rto, self.rto_max))
        return min(base * (1 << self.backoff), self.rto_max)

    def on_timeout(self) -> None:
        """RFC 6298 §5.5: back off the timer (doubling), up to rto_max."""
        if self.rto < self.rto_max:
            self.backoff += 1
