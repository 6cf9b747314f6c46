"""Private network namespaces for the kernel-facing link.

Everything the TUN link does to the kernel happens inside a namespace this module creates, so the
host's own interfaces and routes are never touched. A namespace that outlives its process stays
mounted under /var/run/netns forever, so deletion is made hard to miss: the context manager deletes
it, an atexit hook deletes whatever is still alive, and `install_signal_handlers()` lets the runtime
make SIGINT/SIGTERM do the same. Deleting is idempotent, so all three may fire for one namespace.

Commands go through iproute2 (`ip netns ...`) with argument lists, never a shell.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "NETNS_PREFIX",
    "LinkUnavailable",
    "Netns",
    "NetnsBusy",
    "NetnsError",
    "cleanup_all",
    "install_signal_handlers",
    "live_namespaces",
    "netns_available",
    "reap_stale",
    "require_netns",
]

log = logging.getLogger(__name__)

NETNS_PREFIX = "tcps"
# Where `ip netns` keeps its bind mounts (iproute2's NETNS_RUN_DIR).
NETNS_RUN_DIR = "/var/run/netns"
# Internal `ip` calls are quick; a timeout turns a wedged iproute2 into an error instead of a hang.
IP_TIMEOUT = 10.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_AUTO_NAME_RE = re.compile(rf"^{NETNS_PREFIX}-(\d+)-(\d+)$")

# Linux capability bits (include/uapi/linux/capability.h).
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21

NEEDS_PRIVILEGE = (
    "tcpstack needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) to create a network namespace and a TUN device"
)


class LinkUnavailable(RuntimeError):
    """The kernel link cannot be used on this machine; `reason` says what is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NetnsError(RuntimeError):
    """An `ip netns` operation failed for a reason other than missing privileges."""


class NetnsBusy(NetnsError):
    """A namespace name that was asked for already exists and something is using it."""


def _effective_caps() -> int:
    try:
        # Binary: no codec lookup, which can fail after a process has dropped privileges.
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def netns_available() -> tuple[bool, str]:
    """Whether this process can create namespaces with `ip netns`; the reason if not."""
    if not sys.platform.startswith("linux"):
        return False, f"tcpstack's kernel link needs Linux (network namespaces and TUN), not {sys.platform}"
    if os.geteuid() != 0:
        caps = _effective_caps()
        needed = (1 << _CAP_NET_ADMIN) | (1 << _CAP_SYS_ADMIN)
        if caps & needed != needed:
            return False, NEEDS_PRIVILEGE
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is missing: install iproute2"
    if not os.path.exists("/proc/self/ns/net"):
        return False, "this kernel has no network namespace support (CONFIG_NET_NS)"
    return True, ""


def require_netns() -> None:
    ok, reason = netns_available()
    if not ok:
        raise LinkUnavailable(reason)


def _ip(args: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run `ip ARGS` in the current (root) namespace; return stdout, raise NetnsError on failure."""
    try:
        proc = subprocess.run(
            ["ip", *args], input=input, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise LinkUnavailable("the `ip` command (iproute2) is missing: install iproute2") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.strip() or f"exit status {proc.returncode}"
        if "Operation not permitted" in err or "Permission denied" in err:
            raise LinkUnavailable(f"{NEEDS_PRIVILEGE} (`ip {' '.join(args)}`: {err})")
        raise NetnsError(f"`ip {' '.join(args)}` failed: {err}")
    return proc.stdout


def _netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def _exists(name: str) -> bool:
    return os.path.exists(_netns_path(name))


def _pids_in(name: str) -> list[int]:
    out = _ip(["netns", "pids", name], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


def _links_in(name: str) -> list[str]:
    out = _ip(["-n", name, "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


# Namespaces created by this process and not yet deleted, in creation order. Plain dict, no lock:
# signal handlers run on the main thread between bytecodes and a lock held by the interrupted code
# would deadlock them; single dict operations are atomic under the GIL.
_live: dict[str, Netns] = {}
_counter = itertools.count(1)
_atexit_registered = False


def live_namespaces() -> list[str]:
    return list(_live)


def cleanup_all() -> None:
    """Delete every namespace this process created and still holds (newest first). Never raises."""
    for ns in reversed(list(_live.values())):
        try:
            ns.delete()
        except Exception as exc:  # cleanup must go on with the others
            log.warning("could not delete network namespace %s: %s", ns.name, exc)


def _register(ns: Netns) -> None:
    global _atexit_registered
    _live[ns.name] = ns
    if not _atexit_registered:
        atexit.register(cleanup_all)
        _atexit_registered = True


class Netns:
    """A private network namespace, deleted by `delete()`, the `with` exit, atexit, or a signal.

    `Netns()` picks a fresh name `tcps-<pid>-<n>`; `Netns("name")` uses that one and refuses
    (NetnsBusy) if it already exists with processes or interfaces in it. An existing but empty
    namespace of that name (a leftover) is adopted and deleted like one we made.
    """

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not _NAME_RE.match(name):
            raise ValueError(f"bad network namespace name {name!r}: use letters, digits, '_', '.', '-'")
        self._auto = name is None
        self.name: str = name if name is not None else self._next_auto_name()
        self._owner_pid: int | None = None  # set once created; only that process deletes
        self._deleted = False

    @staticmethod
    def _next_auto_name() -> str:
        return f"{NETNS_PREFIX}-{os.getpid()}-{next(_counter)}"

    @property
    def deleted(self) -> bool:
        return self._deleted

    @property
    def active(self) -> bool:
        return self._owner_pid is not None and not self._deleted

    def create(self) -> Netns:
        """Create the namespace and bring `lo` up. Returns self."""
        if self.active:
            return self
        if self._deleted:
            raise NetnsError(f"network namespace {self.name} was already deleted; make a new Netns")
        require_netns()
        if self._auto:
            # A stale namespace from an earlier process with our pid may hold the name; skip past it.
            while _exists(self.name):
                self.name = self._next_auto_name()
        elif _exists(self.name):
            pids = _pids_in(self.name)
            links = [n for n in _links_in(self.name) if n != "lo"]
            if pids or links:
                raise NetnsBusy(
                    f"network namespace {self.name} already exists and is in use "
                    f"(processes: {pids or 'none'}, interfaces: {links or 'none'}); "
                    "pick another name or omit it to get a fresh one"
                )
            log.warning("adopting idle leftover network namespace %s; it will be deleted", self.name)
        # Registered before it exists, so a signal that lands mid-create still cleans it up.
        self._owner_pid = os.getpid()
        _register(self)
        try:
            if not _exists(self.name):
                _ip(["netns", "add", self.name])
            # A new namespace's loopback is down; kernel-side tools (and the stack's own tests)
            # expect 127.0.0.1 to work in there.
            _ip(["-n", self.name, "link", "set", "dev", "lo", "up"])
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        """Remove the namespace; safe to call twice, from atexit, and from a signal handler.

        Processes still running inside it are killed first: `ip netns del` only unmounts the name,
        and a namespace lives on (with its interfaces) while any process is in it.
        """
        if self._owner_pid is None or self._deleted:
            return
        if self._owner_pid != os.getpid():
            # A forked child inherited our registry; the namespace belongs to the parent.
            _live.pop(self.name, None)
            return
        if _exists(self.name):
            me = os.getpid()
            for pid in _pids_in(self.name):
                if pid != me:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            # Failure is judged by whether the name is gone afterwards: a reentrant delete (signal
            # during delete) may have removed it in between, which makes this `ip` call fail.
            _ip(["netns", "del", self.name], check=False)
            if _exists(self.name):
                raise NetnsError(f"could not delete network namespace {self.name}")
        self._deleted = True
        _live.pop(self.name, None)

    close = delete

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    def __repr__(self) -> str:
        state = "active" if self.active else ("deleted" if self._deleted else "new")
        return f"Netns({self.name!r}, {state})"

    # -- running things inside ------------------------------------------------------------------

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """The argument list that runs `argv` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run(argv, **kwargs)` inside the namespace (no shell)."""
        self._require_active()
        return subprocess.run(self.exec_argv(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen(argv, **kwargs)` inside the namespace; delete() kills it if still running."""
        self._require_active()
        return subprocess.Popen(self.exec_argv(argv), **kwargs)

    def ip(self, *args: str, input: str | None = None) -> str:
        """Run `ip -n NAME ARGS` (iproute2 switches namespace itself: one process, no exec hop)."""
        self._require_active()
        return _ip(["-n", self.name, *args], input=input)

    def ip_batch(self, commands: Sequence[str]) -> None:
        """Run several `ip` commands in one process (`ip -n NAME -batch -`); stops at the first error."""
        self._require_active()
        _ip(["-n", self.name, "-batch", "-"], input="".join(c + "\n" for c in commands))

    def pids(self) -> list[int]:
        return _pids_in(self.name) if self.active else []

    def links(self) -> list[str]:
        return _links_in(self.name) if self.active else []

    def _require_active(self) -> None:
        if not self.active:
            raise NetnsError(f"network namespace {self.name} is not active (create() it first)")


# -- signals --------------------------------------------------------------------------------------

_previous_handlers: dict[int, Any] = {}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    cleanup_all()
    prev = _previous_handlers.get(signum)
    if callable(prev):
        # e.g. Python's default SIGINT handler, which raises KeyboardInterrupt.
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    # The previous disposition was the default (terminate): re-deliver with it so the exit status
    # still says "killed by signal N" to whoever waits on us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> bool:
    """Make these signals delete live namespaces first, then behave as before. Idempotent.

    Returns False (and does nothing) off the main thread, where Python cannot install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in signals:
        if signal.getsignal(signum) is _on_signal:
            continue
        # Someone may have replaced ours since; whatever is there now is what we chain to.
        _previous_handlers[signum] = signal.signal(signum, _on_signal)
    return True


def uninstall_signal_handlers() -> None:
    for signum, prev in list(_previous_handlers.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        del _previous_handlers[signum]


# -- leftovers ------------------------------------------------------------------------------------


def _auto_named() -> Iterator[tuple[str, int]]:
    try:
        entries = os.listdir(NETNS_RUN_DIR)
    except OSError:
        return
    for entry in entries:
        m = _AUTO_NAME_RE.match(entry)
        if m:
            yield entry, int(m.group(1))


def reap_stale() -> list[str]:
    """Delete `tcps-<pid>-<n>` namespaces whose creating process is gone (e.g. it was SIGKILLed).

    Only names in this module's own pattern are considered, and only when that pid no longer
    exists, so namespaces of running processes (other test workers included) are left alone.
    """
    reaped = []
    for name, pid in _auto_named():
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # owner alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # exists, just not ours to signal
        for victim in _pids_in(name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
        _ip(["netns", "del", name], check=False)
        if not _exists(name):
            reaped.append(name)
    return reaped
