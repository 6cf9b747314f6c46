"""NewReno (RFC 5681 slow start and congestion avoidance, RFC 6582 recovery): the default."""

from __future__ import annotations

from stack.tcp.congestion.base import CongestionControl


class NewReno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance with RFC 6582 recovery."""

    name = "newreno"

    def __init__(self, mss: int, initial_window_segments: int) -> None:
        super().__init__(mss, initial_window_segments)
        self._ca_acc = 0

    def on_ack(self, acked: int, now: float, in_flight: int) -> None:
        if self.cwnd < self.ssthresh:
            # RFC 5681 §3.1 slow start, with appropriate byte counting limited to one SMSS (RFC 3465 L=1)...
            # relaxed to 2*SMSS as Linux does for delayed ACKs.
            self.cwnd += min(acked, 2 * self.mss)
        else:
            # Congestion avoidance: about one SMSS per RTT (RFC 5681 eq. 3, byte-counting form).
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += self.mss

    def on_loss(self, now: float, in_flight: int) -> None:
        # RFC 5681 §3.2 step 2/3 (eq. 4), RFC 6582 §3.2 step 2.
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss

    def on_recovery_exit(self, now: float, in_flight: int) -> None:
        # RFC 6582 §3.2 step 3, full ACK: deflate to min(ssthresh, FlightSize + SMSS).
        self.cwnd = min(self.ssthresh, max(in_flight, 0) + self.mss)
        self._ca_acc = 0

