"""The stats log (a CSV of states and counters over time) and `tcpstack plot`, on simulated hosts."""

from __future__ import annotations

import csv
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stack.observe.plot import default_columns, read_stats_csv
from stack.observe.statslog import StatsLog
from stack.sim import Simulator
from stack.tcp.config import Config
from stack.tcp.events import Accepted
from stack.tcp.host import Host

REPO = Path(__file__).resolve().parents[2]


def storm(path: Path, *, cap: int | None = None, seconds: int = 6) -> Path:
    """Short connections, the server closing first, one sample per (virtual) second."""
    cfg = Config(secret=b"p" * 16, msl=2.0, **({"max_time_wait": cap} if cap else {}))
    client, server = Host("198.18.0.1", cfg), Host("198.18.0.2", cfg)
    sim = Simulator([client, server])
    server.listen(80)
    log = StatsLog.open(path, server, gauges={"client TIME-WAIT": lambda: len(client.time_wait)})
    for second in range(seconds):
        log.sample(1000.0 + second)
        for _ in range(20):
            client.connect("198.18.0.2", 80, sim.now)
        sim.run(0.05)
        for event in sim.events_of(server):
            if isinstance(event, Accepted):
                event.handle.close(sim.now)  # the server closes first: its TIME-WAIT
        sim.events_of(server).clear()
        sim.run(0.05)
        for handle in client.handles():
            handle.close(sim.now)
        sim.run(0.9)
    log.close()
    return path


def test_stats_log_has_states_gauges_and_every_counter(tmp_path: Path) -> None:
    path = storm(tmp_path / "storm.csv")
    rows = list(csv.DictReader(path.open()))
    header = list(rows[0])
    assert header[:2] == ["time", "elapsed"]
    assert header.index("TIME-WAIT") < header.index("client TIME-WAIT") < header.index("TcpPassiveOpens")
    assert "TcpExtTCPTimeWaitOverflow" in header and "TcpStackInMalformedBadTcpChecksum" in header
    assert [float(r["elapsed"]) for r in rows[:3]] == [0.0, 1.0, 2.0]
    tw = [int(r["TIME-WAIT"]) for r in rows]
    # Piles up at 20 a second until the first records' 2MSL (4 s) runs out: then as many leave as come.
    assert tw[:5] == [0, 20, 40, 60, 80] and max(tw) == 80
    assert int(rows[-1]["TcpPassiveOpens"]) == 120 and int(rows[-1]["LISTEN"]) == 1


def test_plot_draws_png_and_svg_of_phases(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    a = storm(tmp_path / "server_closes_first.csv")
    b = storm(tmp_path / "max_time_wait_10.csv", cap=10)
    drawn = default_columns([read_stats_csv(a)])
    assert "TIME-WAIT" in drawn and "LISTEN" not in drawn and not any(c.startswith("Tcp") for c in drawn)
    for out in (tmp_path / "states.png", tmp_path / "states.svg"):
        done = subprocess.run([sys.executable, "-m", "stack", "plot", str(a), str(b), "--out", str(out),
                               "--column", "TIME-WAIT", "--column", "TcpPassiveOpens", "--title", "TIME-WAIT"],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 10_000
    assert (tmp_path / "states.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = ET.parse(tmp_path / "states.svg").getroot()
    text = ET.tostring(svg, encoding="unicode")
    assert svg.tag.endswith("svg") and "TIME-WAIT" in text and "max time wait 10" in text


@pytest.mark.parametrize(("args", "message"), [
    (["missing.csv", "--out", "x.png"], "cannot read missing.csv"),
    (["{csv}", "--out", "x.gif"], "must be .png, .svg, .pdf"),
    (["{csv}", "--out", "x.png", "--column", "NOPE"], "no column 'NOPE'"),
    (["{notcsv}", "--out", "x.png"], "not a tcpstack stats log"),
])
def test_plot_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    good = storm(tmp_path / "s.csv", seconds=2)
    bad = tmp_path / "n.csv"
    bad.write_text("a,b\n1,2\n")
    argv = [a.format(csv=good, notcsv=bad) for a in args]
    done = subprocess.run([sys.executable, "-m", "stack", "plot", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    good = storm(tmp_path / "s.csv", seconds=2)
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
            "from stack.cli.main import main\n"
            f"raise SystemExit(main(['plot', {str(good)!r}, '--out', {str(tmp_path / 'x.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == ("tcpstack plot: drawing needs matplotlib: pip install 'tcpstack[plot]' "
                                   "(or: pip install matplotlib)")
