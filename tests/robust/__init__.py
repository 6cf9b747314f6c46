"""Robustness and security: fuzzing, the state x event matrix (RFC 9293, RFC 5961), blind in-window
attacks (RFC 5961) and ISN unpredictability (RFC 6528).

The fuzz engine and the matrix builder live in `tools/` (they are also command-line tools); the
tests load them from there by path, as `tools/` is not a package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str) -> ModuleType:
    """Import tools/<name>.py once (registered in sys.modules, as dataclasses need)."""
    key = f"_tcpstack_tools_{name}"
    module = sys.modules.get(key)
    if module is None:
        spec = importlib.util.spec_from_file_location(key, ROOT / "tools" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return module
