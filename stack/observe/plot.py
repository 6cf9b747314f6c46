"""Connections per state over time, drawn from stats-log CSV files (stack.observe.statslog).

One picture, one time axis: several files are laid one after another (each a phase of an
experiment, its span shaded and named after the file), so TIME-WAIT piling up under short
connections and falling when a mitigation is switched on read from left to right. States and
gauges are drawn as they are (connections); counters -- totals that only grow -- as their increase
per second, on a second axis.

Drawing is matplotlib's (an optional dependency: `pip install 'tcpstack[plot]'`); reading the CSV is
not, so `read_stats_csv` works without it.
"""

from __future__ import annotations

import csv
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.tcp.states import State

STATE_NAMES = frozenset(s.value for s in State)
COUNTER_PREFIXES = ("Ip", "Icmp", "Tcp")  # nstat sections: cumulative counters, drawn as rates
FORMATS = (".png", ".svg", ".pdf")
INSTALL_HINT = "pip install 'tcpstack[plot]' (or: pip install matplotlib)"


class PlotError(ValueError):
    """A file that is not a stats log, or a column that is not in it: one line for the user."""


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed."""


@dataclass(frozen=True, slots=True)
class StatsLogData:
    name: str  # for the legend and the phase label: the file's name without its extension
    columns: list[str]
    rows: list[dict[str, float]]

    def series(self, column: str) -> list[float]:
        return [row[column] for row in self.rows]

    @property
    def duration(self) -> float:
        return self.rows[-1]["elapsed"] if self.rows else 0.0


def read_stats_csv(path: str | os.PathLike[str]) -> StatsLogData:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or header[:2] != ["time", "elapsed"]:
                raise PlotError(f"{path}: not a tcpstack stats log (it starts with time,elapsed,...)")
            rows = []
            for number, record in enumerate(reader, 2):
                if len(record) != len(header):
                    raise PlotError(f"{path}, line {number}: {len(record)} fields, the header has {len(header)}")
                try:
                    rows.append({name: float(value) for name, value in zip(header, record, strict=True)})
                except ValueError:
                    raise PlotError(f"{path}, line {number}: not a number") from None
    except OSError as exc:
        raise PlotError(f"cannot read {path}: {exc.strerror}") from None
    return StatsLogData(Path(path).stem, header, rows)


def default_columns(logs: Sequence[StatsLogData]) -> list[str]:
    """Every state (LISTEN aside) and gauge that is not zero somewhere; TIME-WAIT if none is."""
    chosen: list[str] = []
    for log in logs:
        for column in log.columns[2:]:
            if column in chosen or column == State.LISTEN.value or column.startswith(COUNTER_PREFIXES):
                continue
            if any(row[column] for row in log.rows):
                chosen.append(column)
    return chosen or [State.TIME_WAIT.value]


def _rate(values: list[float], times: list[float]) -> list[float]:
    out = [0.0]
    for i in range(1, len(values)):
        dt = times[i] - times[i - 1]
        out.append((values[i] - values[i - 1]) / dt if dt > 0 else 0.0)
    return out


def draw(logs: Sequence[StatsLogData], out: str | os.PathLike[str], *, columns: Sequence[str] = (),
         title: str = "") -> None:
    """Write the picture to `out` (.png, .svg or .pdf)."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise PlotError(f"--out {out}: the picture must be {', '.join(FORMATS)}")
    if not logs or not any(log.rows for log in logs):
        raise PlotError("nothing to draw: the stats logs have no rows")
    chosen = list(columns) or default_columns(logs)
    for column in chosen:
        if not any(column in log.columns for log in logs):
            raise PlotError(f"no column {column!r} in the stats logs (states: {', '.join(sorted(STATE_NAMES))})")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingMatplotlib(f"drawing needs matplotlib: {INSTALL_HINT}") from None
    with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, smaller
        _draw(plt, logs, out, chosen, title)


def _draw(plt: Any, logs: Sequence[StatsLogData], out: str | os.PathLike[str], chosen: list[str], title: str) -> None:

    fig, ax = plt.subplots(figsize=(11, 5.2), layout="constrained")
    rates = [c for c in chosen if c.startswith(COUNTER_PREFIXES)]
    levels = [c for c in chosen if c not in rates]
    ax2: Any = ax.twinx() if rates else None
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {c: colours[i % len(colours)] for i, c in enumerate(chosen)}
    offset = 0.0
    for n, log in enumerate(logs):
        times = [offset + t for t in log.series("elapsed")]
        if len(logs) > 1 and times:
            ax.axvspan(times[0], times[-1], color="#f2f4f4" if n % 2 else "#fbfcfc", zorder=0)
            label = textwrap.fill(log.name.replace("_", " "), 18)  # phases are narrow: wrap their names
            ax.text((times[0] + times[-1]) / 2, 1.01, label, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="#34495e", linespacing=1.1)
        for column in levels:
            if column in log.columns:
                ax.plot(times, log.series(column), color=colour_of[column], linewidth=1.8,
                        label=column if n == 0 or column not in logs[0].columns else None)
        for column in rates:
            if column in log.columns:
                ax2.plot(times, _rate(log.series(column), log.series("elapsed")), color=colour_of[column],
                         linewidth=1.2, linestyle="--", label=f"{column} per s" if n == 0 else None)
        offset = (times[-1] if times else offset) + (0.5 if len(logs) > 1 else 0.0)
    ax.set_xlabel("seconds" + (" (phases one after another)" if len(logs) > 1 else ""))
    ax.set_ylabel("connections")
    ax.set_ylim(bottom=0)
    ax.grid(True, color="#e5e8e8")
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("per second")
        ax2.set_ylim(bottom=0)
        more, more_labels = ax2.get_legend_handles_labels()
        handles, labels = handles + more, labels + more_labels
    ax.legend(handles, labels, loc="upper right", fontsize=9, framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.savefig(out, dpi=110)
    plt.close(fig)
