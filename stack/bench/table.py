"""The tables benchmarks print: one row per case, named columns with their units under the names.

    case                  rate      first 10%  ...
                          conn/s    conn/s     ...
    kernel_closes_first   6,812     6,790      ...

Numbers are right-aligned under their column; a value that was not measured shows as "-".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    unit: str  # "" for a column of words
    value: Callable[[dict[str, Any]], Any]
    spec: str = ",.0f"

    def cell(self, row: dict[str, Any]) -> str:
        try:
            value = self.value(row)
        except (KeyError, TypeError):
            value = None
        if value is None:
            return "-"
        return value if isinstance(value, str) else format(value, self.spec)


def render(columns: Sequence[Column], rows: Sequence[tuple[str, dict[str, Any]]], first: str = "case") -> list[str]:
    """Header (names, then units), then one line per (case, values) row."""
    cells = [[name, *(c.cell(values) for c in columns)] for name, values in rows]
    titles = [first, *(c.title for c in columns)]
    units = ["", *(c.unit for c in columns)]
    widths = [max(len(titles[i]), len(units[i]), *(len(r[i]) for r in cells)) for i in range(len(titles))]
    words = [True] + [not c.unit for c in columns]  # words left-aligned, numbers right-aligned

    def line(parts: Sequence[str], header: bool) -> str:
        out = []
        for i, part in enumerate(parts):
            left = words[i] or (header and not part)
            out.append(part.ljust(widths[i]) if left or (header and i == 0) else part.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(titles, True), line(units, True), *(line(r, False) for r in cells)]
