"""What `tcpstack drill` prints: one line per run, the both-targets table, the summary, or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stack.drill.runner import RunResult


def status_text(result: RunResult) -> str:
    """`PASS`, `FAIL line N: expected ..., got ...`, `SKIP: unsupported X`; an intended difference
    passes, and says so."""
    if result.status == "SKIP":
        return f"SKIP: {result.skip_reason}"
    if result.failure is None:
        return "PASS"
    if result.intended is not None:
        return f"PASS (intended difference, {result.failure.text()}; see docs/linux-differences.md)"
    return f"FAIL {result.failure.text()}"


def run_line(result: RunResult) -> str:
    return f"{result.script} [{result.target}] {status_text(result)}"


def detail_lines(result: RunResult) -> list[str]:
    """--verbose: the run's event log and the failure's detail."""
    lines = [f"  {line}" for line in result.log]
    if result.failure is not None and result.failure.detail:
        lines += [f"  | {line}" for line in result.failure.detail.splitlines()]
    lines.append(f"  ({result.elapsed * 1000:.1f} ms)")
    return lines


@dataclass(frozen=True, slots=True)
class Summary:
    passed: int
    failed: int
    skipped: int
    intended: int

    def text(self) -> str:
        line = f"drill: {self.passed} passed, {self.failed} failed, {self.skipped} skipped"
        if self.intended:
            line += f" ({self.intended} of the passes with an intended difference)"
        return line


def summarize(results: Sequence[RunResult]) -> Summary:
    failed = sum(1 for r in results if r.failed)
    skipped = sum(1 for r in results if r.status == "SKIP")
    intended = sum(1 for r in results if r.intended is not None)
    return Summary(len(results) - failed - skipped, failed, skipped, intended)


def _short(result: RunResult | None) -> str:
    if result is None:
        return "-"
    if result.status == "FAIL" and result.intended is not None:
        return "DIFF"
    return result.status


@dataclass(frozen=True, slots=True)
class Row:
    script: str
    kernel: str
    stack: str
    difference: str
    intended: str  # "yes", "no" or "-"


def table_rows(results: Sequence[RunResult]) -> list[Row]:
    """Per script: both targets' outcomes, the first difference between tcpstack and Linux, and
    whether docs/linux-differences.md lists it. When the kernel run failed, the script does not
    describe Linux: its failure is the difference shown."""
    by_script: dict[str, dict[str, RunResult]] = {}
    for r in results:
        by_script.setdefault(r.script, {})[r.target] = r
    rows = []
    for script, runs in by_script.items():
        kernel, stack = runs.get("kernel"), runs.get("stack")
        difference, intended = "-", "-"
        if kernel is not None and kernel.failure is not None:
            difference = f"script is not Linux: {kernel.failure.field} {kernel.failure.text()}"
            intended = "no"
        elif stack is not None and stack.failure is not None:
            difference = f"{stack.failure.field} {stack.failure.text()}"
            intended = "yes" if stack.intended is not None else "no"
        rows.append(Row(script.rsplit("/", 1)[-1], _short(kernel), _short(stack), difference, intended))
    return rows


def table_text(rows: Sequence[Row]) -> list[str]:
    head = Row("script", "kernel", "stack", "first difference", "intended")
    widths = [max(len(getattr(r, f)) for r in (head, *rows)) for f in ("script", "kernel", "stack")]
    lines = []
    for r in (head, *rows):
        lines.append(f"{r.script:<{widths[0]}}  {r.kernel:<{widths[1]}}  {r.stack:<{widths[2]}}  "
                     f"{r.intended:<8}  {r.difference}".rstrip())
    return lines


def to_json(results: Sequence[RunResult], with_table: bool) -> dict[str, Any]:
    runs = []
    for r in results:
        obj: dict[str, Any] = {
            "script": r.script,
            "target": r.target,
            "status": r.status,
            "text": status_text(r),
            "elapsed_s": round(r.elapsed, 6),
        }
        if r.failure is not None:
            f = r.failure
            obj["failure"] = {"line": f.line, "field": f.field, "expected": f.expected, "actual": f.actual}
        if r.skip_reason is not None:
            obj["skip_reason"] = r.skip_reason
        if r.intended is not None:
            obj["intended"] = {"reason": r.intended.reason, "rfc": r.intended.rfc}
        runs.append(obj)
    s = summarize(results)
    doc: dict[str, Any] = {
        "runs": runs,
        "summary": {"passed": s.passed, "failed": s.failed, "skipped": s.skipped, "intended": s.intended},
    }
    if with_table:
        doc["table"] = [
            {"script": row.script, "kernel": row.kernel, "stack": row.stack, "first_difference": row.difference,
             "intended": row.intended}
            for row in table_rows(results)
        ]
    return doc
