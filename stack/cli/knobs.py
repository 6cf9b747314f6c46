"""Every `Config` knob as a command-line flag, and `--config-file FILE.toml`, generated from the
`Config` dataclass itself so the two never drift.

Each field with a plain value type (bool, int, float, str, an optional one of those, or a pair of
ints) becomes `--field-name`; its help text is the field's docstring in stack/tcp/config.py, with
the default and the unit appended. Booleans get `--name` / `--no-name`. Fields that hold code or
secrets (`isn`, `secret`) have no flag and are refused in a config file.

Precedence: the subcommand's own default (e.g. `demo` shortens `msl`) < the config file < a flag.
The config file is TOML with the field names as keys (`msl = 5.0`, `tw_reuse = true`,
`ephemeral_ports = [50000, 51999]`); an unknown key or a wrong type is a one-line usage error.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.tcp import config as config_module
from stack.tcp.config import Config

_FILE_DEST = "config_file"


@dataclass(frozen=True)
class Knob:
    """One `Config` field as the command line sees it."""

    name: str
    kind: type  # bool, int, float, str or tuple (of `arity` ints)
    optional: bool  # None is a valid value (the default means "off")
    default: Any
    doc: str
    arity: int = 0  # for a tuple: how many ints (a pair is written LOW-HIGH, more as A,B,C)

    @property
    def separator(self) -> str:
        return "-" if self.arity == 2 else ","

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def unit(self) -> str:
        """'s' for durations, 'bytes' for sizes, '' otherwise: read from the docstring's wording."""
        text = self.doc.lower()
        if self.kind is float and ("second" in text or "(s)" in text):
            return "s"
        if self.kind is int and "bytes" in text:
            return "bytes"
        return ""

    @property
    def metavar(self) -> str:
        if self.kind is tuple:
            return "LOW-HIGH" if self.arity == 2 else ",".join("N" * self.arity)
        if self.kind is str:
            return "NAME"
        return {"s": "SECONDS", "bytes": "BYTES"}.get(self.unit, "N")

    def shown_default(self) -> str:
        value = self.default
        if value is None:
            return "off"
        if isinstance(value, tuple):
            return self.separator.join(map(str, value))
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g} {self.unit}".strip() if isinstance(value, float) else f"{value} {self.unit}".strip()


def _field_docs() -> dict[str, str]:
    """Attribute docstrings (a string literal right under the field) of the Config class."""
    tree = ast.parse(inspect.getsource(config_module))
    docs: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == Config.__name__:
            body = node.body
            for field, after in zip(body, [*body[1:], None], strict=True):
                if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                        and isinstance(after.value.value, str)):
                    docs[field.target.id] = " ".join(after.value.value.split())
    return docs


def _kind(annotation: Any) -> tuple[type, bool, int] | None:
    """(value type, optional, tuple arity) for the annotations a flag can carry, None for the others."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        optional, annotation = True, args[0]
    if annotation in (bool, int, float, str):
        return annotation, optional, 0
    parts = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(parts) >= 2 and all(a is int for a in parts):
        return tuple, optional, len(parts)
    return None


@functools.cache
def knobs() -> tuple[Knob, ...]:
    """The Config fields that have a flag, in the dataclass's order."""
    hints = typing.get_type_hints(Config)
    docs = _field_docs()
    found = []
    for field in dataclasses.fields(Config):
        kind = _kind(hints[field.name])
        if kind is None or field.default is dataclasses.MISSING:
            continue  # code (isn) or secrets (secret): not something to type on a command line
        found.append(Knob(field.name, kind[0], kind[1], field.default, docs.get(field.name, ""), kind[2]))
    return tuple(found)


def _parse(knob: Knob) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return _check(knob, _from_text(knob, text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = knob.name  # argparse names the type in some messages
    return parse


def _from_text(knob: Knob, text: str) -> Any:
    if knob.kind is int:
        try:
            return int(text, 10)
        except ValueError:
            raise ValueError(f"not a whole number: {text!r}") from None
    if knob.kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"not a number: {text!r}") from None
    if knob.kind is tuple:
        try:
            return tuple(int(part, 10) for part in text.split(knob.separator))
        except ValueError:
            return None
    return text


def _check(knob: Knob, value: Any) -> Any:
    """The value if its type fits the knob (from the command line or a config file), else ValueError."""
    if knob.kind is tuple:
        if (isinstance(value, (tuple, list)) and len(value) == knob.arity
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            return tuple(value)
        example = knob.separator.join(map(str, knob.default)) if knob.default else knob.metavar
        count = {2: "two", 3: "three"}.get(knob.arity, str(knob.arity))
        raise ValueError(f"expected {count} whole numbers {knob.metavar} (e.g. {example}), not {value!r}")
    if knob.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, knob.kind) or (knob.kind is int and isinstance(value, bool)):
        raise ValueError(f"expected {knob.kind.__name__}, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value!r}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """`--config-file` and one flag per Config knob; `defaults` are this command's own defaults."""
    defaults = defaults or {}
    group = parser.add_argument_group(
        "TCP configuration", "Every field of stack.tcp.config.Config (README: Configuration). Precedence: "
        "these flags > --config-file > the defaults shown.")
    group.add_argument("--config-file", dest=_FILE_DEST, metavar="FILE.toml",
                       help="TOML file of Config fields, e.g. `msl = 5.0` and `tw_reuse = true`")
    for knob in knobs():
        default = defaults.get(knob.name, knob.default)
        shown = dataclasses.replace(knob, default=default).shown_default()
        doc = knob.doc or knob.name.replace("_", " ")
        help_text = f"{doc} (default: {shown})".replace("%", "%%")
        dest = "cfg_" + knob.name
        if knob.kind is bool:
            group.add_argument(knob.flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            if knob.name == "congestion_control":
                from stack.tcp.congestion import ALGORITHMS

                help_text = help_text.replace(" (default", f" ({', '.join(sorted(ALGORITHMS))}; default", 1)
            group.add_argument(knob.flag, dest=dest, type=_parse(knob), default=None, metavar=knob.metavar,
                               help=help_text)


def _from_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"--config-file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--config-file {path}: not valid TOML: {exc}") from None
    by_name = {k.name: k for k in knobs()}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        knob = by_name.get(name)
        if knob is None:
            raise ValueError(f"--config-file {path}: unknown setting {key!r} (see --help for the settings)")
        try:
            values[name] = _check(knob, value)
        except ValueError as exc:
            raise ValueError(f"--config-file {path}: {key}: {exc}") from None
    return values


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None,
                     **overrides: Any) -> Config:
    """The Config the command line asks for; ValueError (one line) if it is not a valid one.

    `overrides` are values given by other flags of the command (e.g. serve's `--mtu`); a knob's
    own flag, when given, still wins."""
    values: dict[str, Any] = dict(defaults or {})
    if getattr(args, _FILE_DEST, None):
        values.update(_from_file(getattr(args, _FILE_DEST)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    for knob in knobs():
        given = getattr(args, "cfg_" + knob.name, None)
        if given is not None:
            values[knob.name] = given
    try:
        return Config(**values)
    except ValueError as exc:
        raise ValueError(f"bad configuration: {exc}") from None


def config_summary(config: Config) -> dict[str, Any]:
    """The knobs' values of `config`, JSON-ready (for `serve`'s control `info`)."""
    return {k.name: (list(v) if isinstance(v := getattr(config, k.name), tuple) else v) for k in knobs()}
