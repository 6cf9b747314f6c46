"""Every `Config` knob is a `serve`/`demo` flag, generated from the dataclass (so a knob added to
Config appears on its own), with its docstring, default and unit in --help; `--config-file` reads
the same names from TOML; flags beat the file, the file beats the defaults."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from stack.cli.main import build_parser
from stack.tcp.config import Config
from tests.cli.serving import Serve, kernel_connect, needs_kernel, read_to_eof, tcpstack

NOT_FLAGS = {"isn", "secret"}  # code and key material: no command-line form


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_every_config_field_is_a_flag_with_its_default(command: str) -> None:
    done = tcpstack(command, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for field in dataclasses.fields(Config):
        if field.name in NOT_FLAGS:
            assert flag(field.name) not in text
            continue
        assert f"{flag(field.name)} " in text, field.name
    assert "--config-file FILE.toml" in text
    assert "--tw-reuse, --no-tw-reuse" in text
    assert "--max-time-wait N Cap on TIME-WAIT records" in text
    assert "(default: 262144)" in text and "(default: 32768-60999)" in text
    msl_default = "1 s" if command == "demo" else "30 s"
    assert "--msl SECONDS Maximum segment lifetime in seconds" in text
    assert f"(default: {msl_default})" in text
    assert "--recv-buffer BYTES" in text and "--fin-timeout SECONDS" in text


def parse_config(tmp_path: Path, *argv: str, toml: str | None = None) -> Config:
    from stack.cli.knobs import config_from_args

    args = list(argv)
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        args += ["--config-file", str(tmp_path / "c.toml")]
    ns = build_parser().parse_args(["serve", "--app", "echo", "--port", "7", *args])
    return config_from_args(ns)


def test_config_file_and_flags_in_order_of_precedence(tmp_path: Path) -> None:
    cfg = parse_config(tmp_path, "--msl", "2", "--no-timestamps",
                       toml='msl = 9\ntw_reuse = true\nephemeral_ports = [50000, 50999]\nfin-timeout = 3.5\n'
                            'congestion_control = "cubic"\n')
    assert cfg.msl == 2.0  # the flag beats the file
    assert cfg.tw_reuse is True and cfg.ephemeral_ports == (50000, 50999) and cfg.fin_timeout == 3.5
    assert cfg.congestion_control == "cubic" and cfg.timestamps is False
    assert cfg.max_time_wait == Config().max_time_wait  # untouched: Config's default


@pytest.mark.parametrize(("toml", "message"), [
    ("msll = 1", "unknown setting 'msl"),
    ("msl = 'long'", "msl: expected float"),
    ("max_time_wait = 1.5", "max_time_wait: expected int"),
    ("ephemeral_ports = [1]", "expected two whole numbers"),
    ("isn = 1", "unknown setting 'isn'"),
    ("msl = [", "not valid TOML"),
    ("msl = -1", "bad configuration: msl must be positive"),
])
def test_a_bad_config_file_is_one_line(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    done = tcpstack("serve", "--app", "echo", "--port", "7", "--config-file", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpstack serve: error:") and message in lines[0], done.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-time-wait", "lots"], "argument --max-time-wait: not a whole number: 'lots'"),
    (["--ephemeral-ports", "5-"], "argument --ephemeral-ports: expected two whole numbers"),
    (["--congestion-control", "vegas"], "unknown congestion control 'vegas'"),
    (["--rto-min", "nan"], "must be a finite number"),
])
def test_a_bad_knob_value_is_one_line(argv: list[str], message: str) -> None:
    done = tcpstack("serve", "--app", "echo", "--port", "7", *argv)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


@needs_kernel
@pytest.mark.kernel
def test_serve_runs_with_the_knobs_it_was_given(serve: Callable[..., Serve], tmp_path: Path) -> None:
    (tmp_path / "tw.toml").write_text("max_time_wait = 1\nmsl = 20.0\n")
    s = serve("--app", "reply-close", "--port", "8", "--config-file", str(tmp_path / "tw.toml"), "--rfc1337")
    s.wait_ready()
    assert s.netns is not None
    info = json.loads(tcpstack("stats", "--netns", s.netns, "--json").stdout)
    for i in range(3):  # the stack closes first each time: TIME-WAIT, but capped at one record
        with kernel_connect(s.netns, 8) as sock:
            sock.sendall(b"%d" % i)
            assert read_to_eof(sock) == b"%d" % i
            sock.shutdown(socket.SHUT_WR)
    from stack.cli.control import default_path, request

    cfg = request(default_path(s.netns), "info")["config"]
    assert cfg["max_time_wait"] == 1 and cfg["msl"] == 20.0 and cfg["rfc1337"] is True
    assert cfg["ephemeral_ports"] == [32768, 60999]
    stats = json.loads(tcpstack("stats", "--netns", s.netns, "--json").stdout)
    assert stats["TCPTimeWaitOverflow"] - info.get("TCPTimeWaitOverflow", 0) >= 2
    assert s.stop(signal.SIGTERM) == 0
