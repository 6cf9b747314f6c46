"""The list of known differences between tcpstack and Linux: `docs/linux-differences.md`.

One Markdown table holds every difference, each as a row

    | Script | Line | Field | Linux | tcpstack | Reason | RFC | Status |

where Script is a drill script's file name (or `-` for a difference no drill script shows), Line
the script line where it shows, Field the compared field (flags, seq, ack, len, win, options,
payload, time, packet, return, value, command). A stack run that fails at exactly (script, line,
field) of a row is reported as an intended difference; any other failure is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "linux-differences.md"
COLUMNS = ("script", "line", "field", "linux", "tcpstack", "reason", "rfc", "status")


class DifferencesError(ValueError):
    """The differences file is malformed: `path:line: message`."""


@dataclass(frozen=True, slots=True)
class Difference:
    script: str  # a file name, or "-"
    line: int  # 0 when script is "-"
    field: str
    linux: str
    tcpstack: str
    reason: str
    rfc: str
    status: str  # "open" (fix or keep not yet decided) or "kept"
    source_line: int = 0  # where the row is in the differences file

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.script, self.line, self.field)


def _cells(row: str) -> list[str]:
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [cell.strip().strip("`").strip() for cell in inner.split("|")]


def parse(text: str, path: str = "linux-differences.md") -> list[Difference]:
    """Every row of the table whose header names the COLUMNS (in any case)."""
    found: list[Difference] = []
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped.startswith("|"):
            in_table = False
            continue
        cells = _cells(stripped)
        if tuple(c.lower() for c in cells) == COLUMNS:
            in_table = True
            continue
        if not in_table or set("".join(cells)) <= set("-: "):
            continue
        if len(cells) != len(COLUMNS):
            raise DifferencesError(f"{path}:{number}: a row needs {len(COLUMNS)} cells, not {len(cells)}")
        script, line_text, field, linux, tcpstack, reason, rfc, status = cells
        if script == "-":
            line_no = 0
        elif line_text.isdigit():
            line_no = int(line_text)
        else:
            raise DifferencesError(f"{path}:{number}: line {line_text!r} is not a number")
        if not reason or not rfc:
            raise DifferencesError(f"{path}:{number}: every difference needs its reason and RFC section")
        found.append(Difference(script, line_no, field, linux, tcpstack, reason, rfc, status, number))
    return found


def load(path: Path | str | None = None) -> list[Difference]:
    """The differences listed in `path` (default: the repository's docs/linux-differences.md);
    an empty list if there is no such file."""
    file = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return parse(text, str(file))


def find(differences: list[Difference], script: str, line: int, field: str) -> Difference | None:
    name = script.rsplit("/", 1)[-1]
    for diff in differences:
        if diff.key == (name, line, field):
            return diff
    return None
