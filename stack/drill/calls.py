"""System calls of a script, run against either target's sockets with Linux's blocking semantics.

Both targets offer the same non-blocking `SocketApi` (a would-block is `BlockingIOError`, any other
failure an `OSError` with its errno). Blocking is emulated here, the same way for both: a call that
would block on a blocking socket becomes a `Pending` call that the runner retries as time passes,
until it completes -- so a blocking `read` returns when the segment that satisfies it arrives.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from stack.drill import symbols
from stack.drill.script import Elided, Expr, Int, ListExpr, OrExpr, ScriptError, StructExpr, Syscall, Word

OptionValue = int | tuple[int, int]  # an int option, or SO_LINGER's (onoff, linger)


class SocketApi(Protocol):
    """The sockets of one side under test; handles are opaque to the runner. Nothing here blocks."""

    def socket(self) -> object: ...
    def bind(self, h: object) -> None: ...
    def listen(self, h: object, backlog: int) -> None: ...
    def accept(self, h: object) -> object: ...
    def connect(self, h: object) -> None: ...  # BlockingIOError(EINPROGRESS) once started
    def connect_result(self, h: object) -> None: ...  # BlockingIOError while still in progress
    def recv(self, h: object, size: int) -> bytes: ...
    def send(self, h: object, data: bytes) -> int: ...
    def close(self, h: object) -> None: ...
    def shutdown(self, h: object, how: int) -> None: ...
    def setsockopt(self, h: object, level: int, name: int, value: OptionValue) -> None: ...
    def getsockopt(self, h: object, level: int, name: int) -> OptionValue: ...
    def ioctl(self, h: object, request: int) -> int: ...
    def fileno(self, h: object) -> int | None: ...  # for the kernel target's select(); None elsewhere


ARITY = {
    "socket": (3,), "bind": (3,), "listen": (2,), "accept": (3,), "connect": (3,), "read": (3,), "write": (3,),
    "recv": (4,), "send": (4,), "close": (1,), "shutdown": (2,), "setsockopt": (5,), "getsockopt": (5,),
    "fcntl": (2, 3), "ioctl": (3,),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a call returned: `value` (-1 on error) and errno; `output` is what getsockopt or ioctl
    wrote through their pointer argument; `handle` a new socket (socket, accept)."""

    value: int
    err: int | None = None
    output: OptionValue | None = None
    handle: object = None

    def text(self, name: str) -> str:
        if self.err is not None:
            return f"{name} = -1 {symbols.errno_name(self.err)}"
        return f"{name} = {self.value}"


@dataclass(frozen=True, slots=True)
class Mismatch:
    field: str
    expected: str
    actual: str


class Pending:
    """A call blocked on a blocking socket: `retry()` gives its Outcome once it can complete."""

    def __init__(self, retry: Callable[[], Outcome | None], interest: str, fileno: int | None) -> None:
        self.retry = retry
        self.interest = interest  # "r" or "w": what select() should wait for on `fileno`
        self.fileno = fileno


# --------------------------------------------------------------------------------- static checks
def _int(expr: Expr) -> int | None:
    if isinstance(expr, Int):
        return expr.value
    if isinstance(expr, Word):
        return symbols.value_of(expr.name)
    if isinstance(expr, OrExpr):
        total = 0
        for item in expr.items:
            value = _int(item)
            if value is None:
                return None
            total |= value
        return total
    return None


def check(sc: Syscall, path: str, line: int, col: int) -> str | None:
    """ScriptError for a malformed call; the unsupported construct's name, or None if supported."""

    def fail(message: str) -> ScriptError:
        return ScriptError(path, line, col, message)

    if sc.name not in ARITY:
        return f"system call {sc.name}"
    if len(sc.args) not in ARITY[sc.name]:
        counts = " or ".join(str(n) for n in ARITY[sc.name])
        raise fail(f"{sc.name} takes {counts} arguments, not {len(sc.args)}")
    if not isinstance(sc.result, Int):
        raise fail(f"the expected result of {sc.name} must be an integer")
    if sc.errno is not None and sc.errno not in symbols.ERRNO_NAMES:
        raise fail(f"unknown errno name {sc.errno}")
    for arg in sc.args:
        for word in _words(arg):
            if symbols.value_of(word.name) is None:
                return f"symbol {word.name}"
    if sc.name != "socket" and not isinstance(sc.args[0], Int):
        raise fail(f"the first argument of {sc.name} must be a file descriptor number")
    if sc.name in ("bind", "accept", "connect") and not all(isinstance(a, Elided) for a in sc.args[1:]):
        return f"address arguments of {sc.name} (write ...)"
    if sc.name in ("setsockopt", "getsockopt"):
        level, name = _int(sc.args[1]), _int(sc.args[2])
        option = symbols.SOCKET_OPTIONS.get((level or 0, name or 0))
        if option is None:
            return f"socket option {_text(sc.args[2])}"
        if sc.name == "setsockopt":
            if option in symbols.READ_ONLY_OPTIONS:
                raise fail(f"{option} cannot be set")
            value = sc.args[3]
            if option == "SO_LINGER":
                if not isinstance(value, StructExpr):
                    raise fail("SO_LINGER takes {onoff=N, linger=N}")
                fields = dict(value.fields)
                onoff, linger = _int(fields.get("onoff", Elided())), _int(fields.get("linger", Elided()))
                if onoff is None or linger is None:
                    raise fail("SO_LINGER takes {onoff=N, linger=N}")
                if onoff and linger:
                    return "SO_LINGER with a timeout (only {onoff=1, linger=0} and onoff=0)"
            elif not (isinstance(value, ListExpr) and len(value.items) == 1 and _int(value.items[0]) is not None):
                raise fail(f"{option} takes [N]")
    if sc.name == "fcntl":
        cmd = _int(sc.args[1])
        if cmd not in (symbols.VALUES["F_GETFL"], symbols.VALUES["F_SETFL"]):
            return f"fcntl command {_text(sc.args[1])}"
        if cmd == symbols.VALUES["F_SETFL"] and (len(sc.args) != 3 or _int(sc.args[2]) is None):
            raise fail("fcntl(fd, F_SETFL, FLAGS) needs its flags")
    if sc.name == "ioctl" and _int(sc.args[1]) not in symbols.IOCTLS:
        return f"ioctl {_text(sc.args[1])}"
    if sc.name in ("recv", "send"):
        allowed = symbols.VALUES["MSG_DONTWAIT"] | symbols.VALUES["MSG_NOSIGNAL"]
        flags = _int(sc.args[3])
        if flags is None or flags & ~allowed:
            return f"{sc.name} flags {_text(sc.args[3])}"
    if sc.name == "shutdown" and _int(sc.args[1]) not in (0, 1, 2):
        raise fail("shutdown takes SHUT_RD, SHUT_WR or SHUT_RDWR")
    size_at = {"read": 2, "write": 2, "recv": 2, "send": 2, "listen": 1}.get(sc.name)
    if size_at is not None and _int(sc.args[size_at]) is None:
        raise fail(f"the size argument of {sc.name} must be a number")
    return None


def _words(expr: Expr) -> list[Word]:
    if isinstance(expr, Word):
        return [expr]
    if isinstance(expr, (OrExpr, ListExpr)):
        return [w for item in expr.items for w in _words(item)]
    if isinstance(expr, StructExpr):
        return [w for _, value in expr.fields for w in _words(value)]
    return []


def _text(expr: Expr) -> str:
    if isinstance(expr, Word):
        return expr.name
    if isinstance(expr, Int):
        return str(expr.value)
    return "..."


# --------------------------------------------------------------------------------- running calls
@dataclass(slots=True)
class _Fd:
    handle: object
    nonblocking: bool = False


class Calls:
    """The script's file descriptors (numbered as the script numbers them) over one SocketApi."""

    def __init__(self, api: SocketApi) -> None:
        self.api = api
        self.fds: dict[int, _Fd] = {}

    def handles(self) -> list[object]:
        return [fd.handle for fd in self.fds.values()]

    def start(self, sc: Syscall) -> Outcome | Pending:
        """Make the call; a Pending if it blocks (only on a blocking socket)."""
        api = self.api
        args = sc.args
        if sc.name == "socket":
            return self._attempt(lambda: Outcome(0, handle=api.socket()))
        fd = self.fds.get(_int(args[0]) or 0) if isinstance(args[0], Int) else None
        if fd is None:
            return Outcome(-1, errno.EBADF)
        h = fd.handle
        name = sc.name
        if name == "bind":
            return self._void(lambda: api.bind(h))
        if name == "listen":
            return self._void(lambda: api.listen(h, _int(args[1]) or 0))
        if name == "accept":
            return self._blocking(fd, lambda: Outcome(0, handle=api.accept(h)), "r")
        if name == "connect":
            return self._connect(fd)
        if name in ("read", "recv"):
            size = _int(args[2]) or 0
            flags = _int(args[3]) or 0 if name == "recv" else 0
            dontwait = bool(flags & symbols.VALUES["MSG_DONTWAIT"])
            return self._blocking(fd, lambda: _count(api.recv(h, size)), "r", dontwait)
        if name in ("write", "send"):
            flags = _int(args[3]) or 0 if name == "send" else 0
            return self._write(fd, _int(args[2]) or 0, bool(flags & symbols.VALUES["MSG_DONTWAIT"]))
        if name == "close":
            del self.fds[_int(args[0]) or 0]
            return self._void(lambda: api.close(h))
        if name == "shutdown":
            return self._void(lambda: api.shutdown(h, _int(args[1]) or 0))
        if name == "setsockopt":
            return self._void(lambda: api.setsockopt(h, _int(args[1]) or 0, _int(args[2]) or 0,
                                                     _option_value(args[3])))
        if name == "getsockopt":
            return self._attempt(lambda: Outcome(0, output=api.getsockopt(h, _int(args[1]) or 0,
                                                                          _int(args[2]) or 0)))
        if name == "fcntl":
            if _int(args[1]) == symbols.VALUES["F_GETFL"]:
                return Outcome(symbols.VALUES["O_RDWR"] | (symbols.VALUES["O_NONBLOCK"] if fd.nonblocking else 0))
            fd.nonblocking = bool((_int(args[2]) or 0) & symbols.VALUES["O_NONBLOCK"])
            return Outcome(0)
        if name == "ioctl":
            return self._attempt(lambda: Outcome(0, output=api.ioctl(h, _int(args[1]) or 0)))
        raise AssertionError(f"unchecked system call {name}")  # check() refuses these before running

    def _void(self, call: Callable[[], None]) -> Outcome:
        try:
            call()
        except OSError as exc:
            return Outcome(-1, exc.errno or errno.EIO)
        return Outcome(0)

    def _attempt(self, call: Callable[[], Outcome]) -> Outcome:
        try:
            return call()
        except OSError as exc:
            return Outcome(-1, exc.errno or errno.EIO)

    def _blocking(self, fd: _Fd, call: Callable[[], Outcome], interest: str,
                  dontwait: bool = False) -> Outcome | Pending:
        def attempt() -> Outcome | None:
            try:
                return call()
            except BlockingIOError:
                return None
            except OSError as exc:
                return Outcome(-1, exc.errno or errno.EIO)

        first = attempt()
        if first is not None:
            return first
        if fd.nonblocking or dontwait:
            return Outcome(-1, errno.EAGAIN)
        return Pending(attempt, interest, self.api.fileno(fd.handle))

    def _connect(self, fd: _Fd) -> Outcome | Pending:
        api = self.api
        try:
            api.connect(fd.handle)
            return Outcome(0)
        except OSError as exc:
            # Python raises BlockingIOError for EALREADY too: only EINPROGRESS means "started".
            if exc.errno != errno.EINPROGRESS:
                return Outcome(-1, exc.errno or errno.EIO)
        if fd.nonblocking:
            return Outcome(-1, errno.EINPROGRESS)
        def result() -> Outcome:
            api.connect_result(fd.handle)
            return Outcome(0)

        return self._blocking(fd, result, "w")

    def _write(self, fd: _Fd, size: int, dontwait: bool) -> Outcome | Pending:
        """Linux's blocking write returns once every byte is queued; a non-blocking one takes what fits."""
        api = self.api
        sent = [0]

        def attempt() -> Outcome | None:
            while sent[0] < size:
                try:
                    n = api.send(fd.handle, bytes(size - sent[0]))
                except BlockingIOError:
                    return None
                except OSError as exc:
                    return Outcome(sent[0]) if sent[0] else Outcome(-1, exc.errno or errno.EIO)
                sent[0] += n
            return Outcome(size)

        first = attempt()
        if first is not None:
            return first
        if fd.nonblocking or dontwait:
            return Outcome(sent[0]) if sent[0] else Outcome(-1, errno.EAGAIN)
        return Pending(attempt, "w", api.fileno(fd.handle))

    def finish(self, sc: Syscall, got: Outcome) -> Mismatch | None:
        """Compare with what the script expects; register a new socket under the script's number."""
        assert isinstance(sc.result, Int)
        expected = Outcome(sc.result.value, symbols.value_of(sc.errno) if sc.errno else None)
        if (got.value, got.err) != (expected.value, expected.err) and not (
            got.handle is not None and expected.err is None and expected.value >= 0
        ):
            return Mismatch("return", expected.text(sc.name), got.text(sc.name))
        if got.handle is not None:
            self.fds[expected.value] = _Fd(got.handle)
        if sc.name in ("getsockopt", "ioctl") and got.err is None:
            want = sc.args[3] if sc.name == "getsockopt" else sc.args[2]
            if not isinstance(want, Elided):
                wanted = _option_value(want)
                if wanted != got.output:
                    return Mismatch("value", f"{sc.name} value {_show(wanted)}", f"{sc.name} value {_show(got.output)}")
        return None


def _count(data: bytes) -> Outcome:
    return Outcome(len(data))


def _option_value(expr: Expr) -> OptionValue:
    if isinstance(expr, StructExpr):
        fields = dict(expr.fields)
        return (_int(fields["onoff"]) or 0, _int(fields["linger"]) or 0)
    if isinstance(expr, ListExpr) and expr.items:
        return _int(expr.items[0]) or 0
    return _int(expr) or 0


def _show(value: OptionValue | None) -> str:
    if isinstance(value, tuple):
        return f"{{onoff={value[0]}, linger={value[1]}}}"
    return str(value)
