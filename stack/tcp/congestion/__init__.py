"""Congestion control behind one small interface; NewReno (RFC 5681, RFC 6582) is the default.

Loss *detection* (duplicate ACKs, partial ACKs, the retransmission timer) lives in the connection;
an algorithm only decides `cwnd` and `ssthresh` at the moments the connection reports. To add one,
subclass `CongestionControl` and call `register("name", factory)`; `Config.congestion_control`
then selects it for every connection of a stack.
"""

from __future__ import annotations

from collections.abc import Callable

from stack.tcp.congestion.base import CongestionControl
from stack.tcp.congestion.cubic import Cubic
from stack.tcp.congestion.newreno import NewReno

__all__ = ["ALGORITHMS", "CongestionControl", "Cubic", "NewReno", "create", "register"]

CongestionFactory = Callable[[int, int], CongestionControl]

ALGORITHMS: dict[str, CongestionFactory] = {"newreno": NewReno, "cubic": Cubic}


def register(name: str, factory: CongestionFactory) -> None:
    """Make an algorithm selectable as `Config(congestion_control=name)`."""
    ALGORITHMS[name] = factory


def create(name: str, mss: int, initial_window_segments: int) -> CongestionControl:
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}") from None
    return factory(mss, initial_window_segments)

