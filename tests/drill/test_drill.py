"""`tcpstack drill`: the parser, the corpus against both targets, the list of differences, the CLI.

The corpus (`tests/drill/*.pkt`) must pass on the kernel target (it describes real Linux) and on
the stack target except where docs/linux-differences.md lists the difference -- and every listed
difference must still occur, so the list stays true.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stack.cli.main import main
from stack.drill import differences
from stack.drill.drive import Options, run_all, run_one
from stack.drill.matcher import SeqMap
from stack.drill.parser import parse_file, parse_text
from stack.drill.runner import Runner, RunResult, tolerance_of
from stack.drill.script import Command, Int, PacketSpec, ScriptError, StructExpr, Syscall
from stack.drill.script import TimeKind as T
from stack.drill.stack_target import StackTarget
from stack.tcp.states import DIAGRAM_EDGES, State
from stack.wire.segment import ACK, FIN, PSH, RST, SYN
from tests.kernel.conftest import _kernel_link_session, requires_kernel_link  # noqa: F401 - a fixture, used by name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = sorted(HERE.glob("*.pkt"))
LISTED = differences.load(ROOT / "docs" / "linux-differences.md")


def error_at(text: str) -> ScriptError:
    with pytest.raises(ScriptError) as info:
        parse_text(text, "t.pkt")
    return info.value


# ------------------------------------------------------------------------------------------ parser
def test_parses_times_packets_calls_and_commands() -> None:
    script = parse_text(
        "--tolerance_usecs=25000\n"
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
        "+0.5 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>\n"
        "0.1~0.2 > S. 0:0(0) ack 1 <...>\n"
        "* > P. 1:11(10) ack 1 win 500 <nop,nop,sack 5:9 11:20>\n"
        "+.1~+.3 > F. 11:11(0) ack 1\n"
        "+0...0.25 read(4, ..., 100) = -1 ECONNRESET (Connection reset by peer)\n"
        "+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0\n"
        "+0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
        "+0 `sysctl -q net.ipv4.tcp_rfc1337=1`\n",
        "t.pkt",
    )
    assert script.tolerance_usecs == 25000 and not script.unsupported
    kinds = [e.time.kind for e in script.events]
    assert kinds == [T.ABSOLUTE, T.RELATIVE, T.ABSOLUTE_RANGE, T.ANY, T.RELATIVE_RANGE, T.RELATIVE, T.RELATIVE,
                     T.RELATIVE, T.RELATIVE]
    syn = script.events[1].action
    assert isinstance(syn, PacketSpec) and syn.inbound and syn.flags == SYN and syn.window == 65535
    assert [o.kind for o in syn.options or ()] == ["mss", "sackOK", "TS", "nop", "wscale"]
    assert script.events[2].time.end == 0.2
    synack = script.events[2].action
    assert isinstance(synack, PacketSpec) and synack.flags == SYN | ACK and synack.options is None
    data = script.events[3].action
    assert isinstance(data, PacketSpec) and data.flags == PSH | ACK and data.length == 10 and data.window == 500
    assert data.options is not None and data.options[-1].values == (5, 9, 11, 20)
    read = script.events[5].action
    assert isinstance(read, Syscall) and read.end == 0.25 and read.errno == "ECONNRESET"
    assert isinstance(read.result, Int) and read.result.value == -1
    linger = script.events[6].action
    assert isinstance(linger, Syscall) and isinstance(linger.args[3], StructExpr)
    assert isinstance(script.events[8].action, Command)
    assert [e.line for e in script.events] == list(range(2, 11))


def test_flags_and_sequence_text() -> None:
    spec = parse_text("0 > FP. 1:101(100) ack 7 win 9\n").events[0].action
    assert isinstance(spec, PacketSpec)
    assert spec.flags == FIN | PSH | ACK and spec.text() == "FP. 1:101(100) ack 7 win 9"
    reset = parse_text("0 > R 5:5(0)\n").events[0].action
    assert isinstance(reset, PacketSpec) and reset.flags == RST


@pytest.mark.parametrize(
    ("text", "line", "col", "words"),
    [
        ("0 < S 0:5(0) win 1\n", 1, 7, "inconsistent sequence numbers"),
        ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\n+0 < SX 0:0(0) win 1\n", 3, 7, "unknown TCP flag 'X'"),
        ("0 < S 0:0(0)\n", 1, 3, "needs its window"),
        ("* < S 0:0(0) win 5\n", 1, 1, "only be used with outbound"),
        ("0.3~0.1 > S 0:0(0)\n", 1, 4, "backwards"),
        ("0 close(4) = -1 EWHATEVER\n", 1, 3, "unknown errno name"),
        ("0 close(4, 5) = 0\n", 1, 3, "takes 1 arguments"),
        ("0 > S. 0:0(0) ack 1 <mss 1460\n", 2, 1, "to close the option list"),
        ("0 > S 0:0(0) <mss 70000>\n", 1, 19, "mss value 70000 out of range"),
        ("+0 `ss -tan\n", 1, 4, "unterminated back-quoted command"),
        ("0 > S 0:0(0)\n  bogus\n", 2, 3, "expected an event time"),
        ("0 < S 0:0(0) win 5 <...>\n", 1, 20, "<...>"),
        ("0 > S 0:0(0) # no\n", 1, 14, "unexpected character '#'"),
    ],
)
def test_syntax_errors_point_at_line_and_column(text: str, line: int, col: int, words: str) -> None:
    err = error_at(text)
    assert (err.line, err.col) == (line, col), str(err)
    assert words in err.message
    assert str(err).startswith(f"t.pkt:{line}:{col}: ")


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("0 poll(3, ...) = 0\n", "system call poll"),
        ("0 > S 0:0(0) <mss 1460,md5 abc>\n", "TCP option md5"),
        ("0 > [ect0] S 0:0(0)\n", "IP header fields"),
        ("0 `ls /tmp`\n", "only sysctl and ss"),
        ("0 `sysctl -q net.core.somaxconn=5`\n", "net.ipv4.tcp_*"),
        ("0 setsockopt(3, SOL_SOCKET, SO_PRIORITY, [1], 4) = 0\n", "socket option SO_PRIORITY"),
        ("0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=5}, 8) = 0\n", "SO_LINGER with a timeout"),
        ("0 %{ print(1) }%\n+0 close(3) = 0\n", "code"),
        ("--ip_version=ipv6\n0 close(3) = 0\n", "option --ip_version"),
    ],
)
def test_unsupported_constructs_are_named(text: str, what: str) -> None:
    script = parse_text(text, "t.pkt")
    assert script.unsupported and what in script.unsupported[0].what
    result = run_one(script, "stack", Options())
    assert result.status == "SKIP" and result.skip_reason is not None and what in result.skip_reason


def test_stack_target_skips_a_sysctl_it_cannot_follow() -> None:
    script = parse_text("0 `sysctl -q net.ipv4.tcp_ecn=1`\n", "t.pkt")
    result = run_one(script, "stack", Options())
    assert result.status == "SKIP" and "tcp_ecn=1" in (result.skip_reason or "")


def test_sequence_numbers_map_as_packetdrill_maps_them() -> None:
    """SYNs absolute, the rest relative to each side's ISN; a SYN,ACK of a new SYN renumbers."""
    m = SeqMap()
    syn = parse_text("0 < S 100:100(0) win 5\n").events[0].action
    assert isinstance(syn, PacketSpec)
    assert m.inbound(syn)[:2] == (100, 0)
    ack = parse_text("0 < . 1:1(0) ack 1 win 5\n").events[0].action
    assert isinstance(ack, PacketSpec)
    m.live_local_isn, m.script_local_isn = 5000, 0
    assert m.inbound(ack)[:2] == (101, 5001)


def test_blocking_call_returns_when_its_packet_arrives() -> None:
    script = parse_file(HERE / "blocking-read.pkt")
    result = Runner(script, StackTarget(), tolerance_of(script, None)).run()
    assert result.status == "PASS", result.failure
    assert any("read() = 50 (returned at 0.300000)" in line for line in result.log)


def test_tolerance_precedence() -> None:
    script = parse_text("--tolerance_usecs=7000\n0 close(3) = -1 EBADF\n")
    assert tolerance_of(script, None) == 0.007
    assert tolerance_of(script, 1000) == 0.001


# ------------------------------------------------------------------------------------------ corpus
def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 60


def _stack_run(path: Path) -> tuple[RunResult, StackTarget]:
    script = parse_file(path)
    target = StackTarget()
    result = Runner(script, target, tolerance_of(script, None)).run()
    result.intended = differences.find(LISTED, result.script, result.failure.line,
                                       result.failure.field) if result.failure else None
    return result, target


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_on_stack(path: Path) -> None:
    """tcpstack passes every script, except at a listed difference."""
    result, _ = _stack_run(path)
    assert not result.failed, f"{path.name}: {result.failure and result.failure.text()}"


def test_every_listed_difference_still_occurs() -> None:
    """A fixed difference must leave docs/linux-differences.md: each row is re-run and must fail
    exactly where it says."""
    rows = [d for d in LISTED if d.script != "-"]
    assert rows
    for diff in rows:
        path = HERE / diff.script
        assert path.exists(), f"{diff.script} (linux-differences.md line {diff.source_line}) is not in the corpus"
        result, _ = _stack_run(path)
        assert result.failure is not None, f"{diff.script}: the listed difference no longer occurs; remove the row"
        assert (result.failure.line, result.failure.field) == (diff.line, diff.field), (
            f"{diff.script}: listed at line {diff.line} ({diff.field}), now {result.failure.text()} "
            f"({result.failure.field})")


def test_corpus_covers_every_edge_of_the_state_diagram() -> None:
    """RFC 9293 Figure 5: every arrow is taken by some script on the stack target -- except
    LISTEN -> SYN-SENT (a SEND on a passive OPEN), which the sockets interface cannot express."""
    seen: set[tuple[str, str]] = set()
    for path in CORPUS:
        _, target = _stack_run(path)
        seen.update(target.transitions)
    wanted = {(a.value, b.value) for a, b in DIAGRAM_EDGES} - {(State.LISTEN.value, State.SYN_SENT.value)}
    assert wanted <= seen, sorted(wanted - seen)


@pytest.fixture(scope="module")
def kernel_results(request: pytest.FixtureRequest) -> dict[str, RunResult]:
    request.getfixturevalue("_kernel_link_session")  # skips with the reason where there is no TUN
    scripts = [parse_file(p) for p in CORPUS]
    results = {Path(r.script).name: r for r in run_all(scripts, ["kernel"], Options())}
    # Kernel runs share a 2-core machine with everything else: a run late on time (the process not
    # scheduled for a while) gets a second chance, alone. A real difference fails both times.
    for name, result in list(results.items()):
        if result.failure is not None and result.failure.field in ("time", "packet", "return"):
            results[name] = run_one(parse_file(HERE / name), "kernel", Options())
    return results


@requires_kernel_link
@pytest.mark.kernel
@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_on_kernel(path: Path, kernel_results: dict[str, RunResult]) -> None:
    """Every script describes real Linux."""
    result = kernel_results[path.name]
    assert result.status == "PASS", f"{path.name}: {result.failure and result.failure.text()}"


# ------------------------------------------------------------------------------------------ CLI
SUMMARY = re.compile(r"^drill: (\d+) passed, (\d+) failed, (\d+) skipped")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["drill", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_passes_and_prints_a_line_per_run(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(HERE / "close-active.pkt"), str(HERE / "data-push-flag.pkt")]
    code, out, _ = _cli(capsys, *paths, "--target", "stack")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"{paths[0]} [stack] PASS"
    assert lines[1].startswith(f"{paths[1]} [stack] PASS (intended difference, line 13: expected P., got .")
    assert SUMMARY.match(lines[-1]) and lines[-1].startswith("drill: 2 passed, 0 failed, 0 skipped")


def test_cli_failure_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong.pkt"
    wrong.write_text((HERE / "close-active.pkt").read_text().replace("> F. 1:1(0) ack 1", "> F. 1:1(0) ack 7"))
    ok = HERE / "close-passive.pkt"
    code, out, _ = _cli(capsys, str(wrong), str(ok), "--target", "stack", "--keep-going")
    assert code == 1
    assert f"{wrong} [stack] FAIL line 14: expected ack 7, got ack 1" in out
    assert out.splitlines()[-1] == "drill: 1 passed, 1 failed, 0 skipped"
    code, out, _ = _cli(capsys, str(wrong), str(ok), "--target", "stack")
    assert code == 1 and "stopped at the first failure" in out and f"{ok} [stack]" not in out


def test_cli_skip_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "poll.pkt"
    script.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 poll(3, 1, 0) = 0\n")
    code, out, _ = _cli(capsys, str(script), "--target", "stack")
    assert code == 0
    assert f"{script} [stack] SKIP: unsupported system call poll (line 2)" in out
    assert out.splitlines()[-1] == "drill: 0 passed, 0 failed, 1 skipped"


def test_cli_syntax_error_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkt"
    bad.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 < S 0:0(0) win 1 <mss>\n")
    done = subprocess.run([sys.executable, "-m", "stack", "drill", str(bad), str(HERE / "close-active.pkt")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"{bad}:2:25: expected mss value (an integer), found '>'"
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, str(HERE / "data-push-flag.pkt"), "--target", "stack", "--json")
    doc = json.loads(out)
    assert code == 0
    (run,) = doc["runs"]
    assert run["status"] == "FAIL" and run["failure"]["line"] == 13 and run["intended"]["rfc"]
    assert doc["summary"] == {"passed": 1, "failed": 0, "skipped": 0, "intended": 1}


def test_cli_config_and_ladder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svg = tmp_path / "close.svg"
    code, _, err = _cli(capsys, str(HERE / "close-active.pkt"), "--target", "stack", "--ladder", str(svg))
    assert code == 0 and str(svg) in err
    root = ET.parse(svg).getroot()
    text = ET.tostring(root, encoding="unicode")
    assert "tcpstack" in text and "FIN-WAIT-2" in text and "TIME-WAIT" in text
    # A Config field for the stack target: with a 1 s MSL, TIME-WAIT is over when the old SYN comes,
    # so the listener answers it with a SYN,ACK instead of TIME-WAIT's ACK.
    code, out, _ = _cli(capsys, str(HERE / "time-wait-2msl.pkt"), "--target", "stack", "--config", "msl=1")
    assert code == 1 and "FAIL line 23: expected ., got S." in out
    assert main(["drill", str(HERE / "close-active.pkt"), "--config", "nonsense=1"]) == 2


@requires_kernel_link
@pytest.mark.kernel
@pytest.mark.usefixtures("_kernel_link_session")
def test_cli_both_targets_table(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(HERE / "close-active.pkt"), str(HERE / "data-push-flag.pkt")]
    code, out, _ = _cli(capsys, *paths)
    assert code == 0
    assert f"{paths[0]} [kernel] PASS" in out and f"{paths[1]} [stack] PASS (intended difference" in out
    rows = {cells[0]: cells for cells in (line.split() for line in out.splitlines())
            if cells and cells[0].endswith(".pkt")}
    assert rows["close-active.pkt"][1:4] == ["PASS", "PASS", "-"]
    assert rows["data-push-flag.pkt"][1:4] == ["PASS", "DIFF", "yes"]
    assert out.splitlines()[-1].startswith("drill: 4 passed, 0 failed, 0 skipped")


# ------------------------------------------------------------------------------------------ README
def _readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```pkt\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no ```pkt example"
    return str(blocks[0])


def test_readme_example_passes_on_stack() -> None:
    script = parse_text(_readme_script(), "README.md")
    assert len([line for line in _readme_script().splitlines() if line.strip()]) <= 12
    assert run_one(script, "stack", Options()).status == "PASS"


@requires_kernel_link
@pytest.mark.kernel
@pytest.mark.usefixtures("_kernel_link_session")
def test_readme_example_passes_on_kernel() -> None:
    script = parse_text(_readme_script(), "README.md")
    result = run_one(script, "kernel", Options())
    assert result.status == "PASS", result.failure
