"""The stack target: tcpstack is the side under test, on a virtual clock.

Time jumps from one timer deadline to the next, so a script that waits out a 60 s TIME-WAIT runs in
milliseconds. Inbound packets go to the core as they come; what the core sends and reports is
collected when time moves on, a system call runs, or the runner looks for an outbound packet --
so inbound packets at the same instant with nothing between them reach tcpstack as one batch, as
the runtime's read batch delivers them (and ACKs requested in that batch go out once, after it).

Sysctls map to `Config` fields (`SYSCTLS`); a few Linux knobs name behaviour tcpstack has fixed
(`FIXED`): setting one of those to tcpstack's value is accepted, any other value makes the script
unsupported on this target.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from stack.drill.commands import SS_STATES, Sysctl, parse
from stack.drill.core import Config, Core
from stack.drill.runner import LOCAL_ADDR, REMOTE_ADDR, PollFn, WatchFn
from stack.drill.script import Command, Script
from stack.drill.sockets import StackSockets

MAX_STEPS = 200_000  # timer firings per wait: beyond this the stack is spinning (reported as a hang)


def _seconds(scale: float) -> Callable[[str], float]:
    return lambda text: int(text) / scale


def _flag(text: str) -> bool:
    return int(text) != 0


def _buffer(text: str) -> int:
    return int(text.split()[-1])  # min default max: the max is what window scaling is sized for


def _congestion(text: str) -> str:
    names = {"reno": "newreno", "cubic": "cubic"}
    if text not in names:
        raise ValueError(text)
    return names[text]


# Linux sysctl (net.ipv4.tcp_*) -> (Config field, conversion of the sysctl's text).
SYSCTLS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "timestamps": ("timestamps", _flag),
    "sack": ("sack", _flag),
    "window_scaling": ("window_scaling", _flag),
    "fin_timeout": ("fin_timeout", _seconds(1)),
    "rfc1337": ("rfc1337", _flag),
    "syn_retries": ("syn_retries", int),
    "synack_retries": ("synack_retries", int),
    "retries2": ("retries", int),
    "keepalive_time": ("keepalive_time", _seconds(1)),
    "keepalive_intvl": ("keepalive_interval", _seconds(1)),
    "keepalive_probes": ("keepalive_probes", int),
    "tw_reuse": ("tw_reuse", lambda text: text == "1"),
    "syncookies": ("syn_cookies", lambda text: {"0": False, "1": True}[text]),
    "max_tw_buckets": ("max_time_wait", int),
    "invalid_ratelimit": ("challenge_ack_interval", _seconds(1000)),
    "rto_min_us": ("rto_min", _seconds(1e6)),
    "rto_max_ms": ("rto_max", _seconds(1000)),
    "max_syn_backlog": ("syn_backlog", int),
    "congestion_control": ("congestion_control", _congestion),
    # 0: neither early retransmit nor the tail loss probe; 3 (the default) and 4: the probe.
    "early_retrans": ("tail_loss_probe", lambda text: {"0": False, "3": True, "4": True}[text]),
    "orphan_retries": ("orphan_retries", int),
    "syn_linear_timeouts": ("syn_linear_timeouts", int),
    "max_orphans": ("max_orphans", int),
    "rmem": ("recv_buffer", _buffer),
    "wmem": ("send_buffer", _buffer),
}

# Linux knobs whose setting tcpstack has built in: (values that describe tcpstack, what it does).
FIXED: dict[str, tuple[frozenset[str], str]] = {
    "ecn": (frozenset({"0"}), "no ECN"),
    "dsack": (frozenset({"0"}), "no D-SACK"),
    "frto": (frozenset({"0"}), "no F-RTO"),
    "recovery": (frozenset({"0"}), "no RACK"),
    "moderate_rcvbuf": (frozenset({"0"}), "a fixed receive buffer"),
    "slow_start_after_idle": (frozenset({"0"}), "no congestion window reset after idle"),
    "abort_on_overflow": (frozenset({"0"}), "a full accept queue drops"),
}


def config_for(settings: tuple[tuple[str, str], ...], base: Config) -> Config:
    """`base` with the sysctls applied; ValueError naming the first one tcpstack cannot follow."""
    changes: dict[str, Any] = {}
    for key, value in settings:
        name = key.removeprefix("net.ipv4.tcp_")
        if name in FIXED:
            allowed, meaning = FIXED[name]
            if value not in allowed:
                raise ValueError(f"sysctl {key}={value} (tcpstack has {meaning})")
            continue
        if name not in SYSCTLS:
            raise ValueError(f"sysctl {key}")
        field, convert = SYSCTLS[name]
        try:
            changes[field] = convert(value)
        except (ValueError, KeyError, IndexError):
            raise ValueError(f"sysctl {key}={value}") from None
    return base.with_changes(**changes)


class StackTarget:
    name = "stack"

    def __init__(self, config: Config | None = None) -> None:
        self.core = Core(LOCAL_ADDR, config or Config())
        self.api = StackSockets(self.core, self._collect)
        self._queue: deque[tuple[float, bytes]] = deque()
        self._states: list[tuple[float, str]] = []
        self._connected = False  # a connection exists: the listener's own states no longer count
        self.transitions: list[tuple[str, str]] = []  # every (old, new) state change, any 4-tuple

    @staticmethod
    def unsupported(script: Script, base: Config) -> str | None:
        """Why this target cannot run the script (a sysctl it cannot follow), or None."""
        for event in script.events:
            if isinstance(event.action, Command):
                spec = parse(event.action.text)
                if isinstance(spec, Sysctl):
                    try:
                        config_for(spec.settings, base)
                    except ValueError as exc:
                        return str(exc)
        return None

    def now(self) -> float:
        return self.core.now

    def _collect(self) -> None:
        raws, notices = self.core.drain()
        now = self.core.now
        for raw in raws:
            self._queue.append((now, raw))
        for n in notices:
            if n.kind == "state" and n.four_tuple is not None:
                self.transitions.append((n.old, n.new))
                if n.four_tuple[2] == REMOTE_ADDR:
                    self._connected = True
                elif self._connected:
                    continue
                self._states.append((n.time, n.new))
        self.api.notify(notices)

    def wait(self, until: float, poll: PollFn, watch: WatchFn, want_packet: bool) -> None:
        core = self.core
        if until <= core.now and not want_packet:
            return  # no time passes: an inbound batch stays open
        self._collect()
        if poll():
            return
        for _ in range(MAX_STEPS):
            if want_packet and self._queue:
                return
            deadline = core.next_deadline()
            if deadline is None or deadline > until:
                break
            core.fire(deadline)
            self._collect()
            if poll():
                return
        else:
            raise RuntimeError(f"tcpstack hung: more than {MAX_STEPS} timer firings before {until:.3f} s")
        if until > core.now:
            core.fire(until)
            self._collect()
            poll()

    def inject(self, packet: bytes, poll: PollFn) -> None:
        self.core.feed(packet)  # collected later: packets of one instant are one batch

    def take_packet(self) -> tuple[float, bytes] | None:
        self._collect()
        return self._queue.popleft() if self._queue else None

    def sysctl(self, settings: tuple[tuple[str, str], ...]) -> str | None:
        try:
            config = config_for(settings, self.core.config)
        except ValueError as exc:
            return str(exc)
        self.core.set_config_default(config)
        return None

    def ss_lines(self, state: str | None) -> list[str]:
        self._collect()
        shown = SS_STATES.get(state) if state else None
        lines = []
        for name, recv_q, send_q, local, peer in self.core.sockets():
            if shown is not None and name != shown:
                continue
            prefix = [] if shown is not None else [name]
            lines.append(" ".join([*prefix, str(recv_q), str(send_q), local, peer]))
        return lines

    def state_changes(self) -> list[tuple[float, str]]:
        return list(self._states)

    def close(self) -> None:
        self._queue.clear()
