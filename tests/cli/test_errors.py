"""What a new user runs into first: no arguments, a wrong flag, a rule without a unit, a path that
cannot be written, a long wait, the examples' --help. Each answer is one clear line (or the usage),
found before anything runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.serving import REPO, needs_kernel, tcpstack

EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.py"))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_no_arguments_prints_the_usage() -> None:
    done = tcpstack()
    assert done.returncode == 2
    assert done.stderr.startswith("usage: tcpstack")
    for command in ("demo", "serve", "ss", "stats", "cleanup", "bench"):
        assert re.search(rf"^\s+{command}\s", done.stderr, re.M), command


@pytest.mark.parametrize(("argv", "prog"), [
    (["demo", "--bogus"], "tcpstack demo"),
    (["serve", "--app", "echo", "--port", "7", "--bogus"], "tcpstack serve"),
    (["bench", "cps", "--bogus"], "tcpstack bench cps"),
    (["ss", "--bogus"], "tcpstack ss"),
    (["cleanup", "--bogus"], "tcpstack cleanup"),
])
def test_an_unknown_flag_names_its_subcommand(argv: list[str], prog: str) -> None:
    done = tcpstack(*argv)
    assert done.returncode == 2
    assert one_line(done.stderr) == f"{prog}: error: unrecognized arguments: --bogus"


@pytest.mark.parametrize("argv", [["demo"], ["serve", "--app", "echo", "--port", "7"]])
def test_a_delay_without_unit_is_refused(argv: list[str]) -> None:
    done = tcpstack(*argv, "--fault", "delay in 50")
    assert done.returncode == 2
    assert "needs a unit: 50ms, 50s or 50us" in one_line(done.stderr)


@pytest.mark.parametrize(("argv", "option"), [
    (["demo", "--svg"], "--svg"),
    (["serve", "--app", "echo", "--port", "7", "--pcap"], "--pcap"),
    (["serve", "--app", "echo", "--port", "7", "--trace"], "--trace"),
])
@pytest.mark.parametrize("where", ["missing-dir/out", "."])
def test_an_unwritable_output_is_refused_before_anything_runs(argv: list[str], option: str, where: str,
                                                              tmp_path: Path) -> None:
    path = tmp_path / where
    t0 = time.monotonic()
    done = tcpstack(*argv, str(path))
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(f"tcpstack {argv[0]}: error: {option} {path}: cannot write there"), line
    assert done.stdout == ""  # nothing ran: no demo output, no ready line
    assert time.monotonic() - t0 < 5


@needs_kernel
@pytest.mark.kernel
def test_demo_says_how_long_it_still_waits() -> None:
    # MSL 6 s: 2MSL = 12 s, so two "still waiting" lines (every 5 s) before TIME-WAIT ends.
    done = subprocess.run([sys.executable, "-m", "stack", "demo", "--msl", "6"], cwd=REPO, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    progress = re.findall(r"^  \.\.\. (\d+) s of 12 s in TIME-WAIT$", done.stdout, re.M)
    assert progress[:2] == ["5", "10"], done.stdout


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_has_help(example: str) -> None:
    done = subprocess.run([sys.executable, str(REPO / "examples" / example), "--help"], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {example}")


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_refuses_a_bad_argument_in_one_line(example: str) -> None:
    done = subprocess.run([sys.executable, str(REPO / "examples" / example), "--bogus"], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert done.returncode == 2
    assert one_line(done.stderr) == f"{example}: error: unrecognized arguments: --bogus"


def test_fault_scenarios_unknown_scenario_and_whole_headings() -> None:
    script = str(REPO / "examples" / "fault_scenarios.py")
    done = subprocess.run([sys.executable, script, "9"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("fault_scenarios.py: error: no scenario '9' (choose from 1, 2, 3, 3b,")
    listed = subprocess.run([sys.executable, script, "--list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    entries = re.split(r"^\s*(?=\w+\. )", listed.stdout, flags=re.M)
    descriptions = {e.split(". ", 1)[0]: " ".join(e.split(". ", 1)[1].split()) for e in entries if e.strip()}
    assert list(descriptions) == ["1", "2", "3", "3b", "4", "5", "6", "7", "8", "8b"]
    for name, text in descriptions.items():
        assert len(text) > 30 and text.endswith((".", ")")), (name, text)  # whole sentences, none empty
