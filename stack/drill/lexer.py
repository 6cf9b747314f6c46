"""Tokens of the drill (packetdrill) script language, each with its line and column.

Comments are `//` to the end of the line and `/* ... */` (which may span lines). `%{ ... }%` code
blocks are kept as one CODE token so the parser can name them as unsupported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from stack.drill.script import ScriptError


class Kind(Enum):
    NUMBER = "number"
    WORD = "word"
    STRING = "string"
    COMMAND = "back-quoted command"
    OPTION = "option"
    ELLIPSIS = "'...'"
    PUNCT = "punctuation"
    CODE = "code block"
    END = "end of file"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    line: int
    col: int

    def is_punct(self, char: str) -> bool:
        return self.kind is Kind.PUNCT and self.text == char

    def describe(self) -> str:
        return "end of file" if self.kind is Kind.END else repr(self.text)


# Order matters: '...' before '.', numbers before punctuation, `--opt` before '-'.
_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<linecomment>//[^\n]*)
  | (?P<blockcomment>/\*.*?\*/)
  | (?P<code>%\{.*?\}%)
  | (?P<ellipsis>\.\.\.)
  | (?P<option>--[A-Za-z0-9_]+)
  | (?P<number>0[xX][0-9A-Fa-f]+|\d+\.\d+|\d+\.(?!\.)|\.\d+|\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<command>`[^`]*`)
  | (?P<punct>[-+~*<>()\[\]{},:=|.!])
    """,
    re.VERBOSE | re.DOTALL,
)

_KINDS = {
    "code": Kind.CODE,
    "ellipsis": Kind.ELLIPSIS,
    "option": Kind.OPTION,
    "number": Kind.NUMBER,
    "word": Kind.WORD,
    "string": Kind.STRING,
    "command": Kind.COMMAND,
    "punct": Kind.PUNCT,
}


def tokenize(text: str, path: str) -> list[Token]:
    """All tokens of `text`, ending with an END token; ScriptError on a character no token starts with."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    line_start = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            col = pos - line_start + 1
            if text.startswith("/*", pos):
                raise ScriptError(path, line, col, "unterminated /* comment")
            if text[pos] == '"':
                raise ScriptError(path, line, col, "unterminated string")
            if text[pos] == "`":
                raise ScriptError(path, line, col, "unterminated back-quoted command")
            raise ScriptError(path, line, col, f"unexpected character {text[pos]!r}")
        group = m.lastgroup
        assert group is not None
        value = m.group()
        if group in _KINDS:
            tokens.append(Token(_KINDS[group], value, line, pos - line_start + 1))
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = pos + value.rindex("\n") + 1
        pos = m.end()
    tokens.append(Token(Kind.END, "", line, pos - line_start + 1))
    return tokens
