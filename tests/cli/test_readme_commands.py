"""The README's command section is true: every option it shows is one its command takes."""

from __future__ import annotations

import re
from pathlib import Path

from stack.cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_block() -> dict[str, set[str]]:
    """`tcpstack CMD ...` lines of the command section (continuations joined) -> options shown."""
    section = README.read_text().split("## The command line", 1)[1]
    block = re.search(r"```\n(.*?)```", section, flags=re.S)
    assert block is not None
    commands: dict[str, set[str]] = {}
    current = ""
    for line in block.group(1).splitlines():
        if line.startswith("tcpstack "):
            words = line.split()
            current = " ".join(words[1:3]) if words[1] == "bench" else words[1]
            commands.setdefault(current, set())
        options = set(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", line))
        for cluster in re.findall(r"\[-([A-Za-z0-9]{2,})\]", line):  # [-tanoeisH4]
            options |= {f"-{c}" for c in cluster}
        commands[current] |= {o for o in options if not re.fullmatch(r"-[A-Za-z0-9]{2,}", o)}
    return commands


def _options(parser: object) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}  # type: ignore[attr-defined]


def test_every_option_in_the_readme_exists() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    shown = _command_block()
    assert {"demo", "serve", "ss", "stats", "plot", "bench cps", "bench bulk"} <= set(shown)
    for command, options in shown.items():
        words = command.split()
        sub = subs[words[0]]
        if len(words) > 1:
            sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[words[1]]
        missing = options - _options(sub)
        assert not missing, f"README shows {sorted(missing)} for tcpstack {command}"
