"""TimerWheel against a reference model, plus scale, float-rounding and lifetime tests."""

from __future__ import annotations

import gc
import math
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stack.native import TimerWheel

# A power-of-two resolution makes d / RES and k * RES exact, so the model can compute ticks
# with plain ceil/floor and agree with the C side bit for bit.
RES = 2.0**-10
MAX_TICK = 2**50  # mirrors timerwheel.c: ticks clamp here; only advance(inf) reaches it
SPAN = 64**6  # ticks covered by the six levels before a deadline is clamped


def model_deadline_tick(d: float) -> int:
    if d <= 0:
        return 0
    q = d / RES
    if not q < MAX_TICK - 1:
        return MAX_TICK
    return math.ceil(q)


def model_now_tick(now: float) -> int:
    if not now > 0:
        return 0
    if math.isinf(now):
        return MAX_TICK
    q = now / RES
    return math.floor(q) if q < MAX_TICK - 1 else MAX_TICK - 1


# Tick offsets from the current tick: past, every level, exact slot boundaries, beyond the span.
def _level_range(level: int) -> st.SearchStrategy[int]:
    return st.integers(64**level, 64 ** (level + 1))


tick_deltas = st.one_of(
    st.integers(-300, 0),
    st.sampled_from([1, 2, 63, 64, 65, 4095, 4096, 4097, SPAN - 1, SPAN, SPAN + 1]),
    *[_level_range(level) for level in range(6)],
    st.integers(SPAN, 2**40),
    st.integers(2**40, MAX_TICK),
)


class WheelMachine(RuleBasedStateMachine):
    """Random schedule/cancel/advance sequences checked against a dict of live timers."""

    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimerWheel | None = None
        self.cur = 0
        self.live: dict[int, tuple[int, int]] = {}  # handle -> (tick, user_id)
        self.tick_of_uid: dict[int, int] = {}
        self.dead: list[int] = []  # handles of fired or cancelled timers
        self.next_uid = 0

    @precondition(lambda self: self.wheel is None)
    @rule(start_tick=st.integers(0, 2**45), frac=st.floats(0, 0.999))
    def create(self, start_tick: int, frac: float) -> None:
        start = (start_tick + frac) * RES
        self.wheel = TimerWheel(RES, start)
        self.cur = model_now_tick(start)

    def _advance(self, now: float) -> list[int]:
        assert self.wheel is not None
        self.cur = max(self.cur, model_now_tick(now))
        due = {h: v for h, v in self.live.items() if v[0] <= self.cur}
        fired = self.wheel.advance(now)
        assert sorted(fired) == sorted(uid for _, uid in due.values())
        ticks = [self.tick_of_uid[uid] for uid in fired]
        assert ticks == sorted(ticks), "fired out of deadline order"
        for h in due:
            del self.live[h]
            self.dead.append(h)
        return fired

    @precondition(lambda self: self.wheel is not None)
    @rule(delta=tick_deltas, frac=st.sampled_from([0.0, 0.25, 0.5, 0.999]), same=st.integers(1, 3))
    def schedule(self, delta: int, frac: float, same: int) -> None:
        assert self.wheel is not None
        deadline = (self.cur + delta - frac) * RES
        tick = model_deadline_tick(deadline)
        for _ in range(same):  # several timers on one tick must all fire together
            uid = self.next_uid
            self.next_uid += 1
            h = self.wheel.schedule(deadline, uid)
            assert h not in self.live
            self.live[h] = (tick, uid)
            self.tick_of_uid[uid] = tick

    @precondition(lambda self: self.wheel is not None)
    @rule()
    def schedule_infinite(self) -> None:
        assert self.wheel is not None
        uid = self.next_uid
        self.next_uid += 1
        self.live[self.wheel.schedule(math.inf, uid)] = (MAX_TICK, uid)
        self.tick_of_uid[uid] = MAX_TICK

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def cancel_live(self, data: st.DataObject) -> None:
        assert self.wheel is not None
        h = data.draw(st.sampled_from(sorted(self.live)))
        assert self.wheel.cancel(h) is True
        del self.live[h]
        self.dead.append(h)
        assert self.wheel.cancel(h) is False

    @precondition(lambda self: bool(self.dead))
    @rule(data=st.data())
    def cancel_dead(self, data: st.DataObject) -> None:
        # Fired or cancelled handles stay stale even after their pool node has been reused.
        assert self.wheel is not None
        assert self.wheel.cancel(data.draw(st.sampled_from(self.dead))) is False

    @precondition(lambda self: self.wheel is not None)
    @rule(delta=st.one_of(st.integers(-5000, 0), *[_level_range(lv) for lv in range(8)]), frac=st.floats(0, 1))
    def advance(self, delta: int, frac: float) -> None:
        self._advance((self.cur + delta + frac) * RES)

    @precondition(lambda self: self.wheel is not None)
    @rule(data=st.data())
    def advance_and_cancel_within_batch(self, data: st.DataObject) -> None:
        # What a runtime does: advance, then run callbacks, which cancel other timers -- some in
        # the same batch (already fired: False), some still pending (True, and never fire).
        assert self.wheel is not None
        handle_of = {uid: h for h, (_, uid) in self.live.items()}
        fired = self._advance((self.cur + data.draw(_level_range(data.draw(st.integers(0, 3))))) * RES)
        for uid in fired:
            assert self.wheel.cancel(handle_of[uid]) is False
            cancel_another = data.draw(st.booleans())
            if cancel_another and self.live:
                h = data.draw(st.sampled_from(sorted(self.live)))
                assert self.wheel.cancel(h) is True
                del self.live[h]
                self.dead.append(h)

    @precondition(lambda self: self.wheel is not None)
    @rule()
    def advance_to_next_deadline(self) -> None:
        assert self.wheel is not None
        t = self.wheel.next_deadline()
        if not self.live:
            assert t is None
            return
        assert t is not None
        earliest = min(tick for tick, _ in self.live.values())
        if math.isinf(t):
            assert earliest == MAX_TICK
        else:
            assert t <= earliest * RES, "next_deadline past the earliest deadline"
            if self.cur < earliest and earliest >> 6 == self.cur >> 6:
                assert model_now_tick(t) == earliest, "finest level should be exact"
        before = self.cur
        fired = self._advance(t)
        assert fired or self.cur > before, "advance(next_deadline()) made no progress"

    @precondition(lambda self: self.wheel is not None and self.cur < MAX_TICK)
    @rule()
    def advance_to_end_of_time(self) -> None:
        # Rare in practice, but everything must come out, in order, with nothing left behind.
        self._advance(math.inf)
        assert self.wheel is not None
        assert len(self.wheel) == len(self.live)

    @invariant()
    def length_matches(self) -> None:
        if self.wheel is not None:
            assert len(self.wheel) == len(self.live)


TestWheelMachine = WheelMachine.TestCase
TestWheelMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


# ---- deterministic coverage ------------------------------------------------------------------


def drain(wheel: TimerWheel, max_steps: int = 10_000) -> list[tuple[float, list[int]]]:
    """The runtime's loop: advance(next_deadline()) until empty."""
    steps: list[tuple[float, list[int]]] = []
    while (t := wheel.next_deadline()) is not None:
        steps.append((t, wheel.advance(t)))
        assert len(steps) <= max_steps, "virtual clock loop does not terminate"
    return steps


@pytest.mark.parametrize("start_tick", [0, 1, 63, 64**3 - 1, 5 * SPAN - 2, 12345678901])
def test_far_timers_cascade_through_every_level_and_fire_exactly(start_tick: int) -> None:
    wheel = TimerWheel(RES, start_tick * RES)
    ticks = {}
    uid = 0
    for level in range(9):  # 6 levels, then clamped beyond the span
        for off in (-1, 0, 1, 17):
            tick = start_tick + 64**level + off
            if tick <= start_tick:
                continue
            wheel.schedule(tick * RES, uid)
            ticks[uid] = tick
            uid += 1
    steps = drain(wheel)
    fired_at = {u: model_now_tick(t) for t, batch in steps for u in batch}
    assert fired_at == ticks  # every timer fired, at exactly its own tick: not early, not late
    assert len(steps) < 40 * len(ticks)  # cascades are bounded, no tick-by-tick walking


def test_virtual_clock_skips_empty_time() -> None:
    wheel = TimerWheel(RES)
    wheel.schedule(1e9, 1)  # beyond the span: clamped, then re-placed at the right span
    wheel.schedule(math.inf, 2)
    steps = drain(wheel)
    assert [b for _, b in steps if b] == [[1], [2]]
    assert len(steps) <= 10
    assert steps[-1][0] == math.inf


def test_past_deadlines_fire_on_next_advance_sorted() -> None:
    wheel = TimerWheel(RES, 100.0)
    deadlines = [100.0 - i * RES for i in range(50)] + [-5.0, 0.0]
    random.Random(1).shuffle(deadlines)
    for i, d in enumerate(deadlines):
        wheel.schedule(d, i)
    assert wheel.next_deadline() is not None
    fired = wheel.advance(50.0)  # even an earlier `now` fires what is already due
    assert sorted(fired) == list(range(len(deadlines)))
    fired_deadlines = [deadlines[u] for u in fired]
    assert fired_deadlines == sorted(fired_deadlines)
    assert len(wheel) == 0 and wheel.next_deadline() is None


def test_time_never_goes_backwards() -> None:
    wheel = TimerWheel(RES)
    wheel.advance(10.0)
    wheel.schedule(10.5, 1)
    assert wheel.advance(5.0) == []
    assert wheel.advance(10.5) == [1]


@settings(max_examples=300, deadline=None)
@given(
    res=st.sampled_from([1e-4, 1e-3, 0.0012345, 1e-6, 0.1]),
    start=st.floats(0, 1e7),
    offsets=st.lists(st.floats(-1.0, 1e4), min_size=1, max_size=20),
    steps=st.lists(st.floats(0, 50.0), min_size=1, max_size=10),
)
def test_never_early_at_most_one_tick_late_with_real_resolutions(
    res: float, start: float, offsets: list[float], steps: list[float]
) -> None:
    wheel = TimerWheel(res, start)
    deadline = {i: start + off for i, off in enumerate(offsets)}
    for i, d in deadline.items():
        wheel.schedule(d, i)
    now = start
    pending = set(deadline)
    for step in [*steps, 2e4]:
        now += step
        for uid in wheel.advance(now):
            assert deadline[uid] <= now, "fired early"
            pending.remove(uid)
        for uid in pending:
            assert now < deadline[uid] + res * (1 + 1e-9), "more than one tick late"


@pytest.mark.parametrize("res", [1e-4, 1e-3, 0.0012345, 1e-6, 0.1])
def test_exact_at_one_ulp_around_tick_boundaries(res: float) -> None:
    # Random floats almost never land within an ulp of a tick boundary, but ~8% of boundaries
    # make a naive ceil(d / res) / floor(now / res) off by one; probe them directly.
    rng = random.Random(res)
    for _ in range(300):
        k = rng.randrange(1, 10**9)
        at = k * res  # the wheel's own T(k): a deadline here fires exactly at now == at
        below, above = math.nextafter(at, -math.inf), math.nextafter(at, math.inf)
        for deadline, fire_at in ((at, at), (below, at), (above, (k + 1) * res)):
            wheel = TimerWheel(res)
            wheel.schedule(deadline, 1)
            assert wheel.advance(math.nextafter(min(deadline, fire_at), -math.inf)) == []
            assert wheel.advance(math.nextafter(fire_at, -math.inf)) == [], "fired early"
            assert wheel.advance(fire_at) == [1], "fired late"


def test_next_deadline_of_past_timer_is_exact_after_cancel() -> None:
    wheel = TimerWheel(RES, 10.0)
    h = wheel.schedule(1.0, 1)
    wheel.schedule(20.0, 2)
    assert wheel.next_deadline() == 1.0
    wheel.cancel(h)
    t = wheel.next_deadline()
    assert t is not None and 10.0 < t <= 20.0  # the pending 20 s timer's slot, not a stale 1.0
    wheel.schedule(5.0, 3)
    assert wheel.next_deadline() == 5.0


@settings(max_examples=200, deadline=None)
@given(res=st.sampled_from([1e-4, 0.0012345, 1e-6]), start=st.floats(0, 1e6), off=st.floats(0, 1e5))
def test_drain_fires_at_the_deadline_tick_with_real_resolutions(res: float, start: float, off: float) -> None:
    wheel = TimerWheel(res, start)
    wheel.schedule(start + off, 7)
    steps = drain(wheel, max_steps=100)
    t, batch = steps[-1]
    assert batch == [7]
    # Never early; late by at most one tick. Tick times are floats k * res, so "one tick" carries
    # the rounding of that product and of start + off (found by hypothesis: res=1e-6, off=34.99).
    deadline = start + off
    assert deadline <= t <= deadline + res + 4 * math.ulp(max(deadline, t))


def test_handles_are_generation_checked() -> None:
    wheel = TimerWheel(RES)
    h1 = wheel.schedule(1.0, 1)
    assert wheel.cancel(h1) is True
    h2 = wheel.schedule(1.0, 2)  # reuses h1's pool node under a new generation
    assert h2 & 0xFFFF_FFFF == h1 & 0xFFFF_FFFF and h2 != h1
    assert wheel.cancel(h1) is False
    assert len(wheel) == 1
    for bogus in (0, 1, 5, 384, 2**32 - 1, 2**64 - 1, (h2 & 0xFFFF_FFFF) + 1):
        assert wheel.cancel(bogus) is False
    assert wheel.advance(1.0) == [2]
    assert wheel.cancel(h2) is False


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        TimerWheel(0.0)
    with pytest.raises(ValueError):
        TimerWheel(math.inf)
    with pytest.raises(ValueError):
        TimerWheel(1e-4, -1.0)
    wheel = TimerWheel()
    with pytest.raises(ValueError):
        wheel.schedule(math.nan, 1)
    with pytest.raises(ValueError):
        wheel.advance(math.nan)
    with pytest.raises(OverflowError):
        wheel.schedule(1.0, -1)
    assert wheel.schedule(1.0, 2**64 - 1) != 0
    assert wheel.advance(2.0) == [2**64 - 1]
    assert "live=0" in repr(wheel)


def test_million_live_timers_all_expire_in_order() -> None:
    n = 1_000_000
    res = 1e-4
    rng = random.Random(42)
    ticks = [rng.randrange(1, 1_000_000) for _ in range(n)]  # up to 100 s: four levels deep
    wheel = TimerWheel(res)
    schedule = wheel.schedule
    handles = [schedule(k * res, uid) for uid, k in enumerate(ticks)]
    assert len(wheel) == n
    cancel = wheel.cancel
    cancelled = set(range(0, n, 7))
    assert all([cancel(handles[uid]) for uid in cancelled])
    fired: list[int] = []
    for now in (0.5, 33.3, 66.6, 200.0):
        batch = wheel.advance(now)
        assert all([ticks[u] * res <= now for u in batch])
        fired += batch
    assert len(fired) == n - len(cancelled)
    assert set(fired).isdisjoint(cancelled) and len(set(fired)) == len(fired)
    fired_ticks = [ticks[u] for u in fired]
    assert fired_ticks == sorted(fired_ticks)
    assert len(wheel) == 0 and wheel.next_deadline() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_gc_frees_native_memory() -> None:
    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def churn() -> None:
        wheel = TimerWheel()
        for i in range(100_000):  # ~3 MiB of nodes plus the output buffer
            wheel.schedule(i * 1e-3, i)
        wheel.advance(50.0)

    churn()
    gc.collect()
    before = rss_mib()
    for _ in range(40):
        churn()
    gc.collect()
    assert rss_mib() - before < 40, "wheels leak their C memory"
