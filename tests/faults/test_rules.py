"""The rule text form: examples, round trips, error columns, and garbage that must fail cleanly."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.faults import (
    Corrupt,
    Delay,
    Drop,
    Dup,
    FaultRule,
    FaultRuleError,
    Inject,
    Reorder,
    Rewrite,
    Truncate,
    format_duration,
    load_rules,
    parse_duration,
    parse_rule,
    parse_rules,
)
from stack.wire.segment import ACK, FIN, PSH, RST, SYN

EXAMPLES = {
    "drop out state=TIME-WAIT nth=1": FaultRule(action=Drop(), direction="out", states=("TIME-WAIT",), nth=1),
    "drop in flags=F nth=1": FaultRule(action=Drop(), direction="in", flags=FIN, nth=1),
    "delay out 50ms jitter=10ms": FaultRule(action=Delay(0.05, jitter=0.01), direction="out"),
    "dup in p=0.1 seed=7": FaultRule(action=Dup(), direction="in", p=0.1, seed=7),
    "reorder in flags=F hold=1": FaultRule(action=Reorder(hold=1), direction="in", flags=FIN),
    "corrupt in p=0.01 seed=3": FaultRule(action=Corrupt(), direction="in", p=0.01, seed=3),
    "inject in rst seq=+0": FaultRule(action=Inject("rst", 0), direction="in"),
    "inject in syn seq=+1000": FaultRule(action=Inject("syn", 1000), direction="in"),
    "truncate out len=40": FaultRule(action=Truncate(length=40), direction="out"),
    "truncate in cut=8": FaultRule(action=Truncate(cut=8), direction="in"),
    "rewrite in has=S window=0 seq+=5 ack-=3 flags=R": FaultRule(
        action=Rewrite(window=0, seq=5, ack=-3, set_flags=RST), direction="in", flags=SYN),
    "rewrite out flags==FA flags+=P flags-=A": FaultRule(
        action=Rewrite(add_flags=PSH, clear_flags=ACK), direction="out", flags_exact=FIN | ACK),
    "delay in 1.5s after=2s before=5s": FaultRule(action=Delay(1.5), direction="in", after=2.0, before=5.0),
    "dup out port=7 payload=yes every=3 copies=2": FaultRule(
        action=Dup(copies=2), direction="out", port=7, payload=True, every=3),
    "drop in sport=80 dport=40000 payload=no first=5": FaultRule(
        action=Drop(), direction="in", sport=80, dport=40000, payload=False, first=5),
    "reorder out state=FIN-WAIT-1,CLOSING hold=3 timeout=200us": FaultRule(
        action=Reorder(hold=3, timeout=200e-6), direction="out", states=("FIN-WAIT-1", "CLOSING")),
}


@pytest.mark.parametrize("text", list(EXAMPLES))
def test_examples_parse_to_the_right_rule_and_print_back_unchanged(text: str) -> None:
    rule = parse_rule(text)
    assert rule == EXAMPLES[text]
    assert rule.text == text == str(rule)
    assert FaultRule.parse(rule.text) == rule


def test_other_spellings_parse_to_the_canonical_rule() -> None:
    assert parse_rule("  drop   out  state=time_wait   nth=1   # the stack's first ACK") == EXAMPLES[
        "drop out state=TIME-WAIT nth=1"]
    assert parse_rule("dup in p=10% seed=7").p == pytest.approx(0.1)
    assert parse_rule("drop in state=ESTAB").states == ("ESTABLISHED",)
    assert parse_rule("delay in 2s").action == Delay(2.0)
    assert parse_rule("drop in flags=fa").flags == FIN | ACK
    assert parse_rule("drop in flags==.").flags_exact == 0
    assert parse_rule("rewrite in seq-=5").action == Rewrite(seq=-5)
    assert parse_rule("dup in copies=1").text == "dup in"  # defaults are left out


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("drop sideways", 6, "unknown direction 'sideways' (expected 'in' or 'out')"),
        ("", 1, "empty rule"),
        ("   # only a comment", 1, "empty rule"),
        ("explode in", 1, "unknown action 'explode'"),
        ("drop", 6, "missing direction"),
        ("drop in nth=0", 13, "nth must be at least 1"),
        ("drop in nth=x", 13, "nth needs an integer"),
        ("drop in nth=", 13, "missing value after 'nth='"),
        ("drop in nth=1 nth=2", 15, "duplicate 'nth' (first given at column 9)"),
        ("drop in flags=F has=S", 17, "duplicate flags matcher"),
        ("drop in flags=FXA", 16, "unknown TCP flag letter 'X'"),
        ("drop in flags+=F", 14, "'flags' takes '=', not '+='"),
        ("drop in has==F", 12, "only 'flags==' exists"),
        ("drop in port=70000", 14, "port must be from 0 to 65535"),
        ("drop in payload=maybe", 17, "payload must be 'yes' or 'no'"),
        ("drop in state=TIME-WAIT,NAPPING", 25, "unknown state 'NAPPING'"),
        ("drop in p=1.5", 11, "p must be from 0 to 1"),
        ("drop in p=often", 11, "p needs a probability"),
        ("drop in after=5s before=2s", 25, "before= must be later than after="),
        ("drop in after=5parsecs", 15, "bad duration '5parsecs'"),
        ("drop in colour=red", 9, "unknown parameter 'colour' for 'drop'"),
        ("drop in now", 9, "unexpected 'now' (parameters are key=value)"),
        ("drop in =5", 9, "expected key=value"),
        ("delay out", 11, "delay needs a duration"),
        ("delay out soon", 11, "bad duration 'soon'"),
        ("delay in 50", 10, "duration '50' needs a unit: 50ms, 50s or 50us"),
        ("delay out 5ms jitter=3", 22, "needs a unit"),
        ("delay out 5ms 6ms", 15, "unexpected '6ms' (delay takes one duration)"),
        ("delay out 5ms jitter=-1ms", 22, "bad duration"),
        ("dup in copies=0", 15, "copies must be from 1 to 1000"),
        ("reorder in hold=0", 17, "hold must be from 1"),
        ("corrupt in bits=65", 17, "bits must be from 1 to 64"),
        ("truncate in", 1, "truncate needs len=N"),
        ("truncate in len=4 cut=3", 19, "len= and cut= exclude each other"),
        ("rewrite in", 1, "rewrite needs a change"),
        ("rewrite in seq=5", 15, "rewrite changes seq by an offset"),
        ("rewrite in window=65536", 19, "window must be from 0 to 65535"),
        ("inject in", 11, "inject needs a kind"),
        ("inject in fin", 11, "unknown inject kind 'fin'"),
        ("inject in rst seq=5", 19, "an offset with a sign"),
        ("inject in rst seq+=5", 18, "'seq' takes '='"),
        ("drop in\nnth=1", 8, "a rule is one line"),
        ("drop in nth=" + "9" * 5000, 13, "nth must be"),
    ],
)
def test_errors_point_at_the_right_column(text: str, column: int, reason: str) -> None:
    with pytest.raises(FaultRuleError) as info:
        parse_rule(text)
    err = info.value
    assert (err.column, err.line) == (column, None), str(err)
    assert reason in err.reason
    assert str(err) == f"column {column}: {err.reason}" and "\n" not in str(err)


def test_error_str_is_exactly_one_line() -> None:
    with pytest.raises(FaultRuleError) as info:
        parse_rule("drop sideways")
    assert str(info.value) == "column 6: unknown direction 'sideways' (expected 'in' or 'out')"
    assert isinstance(info.value, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.column, copy.reason, str(copy)) == (6, info.value.reason, str(info.value))


SCENARIO = """\
# lose the stack's first ACK in TIME-WAIT, and slow everything down a little
drop out state=TIME-WAIT nth=1

delay out 50ms jitter=10ms   # both ways
delay in 50ms jitter=10ms
"""


def test_scenario_file_comments_and_blank_lines(tmp_path: Path) -> None:
    rules = parse_rules(SCENARIO)
    assert [r.text for r in rules] == ["drop out state=TIME-WAIT nth=1", "delay out 50ms jitter=10ms",
                                       "delay in 50ms jitter=10ms"]
    path = tmp_path / "close.faults"
    path.write_text(SCENARIO, encoding="utf-8")
    assert load_rules(path) == rules
    assert parse_rules("") == [] and parse_rules("\n  # nothing\n\n") == []


def test_scenario_file_errors_carry_line_and_column() -> None:
    with pytest.raises(FaultRuleError) as info:
        parse_rules(SCENARIO + "\n  drop in nth=zero\n")
    assert (info.value.line, info.value.column) == (7, 15)
    assert str(info.value) == "line 7, column 15: nth needs an integer, not 'zero'"


def test_python_construction_validates() -> None:
    rule = FaultRule(action=Drop(), direction="out", states=("time-wait",), nth=1)
    assert rule.states == ("TIME-WAIT",) and rule.text == "drop out state=TIME-WAIT nth=1"
    assert FaultRule(action=Drop(), direction="in", states="TIME-WAIT").states == ("TIME-WAIT",)  # type: ignore[arg-type]
    for bad in (
        lambda: FaultRule(action=Drop(), direction="sideways"),
        lambda: FaultRule(action=Drop(), direction="in", nth=0),
        lambda: FaultRule(action=Drop(), direction="in", p=2.0),
        lambda: FaultRule(action=Drop(), direction="in", states=("NAPPING",)),
        lambda: FaultRule(action=Drop(), direction="in", after=3.0, before=1.0),
        lambda: FaultRule(action="drop", direction="in"),  # type: ignore[arg-type]
        lambda: Delay(-1.0),
        lambda: Delay(float("inf")),
        lambda: Truncate(),
        lambda: Truncate(length=3, cut=3),
        lambda: Rewrite(),
        lambda: Inject("fin"),
        lambda: Dup(copies=0),
    ):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize(("text", "seconds"), [("50ms", 0.05), ("1.5s", 1.5), ("200us", 200e-6), ("0", 0.0),
                                                ("0s", 0.0), (".5s", 0.5), ("10ms", 0.01)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_duration_text_round_trips_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# ---------------------------------------------------------------------- generated rules
durations = st.floats(min_value=0, max_value=1e9, allow_nan=False)
flag_sets = st.integers(0, 0xFF)
offsets = st.integers(-(2**32 - 1), 2**32 - 1)
actions = st.one_of(
    st.just(Drop()),
    st.builds(Delay, durations, durations),
    st.builds(Dup, st.integers(1, 1000)),
    st.builds(Reorder, st.integers(1, 10**6), durations),
    st.builds(Corrupt, st.integers(1, 64)),
    st.builds(Truncate, length=st.integers(0, 65535)),
    st.builds(Truncate, cut=st.integers(1, 65535)),
    # A rewrite must change something: a window, or a non-zero seq offset.
    st.builds(Rewrite, st.integers(0, 65535), offsets, offsets, st.none() | flag_sets, flag_sets, flag_sets),
    st.builds(Rewrite, st.none(), offsets.filter(bool), offsets, st.none() | flag_sets, flag_sets, flag_sets),
    st.builds(Inject, st.sampled_from(["rst", "syn", "ack"]), offsets),
)
STATES = ["CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT",
          "CLOSING", "LAST-ACK", "TIME-WAIT"]


T = TypeVar("T")


@st.composite
def rules(draw: st.DrawFn) -> FaultRule:
    def opt(strategy: st.SearchStrategy[T]) -> T | None:
        return draw(st.none() | strategy)

    after = opt(durations)
    before = opt(st.floats(min_value=(after or 0) + 1e-3, max_value=2e9, allow_nan=False))
    return FaultRule(
        action=draw(actions), direction=draw(st.sampled_from(["in", "out"])), flags=opt(flag_sets),
        flags_exact=opt(flag_sets), port=opt(st.integers(0, 65535)), sport=opt(st.integers(0, 65535)),
        dport=opt(st.integers(0, 65535)), payload=opt(st.booleans()),
        states=tuple(draw(st.lists(st.sampled_from(STATES), max_size=3))), after=after,
        before=before if before is None or before <= 1e9 else None, nth=opt(st.integers(1, 10**9)),
        first=opt(st.integers(1, 10**9)), every=opt(st.integers(1, 10**9)),
        p=opt(st.floats(0, 1, allow_nan=False)), seed=opt(st.integers(0, 2**64)))


@settings(max_examples=400)
@given(rules())
def test_rule_text_rule_text_round_trip(rule: FaultRule) -> None:
    text = rule.text
    again = parse_rule(text)
    assert again == rule
    assert again.text == text


# Words that get deep into the parser, glued together at random.
WORDS = ["drop", "delay", "dup", "reorder", "corrupt", "truncate", "rewrite", "inject", "in", "out", "rst", "syn",
         "50ms", "1.5s", "flags=", "flags==", "flags+=", "has=", "port=", "nth=", "first=", "every=", "p=", "seed=",
         "state=", "after=", "before=", "len=", "cut=", "window=", "seq+=", "seq-=", "seq=", "hold=", "timeout=",
         "copies=", "bits=", "jitter=", "payload=", "F", "SA", "x", "0", "1", "+0", "-3", "1e400", "10%",
         "TIME-WAIT", "yes", ",", "#", " ", "  ", "=", "\t", "é", "٣", "ß"]


@settings(max_examples=600)
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(WORDS), max_size=12).map("".join)))
def test_garbage_only_ever_raises_fault_rule_error(text: str) -> None:
    try:
        rule = parse_rule(text)
    except FaultRuleError as exc:
        assert exc.column >= 1 and "\n" not in str(exc)
        return
    assert parse_rule(rule.text) == rule


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_garbage_files_only_ever_raise_fault_rule_error(text: str) -> None:
    try:
        parse_rules(text)
    except FaultRuleError as exc:
        assert exc.line is not None and exc.line >= 1 and exc.column >= 1
