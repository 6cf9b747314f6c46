"""The README's Python examples run as written (the TUN one needs root, and skips elsewhere)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stack.link.tun import kernel_link_available

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    if "Stack(" in code or "netns" in code:
        ok, reason = kernel_link_available()
        if not ok:
            pytest.skip(reason)
    script = tmp_path / f"readme_{index}.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=README.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    # A block that ends with a "# ..." line shows its output there: it must be what it prints.
    last = code.strip().splitlines()[-1]
    if last.startswith("# "):
        assert done.stdout.strip().splitlines()[-1] == last[2:]


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join(README.read_text().splitlines()[:20])
    assert "make demo" in head and "make test" in head


def test_the_configuration_table_names_every_config_field() -> None:
    """The README's knob table is written by hand: it must not lose a field that Config gains."""
    import dataclasses

    from stack.tcp.config import Config

    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_0-9]+)`", section))
    missing = [f.name for f in dataclasses.fields(Config) if f.name not in named]
    assert not missing, f"README's Configuration table lacks: {missing}"
