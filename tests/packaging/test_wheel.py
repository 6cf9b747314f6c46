"""The package as a user installs it: a wheel built by `python -m build`, installed (not editable)
into a fresh virtual environment, runs `tcpstack demo`, and `bench cps --loadgen c` finds the C load
generator's source it ships (stack/bench/loadgen.c is package data).

Slow-ish (a build in an isolated environment and a fresh venv, ~1 min), but CI runs it: `make test`
runs every marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack.link.tun import kernel_link_available

REPO = Path(__file__).resolve().parents[2]
KERNEL_LINK_OK, KERNEL_LINK_REASON = kernel_link_available()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kernel,
    pytest.mark.skipif(not KERNEL_LINK_OK, reason=KERNEL_LINK_REASON or "n/a"),
]


def run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # Outside the repository, with nothing of it on the path: only the installed package counts.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"{argv[:4]}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_built_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], cwd=tmp_path, timeout=600)
    wheels = list(dist.glob("tcpstack-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(wheels[0])], cwd=tmp_path, timeout=600)
    installed = run([str(venv / "bin" / "python"), "-c", "import stack; print(stack.__file__)"], cwd=tmp_path)
    assert installed.stdout.strip().startswith(str(venv)), installed.stdout  # not the source tree

    demo = run([str(venv / "bin" / "tcpstack"), "demo"], cwd=tmp_path, timeout=120)
    assert "2MSL expired: TIME-WAIT -> CLOSED" in demo.stdout
    assert "CLOSING" in demo.stdout

    cps = run([str(venv / "bin" / "tcpstack"), "bench", "cps", "--loadgen", "c", "--case", "kernel_to_kernel",
               "--seconds", "0.5", "--c1-seconds", "0.5", "--json"], cwd=tmp_path, timeout=120)
    report = json.loads(cps.stdout)
    assert report["kernel_to_kernel"]["loadgen"] == "c"
    assert report["kernel_to_kernel"]["connections"] > 0
