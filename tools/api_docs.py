"""Generate the API reference from the docstrings with pdoc: `make docs` (into docs/api/).

    python tools/api_docs.py OUTPUT_DIR

Any warning pdoc raises (a module that fails to import, a docstring it cannot render, a link it
cannot resolve) is an error: the script prints each one and exits 1, so the test that runs it in CI
keeps the reference whole.
"""

from __future__ import annotations

import importlib
import sys
import typing
import warnings
from pathlib import Path

import pdoc
import pdoc.render

PACKAGE = "stack"


def _resolve_named_tuples() -> None:
    """Give NamedTuple constructors their fields' real types.

    With `from __future__ import annotations` a NamedTuple's generated `__new__` keeps its field
    annotations as strings, to be evaluated in a namespace of its own that has none of the module's
    names, so pdoc cannot resolve them there; typing can, from the class's module."""
    root = Path(importlib.import_module(PACKAGE).__path__[0])
    # Files, not pkgutil: some subpackages (stack.tcp) are namespace packages it does not enter.
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")
                    and obj.__module__ == module.__name__):
                obj.__new__.__annotations__ = typing.get_type_hints(obj)


def build(output: Path) -> list[str]:
    """Write the HTML reference of the `stack` package into `output`; the warnings pdoc raised."""
    pdoc.render.configure(docformat="markdown", footer_text="tcpstack", search=True, show_source=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _resolve_named_tuples()
        pdoc.pdoc(PACKAGE, output_directory=output)
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python tools/api_docs.py OUTPUT_DIR", file=sys.stderr)
        return 2
    output = Path(argv[0])
    problems = build(output)
    for line in problems:
        print(f"api_docs: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"API reference written to {output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
