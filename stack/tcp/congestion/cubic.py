"""CUBIC congestion control (RFC 9438) behind the `CongestionControl` interface.

Windows are bytes, as everywhere in the stack; the cubic function itself is evaluated in segments
of the current MSS, as RFC 9438 writes it (§4.1.2), and converted back. Time is only what the
connection passes in as `now` (seconds). Selected with `Config(congestion_control="cubic")`.

What is implemented, by section of RFC 9438:

- §4.2  W_cubic(t) = C*(t - K)^3 + W_max with C = 0.4, K = cubic_root((W_max - cwnd_epoch) / C),
        t measured from the start of the current congestion-avoidance stage; per ACK the window
        moves toward target = W_cubic(t + RTT), clamped to [cwnd, 1.5*cwnd].
- §4.3  the Reno-friendly estimate W_est (alpha_cubic = 3(1 - beta)/(1 + beta), then 1 once W_est
        has reached cwnd_prior); cwnd follows W_est while W_cubic(t) < W_est.
- §4.4/§4.5  concave growth below W_max and convex growth beyond it (the same per-ACK rule).
- §4.6  multiplicative decrease: ssthresh = flight_size * beta_cubic (beta = 0.7), cwnd = ssthresh,
        both at least 2 MSS. The flight size is capped at cwnd: after a go-back-N retransmission
        timeout `SND.MAX - SND.UNA` overstates what is in the network.
- §4.7  fast convergence: a loss before the old W_max was regained lowers W_max to cwnd*(1 + beta)/2.
- §4.8  timeout: ssthresh as in §4.6, cwnd = 1 MSS (RFC 5681); the first congestion-avoidance
        stage afterwards runs with K = 0 and W_max = cwnd_epoch.
- §4.10 slow start (RFC 5681, byte counting up to 2 MSS per ACK as `NewReno` here) below ssthresh.
        HyStart++ (RFC 9406) is NOT implemented: it needs per-ACK RTT samples.
- §5.8  no growth while the sender is not cwnd-limited, and such stretches (idle periods among
        them) are left out of t.

Not implemented: §4.9 (undo after a spurious congestion event: the interface has no such hook) and
ECN (the stack has none).

RTT. The target W_cubic(t + RTT) needs a round-trip time, which the interface does not hand over.
`on_rtt_sample(rtt, now)` accepts real samples (RFC 6298 measurements) and keeps a smoothed RTT as
§4.2 asks; until the connection calls it, Cubic estimates the RTT from the ACK stream alone: the
highest byte sent is visible at every ACK (acknowledged bytes + `in_flight`), so a byte that first
appears between two ACKs was sent after the earlier one, and the time from that earlier ACK to the
one that covers the byte is an upper bound on its round trip -- exact when sending is ACK-clocked.
The minimum of those bounds is used.
"""

from __future__ import annotations

import math
from collections import deque

from stack.tcp.congestion.base import CongestionControl

C = 0.4  # RFC 9438 §5.1: C_cubic, segments / second^3
BETA = 0.7  # RFC 9438 §4.6: beta_cubic, the multiplicative decrease factor
ALPHA = 3.0 * (1.0 - BETA) / (1.0 + BETA)  # RFC 9438 §4.3: alpha_cubic, about 0.53
MAX_TARGET_RATIO = 1.5  # RFC 9438 §4.2: target is at most 1.5 * cwnd

SLOW_START = "slow-start"
RENO_FRIENDLY = "reno-friendly"
CONCAVE = "concave"
CONVEX = "convex"
APP_LIMITED = "app-limited"
RECOVERY = "recovery"
TIMEOUT = "timeout"


class Cubic(CongestionControl):
    """RFC 9438 CUBIC. Public attributes are for tests and observers; windows are in bytes."""

    name = "cubic"

    def __init__(self, mss: int, initial_window_segments: int, *, fast_convergence: bool = True) -> None:
        super().__init__(mss, initial_window_segments)
        self.fast_convergence = fast_convergence  # RFC 9438 §4.7 (SHOULD)
        self.w_max = 0.0  # bytes: the window just before the last reduction (fast convergence aside)
        self.cwnd_prior = 0.0  # bytes: cwnd when ssthresh was last set (§4.6), for alpha in §4.3
        self.w_est = 0.0  # bytes: the Reno-friendly estimate (§4.3)
        self.k = 0.0  # seconds: when W_cubic regains W_max (§4.2)
        self.cwnd_epoch = 0  # bytes: cwnd at the start of this congestion-avoidance stage
        self.t_epoch: float | None = None  # start of this congestion-avoidance stage; None: not begun
        self.region = SLOW_START  # what the last ACK did (for observers)
        self.srtt: float | None = None  # from on_rtt_sample
        self.min_rtt: float | None = None  # from the ACK stream (see the module docstring)
        self._after_timeout = False  # §4.8: next stage uses K = 0, W_max = cwnd_epoch
        self._reduced = False  # a reduction was made and no new ACK has arrived since
        self._frac = 0.0  # sub-byte growth not yet added to the integer cwnd
        self._last_ack: float | None = None
        self._drained = False  # the previous ACK left nothing in flight
        # ACK-stream RTT estimator; positions count bytes from a (re)synchronisation point.
        self._est_acked = -1  # bytes acknowledged since then; -1: not synchronised
        self._sent: deque[tuple[float, int]] = deque()

    # ------------------------------------------------------------------ the cubic function
    def w_cubic(self, t: float) -> float:
        """RFC 9438 §4.2 Figure 1, W_cubic(t) = C*(t - K)^3 + W_max, in bytes (evaluated in segments)."""
        d = t - self.k
        return (C * d * d * d + self.w_max / self.mss) * self.mss

    @property
    def rtt(self) -> float:
        """The RTT used for the target: the smoothed RTT when fed, else the ACK-stream estimate, else 0."""
        if self.srtt is not None:
            return self.srtt
        return self.min_rtt if self.min_rtt is not None else 0.0

    def _begin_epoch(self, now: float) -> None:
        """Start a congestion-avoidance stage (RFC 9438 §4.2, §4.3, §4.8)."""
        self.t_epoch = now
        self.cwnd_epoch = self.cwnd
        self.w_est = float(self.cwnd)  # §4.3: W_est = cwnd_epoch at the start of the stage
        if self._after_timeout or self.w_max <= self.cwnd_epoch:
            # §4.8 after a timeout; and, as Linux does, whenever cwnd already stands at or above the
            # old maximum (no congestion event yet): the curve starts on its plateau, K = 0.
            self.w_max = float(self.cwnd_epoch)
            self.k = 0.0
            self._after_timeout = False
        else:
            self.k = math.cbrt((self.w_max - self.cwnd_epoch) / self.mss / C)  # §4.2 Figure 2
        self._frac = 0.0

    # ------------------------------------------------------------------ the interface
    def on_ack(self, acked: int, now: float, in_flight: int) -> None:
        self._estimate_rtt(acked, now, in_flight)
        self._reduced = False
        mss = self.mss
        # RFC 9438 §5.8: grow only when cwnd was the limit. Before this ACK `in_flight + acked` was
        # outstanding; a sender that fills its window keeps that within one segment of cwnd.
        limited = in_flight + acked + mss > self.cwnd
        last, self._last_ack = self._last_ack, now
        drained, self._drained = self._drained, in_flight == 0
        if self.t_epoch is not None and last is not None:
            rtt = self.rtt
            if not limited:
                self.t_epoch += now - last  # §5.8: t must not include application-limited time ...
            elif drained and rtt > 0.0 and now - last > 2.0 * rtt:
                self.t_epoch += now - last - rtt  # ... nor an idle period (all acked, then a pause)
        if not limited:
            self.region = APP_LIMITED
            return
        if self.cwnd < self.ssthresh:
            # RFC 9438 §4.10 / RFC 5681 §3.1 slow start; the overshoot past ssthresh is dropped.
            self.cwnd = min(self.cwnd + min(acked, 2 * mss), self.ssthresh)
            self.region = SLOW_START
            return
        if self.t_epoch is None:
            self._begin_epoch(now)
        assert self.t_epoch is not None
        t = now - self.t_epoch
        cwnd = float(self.cwnd) + self._frac
        # §4.3: W_est grows by alpha_cubic segments per window acknowledged (Figure 4, in bytes);
        # alpha becomes 1 once W_est has reached cwnd_prior.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else ALPHA
        self.w_est += alpha * mss * acked / cwnd
        if self.w_cubic(t) < self.w_est:
            # §4.3 Reno-friendly region: cwnd = W_est (never lowered by it).
            new = max(cwnd, self.w_est)
            self.region = RENO_FRIENDLY
        else:
            # §4.2 target, §4.4 concave / §4.5 convex region: (target - cwnd) / cwnd per SMSS acked.
            target = min(max(self.w_cubic(t + self.rtt), cwnd), MAX_TARGET_RATIO * cwnd)
            new = cwnd + (target - cwnd) * acked / cwnd
            self.region = CONCAVE if self.w_cubic(t) < self.w_max else CONVEX
        self.cwnd = int(new)
        self._frac = new - self.cwnd

    def on_loss(self, now: float, in_flight: int) -> None:
        """Fast retransmit (RFC 9438 §4.6, §4.7). A second signal before any new ACK (e.g. duplicate
        ACKs right after a timeout) belongs to the same congestion event and reduces nothing."""
        if self._reduced:
            return
        self._reduce(in_flight)
        self.cwnd = max(self.ssthresh, 2 * self.mss)  # §4.6: cwnd = max(ssthresh, 2)
        self.region = RECOVERY

    def on_recovery_exit(self, now: float, in_flight: int) -> None:
        # RFC 6582 §3.2 step 3 (full ACK), first option: cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS).
        # The congestion-avoidance stage starts with the next ACK (t_epoch was cleared by on_loss).
        self.cwnd = min(self.ssthresh, max(in_flight, self.mss) + self.mss)
        self._frac = 0.0
        self._reduced = False

    def on_timeout(self, now: float, in_flight: int) -> None:
        """RFC 9438 §4.8: ssthresh as in §4.6 (once per congestion event: a timeout in fast recovery,
        or a repeated one, keeps the reduction already made, as Linux does), cwnd = 1 MSS."""
        if not self._reduced:
            self._reduce(in_flight)
        self.cwnd = self.mss
        self._after_timeout = True
        self.region = TIMEOUT

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        """A round-trip measurement from the connection (proposed interface addition): SRTT per
        RFC 6298 §2, used for W_cubic(t + RTT) (RFC 9438 §4.2)."""
        rtt = max(rtt, 0.0)
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt

    # ------------------------------------------------------------------ internals
    def _reduce(self, in_flight: int) -> None:
        cwnd = self.cwnd
        # §4.7 fast convergence: a loss before regaining the previous W_max releases bandwidth.
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + BETA) / 2.0
        else:
            self.w_max = float(cwnd)
        self.cwnd_prior = float(cwnd)  # §4.6
        flight = min(in_flight, cwnd) if in_flight > 0 else cwnd
        self.ssthresh = max(int(flight * BETA), 2 * self.mss)  # §4.6
        self.t_epoch = None  # the next congestion-avoidance stage starts afresh
        self._frac = 0.0
        self._reduced = True
        self._est_acked = -1  # recovery ACKs are not reported: resynchronise the RTT estimator

    def _estimate_rtt(self, acked: int, now: float, in_flight: int) -> None:
        """Upper bounds on the RTT from the ACK stream (module docstring); keeps their minimum.

        `_sent` holds (time, highest position sent as of that ACK). A byte above the position noted
        at time T was sent at or after T, so the newest entry below what this ACK covers bounds the
        round trip of the highest byte acknowledged now."""
        sent = self._sent
        if self._est_acked < 0:  # (re)synchronise: positions count from this ACK on
            self._est_acked = 0
            sent.clear()
            sent.append((now, in_flight))
            return
        self._est_acked += acked
        covered = self._est_acked
        while len(sent) >= 2 and sent[1][1] < covered:
            sent.popleft()
        if sent and sent[0][1] < covered:
            sample = now - sent[0][0]
            self.min_rtt = sample if self.min_rtt is None else min(self.min_rtt, sample)
        top = covered + in_flight
        if not sent or top > sent[-1][1]:
            sent.append((now, top))
        else:
            sent[-1] = (now, top)  # nothing new sent since: the later time is the tighter bound

