"""The back-quoted shell lines a drill script may hold: two forms, run the same way on both targets.

    `sysctl -q net.ipv4.tcp_NAME=VALUE ...`        settings of the side under test
    `[!] ss -tan [state STATE] [| grep [-q] [-E] PATTERN]`   an assertion on its sockets

Nothing else is run (no shell at all): a script with any other command is skipped as unsupported.
The kernel target applies sysctls inside its private namespace only and runs the real `ss` there;
the stack target maps sysctls to `Config` fields and lists its own sockets in `ss`'s shape. The
`grep` is done here, in Python, on either listing; the command succeeds when grep would exit 0.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

SYSCTL_PREFIX = "net.ipv4.tcp_"
SS_FLAGS = frozenset("tanH")

# ss state filter names (iproute2) -> the name ss prints in its State column.
SS_STATES = {
    "established": "ESTAB", "syn-sent": "SYN-SENT", "syn-recv": "SYN-RECV", "fin-wait-1": "FIN-WAIT-1",
    "fin-wait-2": "FIN-WAIT-2", "time-wait": "TIME-WAIT", "closed": "UNCONN", "close-wait": "CLOSE-WAIT",
    "last-ack": "LAST-ACK", "listening": "LISTEN", "closing": "CLOSING",
}


@dataclass(frozen=True, slots=True)
class Sysctl:
    settings: tuple[tuple[str, str], ...]  # ("net.ipv4.tcp_timestamps", "0")


@dataclass(frozen=True, slots=True)
class Ss:
    negate: bool
    state: str | None  # an SS_STATES key
    pattern: str | None
    extended: bool  # grep -E

    def succeeds(self, lines: list[str]) -> bool:
        """Whether `ss ... | grep PATTERN` exits 0 on this listing (ss alone: always)."""
        if self.pattern is None:
            ok = True
        else:
            pattern = self.pattern if self.extended else _basic_to_python(self.pattern)
            ok = any(re.search(pattern, line) for line in lines)
        return ok != self.negate


CommandSpec = Sysctl | Ss


class UnsupportedCommand(ValueError):
    pass


def parse(text: str) -> CommandSpec:
    """The command's meaning; UnsupportedCommand (with the reason) for anything else."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UnsupportedCommand(f"shell command `{text}` ({exc})") from None
    if not words:
        raise UnsupportedCommand("empty shell command")
    if any(w in (";", "&&", "||", ">", "<", "&") or w.startswith((">", "<")) for w in words):
        raise UnsupportedCommand(f"shell command `{text}`")
    if words[0] == "sysctl":
        return _sysctl(words, text)
    return _ss(words, text)


def unsupported_reason(text: str) -> str | None:
    try:
        parse(text)
    except UnsupportedCommand as exc:
        return str(exc)
    return None


def _sysctl(words: list[str], text: str) -> Sysctl:
    settings: list[tuple[str, str]] = []
    for word in words[1:]:
        if word in ("-q", "-w", "-qw", "-wq"):
            continue
        key, eq, value = word.partition("=")
        if not eq or not key.startswith(SYSCTL_PREFIX) or not re.fullmatch(r"[a-z0-9_.]+", key):
            raise UnsupportedCommand(f"sysctl setting {word!r} (only {SYSCTL_PREFIX}*=VALUE)")
        if not re.fullmatch(r"[0-9a-z_ \t]+", value):
            raise UnsupportedCommand(f"sysctl value {value!r}")
        settings.append((key, " ".join(value.split())))
    if not settings:
        raise UnsupportedCommand(f"shell command `{text}` (a sysctl that sets nothing)")
    return Sysctl(tuple(settings))


def _ss(words: list[str], text: str) -> Ss:
    negate = words[0] == "!"
    if negate:
        words = words[1:]
    pipe = words.index("|") if "|" in words else len(words)
    ss_words, grep_words = words[:pipe], words[pipe + 1 :]
    if not ss_words or ss_words[0] != "ss":
        raise UnsupportedCommand(f"shell command `{text}` (only sysctl and ss)")
    state: str | None = None
    rest = ss_words[1:]
    while rest:
        word = rest.pop(0)
        if word.startswith("-") and set(word[1:]) <= SS_FLAGS and len(word) > 1:
            continue
        if word == "state" and rest and rest[0] in SS_STATES and state is None:
            state = rest.pop(0)
            continue
        raise UnsupportedCommand(f"ss argument {word!r} (only -t -a -n -H and one state NAME)")
    pattern: str | None = None
    extended = False
    if pipe < len(words):
        if not grep_words or grep_words[0] != "grep" or "|" in grep_words:
            raise UnsupportedCommand(f"shell command `{text}` (ss may only be piped into grep)")
        args = grep_words[1:]
        while args and args[0].startswith("-") and len(args) > 1:
            flag = args.pop(0)
            if flag not in ("-q", "-E", "-qE", "-Eq"):
                raise UnsupportedCommand(f"grep flag {flag!r} (only -q and -E)")
            extended = extended or "E" in flag
        if len(args) != 1:
            raise UnsupportedCommand(f"shell command `{text}` (grep takes one pattern)")
        pattern = args[0]
    return Ss(negate, state, pattern, extended)


def _basic_to_python(pattern: str) -> str:
    r"""grep's basic regular expressions: `+ ? | ( ) { }` are literal unless escaped."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "+?|(){}":
            out.append(pattern[i + 1])
            i += 2
            continue
        out.append("\\" + char if char in "+?|(){}" else char)
        i += 1
    return "".join(out)
