"""The congestion-control interface: what the connection tells an algorithm, and the window it keeps."""

from __future__ import annotations


class CongestionControl:
    """The interface. Window sizes are in bytes; `mss` is the sender's effective MSS."""

    name = "abstract"

    def __init__(self, mss: int, initial_window_segments: int) -> None:
        self.mss = mss
        # RFC 6928 / RFC 5681 §3.1: IW; ssthresh starts arbitrarily high.
        self.cwnd = initial_window_segments * mss
        self.ssthresh = 1 << 30

    def on_ack(self, acked: int, now: float, in_flight: int) -> None:
        """New data was acknowledged outside loss recovery: grow the window."""
        raise NotImplementedError

    def on_loss(self, now: float, in_flight: int) -> None:
        """Loss detected by duplicate ACKs (fast retransmit): set ssthresh and cwnd for recovery."""
        raise NotImplementedError

    def on_recovery_exit(self, now: float, in_flight: int) -> None:
        """A full ACK ended fast recovery."""
        raise NotImplementedError

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        """A round-trip measurement (RFC 6298 / RFC 7323), for algorithms that use one (CUBIC)."""

    def on_timeout(self, now: float, in_flight: int) -> None:
        """The retransmission timer fired (RFC 5681 §3.1 eq. 4): loss window of one segment."""
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss

    def set_mss(self, mss: int) -> None:
        self.mss = mss

    # Window changes that belong to a loss-recovery algorithm (stack.tcp.recovery), not to the
    # congestion control: whichever algorithm runs, recovery adjusts its window only through these.
    def inflate(self, nbytes: int) -> None:
        """NewReno recovery: each further duplicate ACK means a segment left the network (RFC 6582
        §3.2 step 4), so the window may grow by it temporarily."""
        self.cwnd += nbytes

    def deflate(self, acked: int) -> None:
        """NewReno recovery, partial acknowledgment (RFC 6582 §3.2 step 3): take back what was
        acknowledged, add one segment back if at least one was."""
        self.cwnd = max(self.cwnd - acked + (self.mss if acked >= self.mss else 0), self.mss)

    def limit_to_ssthresh(self) -> None:
        """SACK recovery (RFC 6675 §5): the window during recovery is ssthresh, with none of
        NewReno's inflation."""
        self.cwnd = min(self.cwnd, max(self.ssthresh, 2 * self.mss))
