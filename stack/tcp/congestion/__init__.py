"""Congestion control behind one small interface; NewReno (RFC 5681, RFC 6582) is the default.

Loss *detection* (duplicate ACKs, partial ACKs, the retransmission timer) lives in the connection;
an algorithm only decides `cwnd` and `ssthresh` at the moments the connection reports. To add one,
subclass `CongestionControl` and call `register("name", factory)`; `Config.congestion_control`
then selects it for every connection of a stack.
"""

from __future__ import annotations

from collections.abc import Callable


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


CongestionFactory = Callable[[int, int], CongestionControl]

ALGORITHMS: dict[str, CongestionFactory] = {"newreno": NewReno}


def register(name: str, factory: CongestionFactory) -> None:
    """Make an algorithm selectable as `Config(congestion_control=name)`."""
    ALGORITHMS[name] = factory


def create(name: str, mss: int, initial_window_segments: int) -> CongestionControl:
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}") from None
    return factory(mss, initial_window_segments)


from stack.tcp import cubic as _cubic  # noqa: E402, F401  (registers "cubic"; last, as cubic imports this module)
