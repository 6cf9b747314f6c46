"""The state table: every arrow of RFC 9293's diagram is exercised by the tests of this folder, and
no change outside the table can happen (the core raises IllegalTransition, failing any test).

Named zz so that it runs after the other tests of tests/core, whose transitions it counts.
"""

from __future__ import annotations

import pytest

from stack.tcp.states import (
    DIAGRAM_EDGES,
    EDGE_COUNTS,
    TRANSITIONS,
    IllegalTransition,
    State,
    check_transition,
)

S = State


def test_illegal_transition_raises() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(S.ESTABLISHED, S.SYN_SENT)
    with pytest.raises(IllegalTransition):
        check_transition(S.TIME_WAIT, S.ESTABLISHED)


def test_table_contains_the_diagram() -> None:
    assert set(DIAGRAM_EDGES) <= TRANSITIONS
    assert len(DIAGRAM_EDGES) == 20


def test_every_diagram_edge_is_exercised(request: pytest.FixtureRequest) -> None:
    here = request.node.path.parent
    core_items = [i for i in request.session.items if i.path.parent == here and i.path != request.node.path]
    core_files = {p for p in here.glob("test_*.py") if p != request.node.path}
    if {i.path for i in core_items} != core_files:
        pytest.skip("only meaningful when every test file of tests/core runs")
    missing = [f"{old} -> {new} ({label})" for (old, new), label in DIAGRAM_EDGES.items()
               if EDGE_COUNTS[(old, new)] == 0]
    assert not missing, "diagram edges no test exercised:\n" + "\n".join(missing)
