"""Drill scripts -> `Script`: a recursive-descent parser over `lexer` tokens.

    script  := option* event*
    option  := --name[=value]                       (only --tolerance_usecs is understood)
    event   := time action
    time    := '*' | ['+']NUM | NUM '~' NUM | '+'NUM '~' '+'NUM
    action  := ('<' | '>') packet | ['...' NUM] name '(' args ')' '=' expr [ERRNO] [(note)] | `command`
    packet  := flags START:END(LEN) [ack N] [win N] [<option, ...> | <...>]

Errors raise `ScriptError` with the line and column of the offending token. Packetdrill constructs
outside the supported subset become `Unsupported` records instead (the script is then skipped).
"""

from __future__ import annotations

from pathlib import Path

from stack.drill import calls, commands
from stack.drill.lexer import Kind, Token, tokenize
from stack.drill.script import (
    FLAG_LETTERS,
    Action,
    Command,
    Elided,
    Event,
    EventTime,
    Expr,
    Int,
    ListExpr,
    OrExpr,
    PacketSpec,
    Script,
    ScriptError,
    Str,
    StructExpr,
    Syscall,
    TcpOption,
    TimeKind,
    Unsupported,
    Word,
)
from stack.wire.segment import ACK

U32 = 0xFFFFFFFF
_SIMPLE_OPTIONS = {"nop": (), "eol": (), "sackOK": (), "mss": ("value",), "wscale": ("shift",)}
_OPTION_LIMITS = {"mss": 0xFFFF, "wscale": 0xFF}


def parse_file(path: str | Path) -> Script:
    """Read and parse one script file. OSError if unreadable, ScriptError if malformed."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return parse_text(text, str(path))


def parse_text(text: str, path: str = "<script>") -> Script:
    return _Parser(tokenize(text, path), path).script()


class _Parser:
    def __init__(self, tokens: list[Token], path: str) -> None:
        self.tokens = tokens
        self.i = 0
        self.path = path
        self.unsupported: list[Unsupported] = []

    # ------------------------------------------------------------------ token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind is not Kind.END:
            self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> ScriptError:
        tok = tok or self.tok
        return ScriptError(self.path, tok.line, tok.col, message)

    def expect_punct(self, char: str, what: str) -> Token:
        if not self.tok.is_punct(char):
            raise self.error(f"expected '{char}' {what}, found {self.tok.describe()}")
        return self.advance()

    def number(self, what: str, limit: int = U32) -> int:
        tok = self.tok
        if tok.kind is not Kind.NUMBER or "." in tok.text:
            raise self.error(f"expected {what} (an integer), found {tok.describe()}")
        self.advance()
        value = int(tok.text, 0)
        if value > limit:
            raise self.error(f"{what} {value} out of range (at most {limit})", tok)
        return value

    def skip_unsupported(self, what: str, line: int) -> None:
        self.unsupported.append(Unsupported(what, line))

    # ------------------------------------------------------------------ script
    def script(self) -> Script:
        tolerance: int | None = None
        while self.tok.kind is Kind.OPTION:
            tok = self.advance()
            value: Token | None = None
            if self.tok.is_punct("="):
                self.advance()
                value = self.advance()
            if tok.text == "--tolerance_usecs":
                if value is None or value.kind is not Kind.NUMBER or "." in value.text:
                    raise self.error("--tolerance_usecs needs an integer value", value or tok)
                tolerance = int(value.text, 0)
            else:
                self.skip_unsupported(f"option {tok.text}", tok.line)
        events: list[Event] = []
        while self.tok.kind is not Kind.END:
            event = self.event()
            if event is not None:
                events.append(event)
        return Script(self.path, tuple(events), tuple(self.unsupported), tolerance)

    def event(self) -> Event | None:
        start = self.tok
        when = self.time()
        action = self.action(when)
        if action is None:
            return None
        constrained = when.kind in (TimeKind.ANY, TimeKind.ABSOLUTE_RANGE, TimeKind.RELATIVE_RANGE)
        if constrained and (not isinstance(action, PacketSpec) or action.inbound):
            what = "'*'" if when.kind is TimeKind.ANY else "a time range"
            raise self.error(f"{what} can only be used with outbound packets", start)
        return Event(start.line, start.col, when, action)

    # ------------------------------------------------------------------ time
    def seconds(self) -> float:
        tok = self.tok
        if tok.kind is not Kind.NUMBER or tok.text.lower().startswith("0x"):
            raise self.error(f"expected a time in seconds, found {tok.describe()}")
        self.advance()
        return float(tok.text)

    def time(self) -> EventTime:
        tok = self.tok
        if tok.is_punct("*"):
            self.advance()
            return EventTime(TimeKind.ANY)
        relative = tok.is_punct("+")
        if relative:
            self.advance()
        if self.tok.kind is not Kind.NUMBER:
            raise self.error(f"expected an event time (like 0.1, +0.1, 0.1~0.2 or *), found {self.tok.describe()}")
        start = self.seconds()
        if not self.tok.is_punct("~"):
            return EventTime(TimeKind.RELATIVE if relative else TimeKind.ABSOLUTE, start)
        tilde = self.advance()
        end_relative = self.tok.is_punct("+")
        if end_relative:
            self.advance()
        if end_relative != relative:
            raise self.error("both ends of a time range must be relative (+a~+b) or absolute (a~b)", tilde)
        end = self.seconds()
        if end < start:
            raise self.error("time range is backwards", tilde)
        return EventTime(TimeKind.RELATIVE_RANGE if relative else TimeKind.ABSOLUTE_RANGE, start, end)

    # ------------------------------------------------------------------ actions
    def action(self, when: EventTime) -> Action | None:
        tok = self.tok
        if tok.is_punct("<") or tok.is_punct(">"):
            return self.packet()
        if tok.kind is Kind.COMMAND:
            self.advance()
            text = tok.text[1:-1].strip()
            reason = commands.unsupported_reason(text)
            if reason is not None:
                self.skip_unsupported(reason, tok.line)
            return Command(text)
        if tok.kind is Kind.CODE:
            self.advance()
            self.skip_unsupported("%{ code }% block", tok.line)
            return None
        if tok.kind is Kind.ELLIPSIS or (tok.kind is Kind.WORD and self.peek().is_punct("(")):
            return self.syscall()
        raise self.error(f"expected a packet ('<' or '>'), a system call or a `command`, found {tok.describe()}")

    def packet(self) -> PacketSpec | None:
        direction = self.advance()
        inbound = direction.text == "<"
        tok = self.tok
        unsupported = None
        if tok.is_punct("[") or tok.is_punct("(") or (tok.kind is Kind.WORD and tok.text in ("ipv4", "ipv6")):
            unsupported = "IP header fields in packets"
        elif tok.kind is Kind.NUMBER and self.peek().is_punct(">"):
            unsupported = "explicit port numbers in packets"
        elif tok.kind is Kind.WORD and tok.text in ("udp", "icmp", "gre", "mpls"):
            unsupported = f"{tok.text} packets"
        if unsupported is not None:
            self._skip_packet(unsupported, direction)
            return None
        flags = self.flags()
        seq_tok = self.tok
        seq = self.number("start sequence number")
        self.expect_punct(":", "between start and end sequence numbers")
        end = self.number("end sequence number")
        self.expect_punct("(", "before the payload length")
        length = self.number("payload length", 0xFFFF)
        self.expect_punct(")", "after the payload length")
        if (seq + length) & U32 != end:
            raise self.error(f"inconsistent sequence numbers: {seq}:{end} does not span {length} bytes", seq_tok)
        ack = 0
        window: int | None = None
        if self.tok.kind is Kind.WORD and self.tok.text == "ack":
            self.advance()
            ack = self.number("ack number")
        if self.tok.kind is Kind.WORD and self.tok.text == "win":
            self.advance()
            window = self.number("window", 0xFFFF)
        if self.tok.kind is Kind.WORD and self.tok.text == "urg":
            self._skip_packet("urgent pointers", direction)
            return None
        options: tuple[TcpOption, ...] | None = ()
        if self.tok.is_punct("<"):
            options = self.options(inbound)
        if inbound and window is None:
            raise self.error("an inbound packet needs its window (win N)", direction)
        return PacketSpec(inbound, flags, seq, length, ack, window, options)

    def _skip_packet(self, what: str, direction: Token) -> None:
        self.skip_unsupported(what, direction.line)
        line = direction.line
        while self.tok.kind is not Kind.END and self.tok.line == line:
            self.advance()  # the rest of the packet line

    def flags(self) -> int:
        tok = self.tok
        if tok.is_punct("."):
            self.advance()
            return ACK
        if tok.is_punct("-"):
            self.advance()
            return 0
        if tok.kind is not Kind.WORD:
            raise self.error(f"expected TCP flags (like S, S., F., P., R, .), found {tok.describe()}")
        flags = 0
        for offset, letter in enumerate(tok.text):
            bit = FLAG_LETTERS.get(letter)
            if bit is None:
                raise ScriptError(self.path, tok.line, tok.col + offset,
                                  f"unknown TCP flag {letter!r} (use F S R P U E W, and '.' for ACK)")
            flags |= bit
        self.advance()
        nxt = self.tok
        if nxt.is_punct(".") and nxt.line == tok.line and nxt.col == tok.col + len(tok.text):
            self.advance()
            flags |= ACK
        return flags

    def options(self, inbound: bool) -> tuple[TcpOption, ...] | None:
        opening = self.advance()
        if self.tok.kind is Kind.ELLIPSIS:
            self.advance()
            self.expect_punct(">", "after '<...'")
            if inbound:
                raise self.error("<...> (options not checked) can only be used with outbound packets", opening)
            return None
        found: list[TcpOption] = []
        while True:
            option = self.option()
            if option is not None:
                found.append(option)
            if self.tok.is_punct(","):
                self.advance()
                continue
            self.expect_punct(">", "to close the option list")
            return tuple(found)

    def option(self) -> TcpOption | None:
        tok = self.tok
        if tok.kind is not Kind.WORD:
            raise self.error(f"expected a TCP option (mss, wscale, sackOK, TS, sack, nop, eol), found {tok.describe()}")
        self.advance()
        name = tok.text
        if name in _SIMPLE_OPTIONS:
            values = tuple(self.number(f"{name} value", _OPTION_LIMITS[name]) for _ in _SIMPLE_OPTIONS[name])
            return TcpOption(name, values)
        if name == "TS":
            for word in ("val", "ecr"):
                if not (self.tok.kind is Kind.WORD and self.tok.text == word):
                    raise self.error(f"expected '{word}' in the TS option, found {self.tok.describe()}")
                self.advance()
                if word == "val":
                    val = self.number("TS val")
            return TcpOption("TS", (val, self.number("TS ecr")))
        if name == "sack":
            edges: list[int] = []
            while self.tok.kind is Kind.NUMBER:
                edges.append(self.number("SACK block start"))
                self.expect_punct(":", "inside a SACK block")
                edges.append(self.number("SACK block end"))
            if not edges:
                raise self.error("a sack option needs at least one block (start:end)")
            if len(edges) > 8:
                raise self.error("a sack option holds at most 4 blocks")
            return TcpOption("sack", tuple(edges))
        # A packetdrill option this runner does not model (md5, FO, ...): skip its tokens.
        self.skip_unsupported(f"TCP option {name}", tok.line)
        while not (self.tok.is_punct(",") or self.tok.is_punct(">") or self.tok.kind is Kind.END):
            self.advance()
        return None

    # ------------------------------------------------------------------ system calls
    def syscall(self) -> Syscall:
        end: float | None = None
        if self.tok.kind is Kind.ELLIPSIS:
            self.advance()
            end = self.seconds()
        name_tok = self.tok
        if name_tok.kind is not Kind.WORD:
            raise self.error(f"expected a system call name after '...END', found {name_tok.describe()}")
        self.advance()
        self.expect_punct("(", "after the system call name")
        args = self.expr_list(")", "to close the argument list")
        self.expect_punct("=", "before the expected return value")
        result = self.expr()
        errno_name: str | None = None
        if self.tok.kind is Kind.WORD:
            errno_name = self.advance().text
        if self.tok.is_punct("("):
            self.note()
        syscall = Syscall(name_tok.text, tuple(args), result, errno_name, end)
        reason = calls.check(syscall, self.path, name_tok.line, name_tok.col)
        if reason is not None:
            self.skip_unsupported(reason, name_tok.line)
        return syscall

    def note(self) -> None:
        """`(Connection reset by peer)`: strace's text after an errno, ignored."""
        opening = self.advance()
        depth = 1
        while depth:
            tok = self.advance()
            if tok.kind is Kind.END:
                raise self.error("unterminated '(' note", opening)
            if tok.is_punct("("):
                depth += 1
            elif tok.is_punct(")"):
                depth -= 1

    def expr_list(self, closing: str, what: str) -> list[Expr]:
        """`a, b, c` up to and including the `closing` punctuation (which may follow at once)."""
        items: list[Expr] = []
        if not self.tok.is_punct(closing):
            items.append(self.expr())
            while self.tok.is_punct(","):
                self.advance()
                items.append(self.expr())
        self.expect_punct(closing, what)
        return items

    def expr(self) -> Expr:
        first = self.term()
        if not self.tok.is_punct("|"):
            return first
        items = [first]
        while self.tok.is_punct("|"):
            self.advance()
            items.append(self.term())
        return OrExpr(tuple(items), first.line, first.col)

    def term(self) -> Expr:
        tok = self.tok
        if tok.kind is Kind.ELLIPSIS:
            self.advance()
            return Elided(tok.line, tok.col)
        if tok.is_punct("-") and self.peek().kind is Kind.NUMBER:
            self.advance()
            return Int(-self.number("number"), tok.line, tok.col)
        if tok.kind is Kind.NUMBER:
            return Int(self.number("number", 0xFFFFFFFFFFFFFFFF), tok.line, tok.col)
        if tok.kind is Kind.WORD:
            self.advance()
            return Word(tok.text, tok.line, tok.col)
        if tok.kind is Kind.STRING:
            self.advance()
            return Str(tok.text[1:-1], tok.line, tok.col)
        if tok.is_punct("["):
            self.advance()
            return ListExpr(tuple(self.expr_list("]", "to close the list")), tok.line, tok.col)
        if tok.is_punct("{"):
            self.advance()
            fields: list[tuple[str, Expr]] = []
            while True:
                name = self.tok
                if name.kind is not Kind.WORD:
                    raise self.error(f"expected a field name in '{{...}}', found {name.describe()}")
                self.advance()
                self.expect_punct("=", "after the field name")
                fields.append((name.text, self.expr()))
                if self.tok.is_punct(","):
                    self.advance()
                    continue
                self.expect_punct("}", "to close the structure")
                return StructExpr(tuple(fields), tok.line, tok.col)
        raise self.error(f"expected an expression, found {tok.describe()}")
