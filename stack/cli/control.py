"""The control channel of a running `tcpstack serve`: a Unix socket speaking one JSON line each way.

Where: `/run/tcpstack/<netns>.sock` by default (directory mode 0700), or any path given with
`--control PATH`. The socket file is mode 0600: the stack's tables are root's business, like the
kernel's `ss -p`. A client connects, writes ONE request line, reads ONE response line, and the
server closes the connection.

Requests (a JSON object with "cmd")::

    {"cmd": "ss"}     -> {"ok": true, "result": {"rows": [ROW, ...]}}
                         ROW is `SocketRow.to_json()` (stack/observe/snapshot.py): state, tcp_state,
                         recv_q, send_q, local, peer, local_addr, local_port, peer_addr, peer_port,
                         timer ({"name", "expires_ms", "retrans"} or null), orphan, sk, shutdown,
                         info (ss -i's numbers, or null). Every socket is returned; filtering and
                         formatting happen in the client.
    {"cmd": "stats"}  -> {"ok": true, "result": {"stats": {NAME: VALUE, ...}}}
    {"cmd": "info"}   -> {"ok": true, "result": {"pid", "netns", "addr", "peer" (the ready line's
                          pair), "addr4", "addr6" (the stack's address of each family; addr6 null
                          without IPv6), "control",
                          "apps": [[APP, PORT], ...], "msl", "fin_timeout", "rfc1337", "mtu", "uptime",
                          "started", "config": {KNOB: VALUE, ...} (every Config knob, stack/cli/knobs.py)}}
                          (started: wall time; with pid and netns it tells `stats` whose history it holds)

Anything else -> {"ok": false, "error": "one line"}. Requests are limited to 64 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import inspect
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

CONTROL_DIR = "/run/tcpstack"
REQUEST_LIMIT = 64 * 1024
CLIENT_TIMEOUT = 5.0
PROBE_TIMEOUT = 1.0

_NETNS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # the names stack.link.netns accepts

Handlers = dict[str, Callable[[], Any]]  # cmd -> what answers it


class ControlError(Exception):
    """Talking to a control socket failed; the message is one line for the user."""


class NotRunning(ControlError):
    """Nothing answers at that path (no file, or a stale one nobody listens on)."""


def default_path(netns: str) -> str:
    return os.path.join(CONTROL_DIR, f"{netns}.sock")


def netns_name(text: str) -> str:
    """argparse type: a namespace name `ip netns` and stack.link.netns accept."""
    if not _NETNS_NAME_RE.match(text):
        import argparse

        raise argparse.ArgumentTypeError(f"bad network namespace name {text!r}: use letters, digits, '_', '.', '-'")
    return text


# ------------------------------------------------------------------------------------------ client
def request(path: str, cmd: str, *, timeout: float = CLIENT_TIMEOUT) -> Any:
    """Send `{"cmd": cmd}` to the stack at `path` and return its `result`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"no tcpstack answers at {path} ({exc.strerror})") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: the control socket is root's (run as root)") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED, errno.ENOENT):
                raise NotRunning(f"no tcpstack answers at {path} ({exc.strerror})") from None
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"the tcpstack at {path} did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"the tcpstack at {path} sent a malformed reply") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the tcpstack at {path} sent a malformed reply")
    if not reply.get("ok"):
        raise ControlError(f"the tcpstack at {path} refused {cmd!r}: {reply.get('error', 'unknown error')}")
    return reply.get("result")


def probe(path: str) -> dict[str, Any] | None:
    """The `info` of the stack answering at `path`, or None if nothing does."""
    try:
        info = request(path, "info", timeout=PROBE_TIMEOUT)
    except ControlError:
        return None
    return info if isinstance(info, dict) else {}


def running_stacks() -> list[tuple[str, dict[str, Any]]]:
    """(path, info) of every stack answering in the default directory, by path."""
    try:
        names = sorted(os.listdir(CONTROL_DIR))
    except PermissionError:
        raise ControlError(f"cannot read {CONTROL_DIR}: the control sockets are root's (run as root)") from None
    except OSError:
        return []
    found = []
    for name in names:
        if not name.endswith(".sock"):
            continue
        path = os.path.join(CONTROL_DIR, name)
        info = probe(path)
        if info is not None:
            found.append((path, info))
    return found


STALE_AGE = 2.0  # seconds: a socket younger than this may be one a starting serve has bound but not yet listens on


def _refused(path: str) -> bool:
    """True if `path` is a socket nothing listens on (connecting is refused)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(PROBE_TIMEOUT)
        sock.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        sock.close()
    return False


def stale_sockets(directory: str = CONTROL_DIR) -> list[str]:
    """Control sockets in `directory` that nothing listens on any more (their serve died), by path."""
    try:
        names = sorted(os.listdir(directory))
    except PermissionError:
        raise ControlError(f"cannot read {directory}: the control sockets are root's (run as root)") from None
    except OSError:
        return []
    stale = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if name.endswith(".sock") and stat.S_ISSOCK(st.st_mode) and time.time() - st.st_mtime > STALE_AGE \
                and _refused(path):
            stale.append(path)
    return stale


def remove_stale_socket(path: str) -> bool:
    """Unlink `path` if it is still a socket nobody listens on; whether it was removed."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode) and _refused(path):
            os.unlink(path)
            remove_history(path)
            return True
    return False


def remove_history(path: str) -> None:
    """`tcpstack stats` keeps its history beside the socket (stack.observe.nstat): it was of that
    run only, and goes with it."""
    for history in glob.glob(glob.escape(path) + ".nstat.u*"):
        with contextlib.suppress(OSError):
            os.unlink(history)


def resolve(netns: str | None, control: str | None) -> str:
    """The control socket `ss`/`stats` should talk to: --control, --netns, or the only one running."""
    if control is not None:
        return control
    if netns is not None:
        path = default_path(netns)
        try:
            os.stat(path)
        except PermissionError:
            raise ControlError(f"cannot read {path}: the control sockets are root's (run as root)") from None
        except OSError:
            raise NotRunning(f"no tcpstack is serving namespace {netns} (no control socket {path})") from None
        return path
    running = running_stacks()
    if not running:
        raise NotRunning(f"no tcpstack is running (no live control socket in {CONTROL_DIR}); "
                         "start one with `tcpstack serve`, or give --control PATH")
    if len(running) > 1:
        names = ", ".join(str(info.get("netns", path)) for path, info in running)
        raise ControlError(f"{len(running)} tcpstacks are running ({names}): pick one with --netns NAME")
    return running[0][0]


# ------------------------------------------------------------------------------------------ server
class ControlServer:
    """The serve side: binds the socket (refusing to steal a live one), answers requests, and on
    close removes the socket file only if it is still the one it bound."""

    def __init__(self, path: str, handlers: Handlers) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we bound

    @staticmethod
    def check_free(path: str) -> None:
        """Raise ControlError if a stack already answers at `path` (before anything is started)."""
        info = probe(path)
        if info is not None:
            raise ControlError(_busy_message(path, info))

    async def start(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.abspath(directory) == CONTROL_DIR:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)  # ours: make sure a pre-existing one is not wider
        sock = self._bind()
        try:
            self._server = await asyncio.start_unix_server(self._serve_client, sock=sock, limit=REQUEST_LIMIT)
        except BaseException:
            sock.close()
            self._unlink()
            raise

    def _bind(self) -> socket.socket:
        for _attempt in range(2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # umask instead of chmod after bind: the file never exists with wider permissions.
            old_umask = os.umask(0o177)
            try:
                sock.bind(self.path)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise ControlError(f"cannot create control socket {self.path}: {exc.strerror or exc}") from None
                info = probe(self.path)
                if info is not None:
                    raise ControlError(_busy_message(self.path, info)) from None
                # A stale socket file of a stack that died without cleaning up: take its place.
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                        os.unlink(self.path)
                    else:
                        raise ControlError(f"{self.path} exists and is not a socket") from None
                continue
            finally:
                os.umask(old_umask)
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
            sock.listen(16)
            sock.setblocking(False)
            return sock
        raise ControlError(f"cannot create control socket {self.path}: it keeps reappearing")

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
                reply = await self._answer(line)
            except (ValueError, asyncio.LimitOverrunError):
                reply = {"ok": False, "error": f"request longer than {REQUEST_LIMIT} bytes"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass  # a client that went away or never spoke: nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not a JSON line"}
        cmd = req.get("cmd") if isinstance(req, dict) else None
        if not isinstance(cmd, str):
            return {"ok": False, "error": 'request needs a "cmd" string'}
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r} (known: {', '.join(sorted(self.handlers))})"}
        try:
            result = handler()
            if inspect.isawaitable(result):  # a stack of several workers asks each of them
                result = await result
            return {"ok": True, "result": result}
        except Exception as exc:  # a bug in a handler must not take the control channel down
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._unlink()

    def _unlink(self) -> None:
        """Remove the socket file if it is still the one we bound (never another stack's)."""
        if self._identity is None:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            remove_history(self.path)
        self._identity = None


def _busy_message(path: str, info: dict[str, Any]) -> str:
    who = f"pid {info['pid']}" if "pid" in info else "another process"
    where = f"namespace {info['netns']}" if "netns" in info else "a stack"
    return f"a tcpstack is already serving {where} ({who}, control socket {path}); stop it first or pick another name"
