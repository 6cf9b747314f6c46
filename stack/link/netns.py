"""Private network namespaces for the kernel-facing link.

Everything the TUN link does to the kernel happens inside a network namespace, so the host's own
interfaces and routes are never touched. tcpstack deletes only namespaces it created itself:

* A namespace it creates gets an owner record, `/run/tcpstack/netns/<name>.json`, holding the
  creating process (pid and start time, so a reused pid is not taken for the creator) and the
  namespace's inode (so a namespace someone else later made under the same name is not taken for
  ours). The record is written before `ip netns add` and removed after `ip netns del`.
* A namespace that already exists and is not tcpstack's is *borrowed*: used as it is (the TUN device
  is added to it and vanishes with the fd), never deleted, and its processes are never signalled.
* `reap_stale()` deletes recorded namespaces whose creator is gone (e.g. it was SIGKILLed); the first
  `create()` of every process calls it, and `tcpstack cleanup` calls it on request.

A namespace that outlives its process stays mounted under /var/run/netns forever, so deletion is
made hard to miss: the context manager deletes it, an atexit hook deletes whatever is still alive,
and `install_signal_handlers()` lets a program make SIGINT/SIGTERM do the same. Deleting is
idempotent, so all three may fire for one namespace.

Commands go through iproute2 (`ip netns ...`) with argument lists, never a shell.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "NETNS_PREFIX",
    "LinkUnavailable",
    "Netns",
    "NetnsBusy",
    "NetnsError",
    "StaleNetns",
    "cleanup_all",
    "install_signal_handlers",
    "live_namespaces",
    "netns_available",
    "reap_stale",
    "require_netns",
    "stale_namespaces",
]

log = logging.getLogger(__name__)

NETNS_PREFIX = "tcps"
# Where `ip netns` keeps its bind mounts (iproute2's NETNS_RUN_DIR).
NETNS_RUN_DIR = "/var/run/netns"
# Owner records of the namespaces tcpstack created (root's, like the control sockets beside them).
RECORD_DIR = "/run/tcpstack/netns"
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


# -- owner records ---------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if gone.

    With the pid it names one process for good: a pid reused later has another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _record_path(name: str) -> str:
    return os.path.join(RECORD_DIR, f"{name}.json")


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(_netns_path(name)).st_ino
    except OSError:
        return None


def _write_record(name: str, inode: int | None) -> None:
    os.makedirs(RECORD_DIR, mode=0o700, exist_ok=True)
    pid = os.getpid()
    record = {"pid": pid, "start": _start_time(pid), "inode": inode}
    tmp = f"{_record_path(name)}.{pid}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        json.dump(record, f)
    os.replace(tmp, _record_path(name))  # atomic: a reader sees the old record or the new one


def _read_record(name: str) -> dict[str, Any] | None:
    try:
        with open(_record_path(name), encoding="ascii") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _remove_record(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_record_path(name))


def _creator_alive(record: dict[str, Any]) -> bool:
    pid = record["pid"]
    start = _start_time(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a process we may not look at: not ours to judge
        return True  # alive, but its /proc entry unreadable: be safe
    return bool(record.get("start") in (None, start))


def _is_ours(name: str, record: dict[str, Any]) -> bool:
    """Whether namespace `name` is the one the record describes (not a later one of the same name)."""
    inode = record.get("inode")
    if inode is None:
        # The creator died between writing the record and `ip netns add` finishing: trust only a
        # name in tcpstack's own pattern.
        return bool(_AUTO_NAME_RE.match(name))
    return bool(_netns_inode(name) == inode)


class Netns:
    """A network namespace for the kernel side of a link.

    `Netns()` picks a fresh name `tcps-<pid>-<n>`, creates it and deletes it later. `Netns("name")`
    creates that one if it does not exist (and deletes it later); if it exists and is not
    tcpstack's, it is borrowed: used as it is, never deleted, its processes never touched. A name
    another live tcpstack created is refused (NetnsBusy); one whose creator is gone is reaped and
    made afresh.
    """

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not _NAME_RE.match(name):
            raise ValueError(f"bad network namespace name {name!r}: use letters, digits, '_', '.', '-'")
        self._auto = name is None
        self.name: str = name if name is not None else self._next_auto_name()
        self._owner_pid: int | None = None  # set once created or borrowed; only that process deletes
        self._deleted = False
        self.borrowed = False  # it existed before and is not ours: never deleted

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
        """Create (or borrow) the namespace; a namespace we create gets `lo` up. Returns self."""
        if self.active:
            return self
        if self._deleted:
            raise NetnsError(f"network namespace {self.name} was already deleted; make a new Netns")
        require_netns()
        _reap_once()
        if self._auto:
            # A namespace of that name may exist (an earlier process with our pid): skip past it.
            while _exists(self.name):
                self.name = self._next_auto_name()
        elif _exists(self.name):
            record = _read_record(self.name)
            if record is not None and _is_ours(self.name, record):
                if _creator_alive(record):
                    raise NetnsBusy(
                        f"network namespace {self.name} is in use by the tcpstack of pid {record['pid']}; "
                        "stop it first, or pick another name (or omit it to get a fresh one)"
                    )
                _reap(self.name, record)  # a stale one of ours: made afresh below
            if _exists(self.name):
                # Someone else's: use it as it is. Only our TUN device goes in, and it leaves with the
                # fd; nothing else in there is changed (not even `lo`), nothing is deleted.
                self.borrowed = True
                self._owner_pid = os.getpid()
                return self
        # Registered (and recorded) before it exists, so a signal or SIGKILL mid-create is covered.
        self._owner_pid = os.getpid()
        _register(self)
        try:
            _write_record(self.name, None)
            _ip(["netns", "add", self.name])
            _write_record(self.name, _netns_inode(self.name))
            # A new namespace's loopback is down; kernel-side tools (and the stack's own tests)
            # expect 127.0.0.1 to work in there.
            _ip(["-n", self.name, "link", "set", "dev", "lo", "up"])
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        """Remove the namespace if we created it; safe to call twice, from atexit, and from a
        signal handler. A borrowed namespace is only let go of (its TUN device left with the fd).

        Processes still running inside one we created are killed first: `ip netns del` only
        unmounts the name, and a namespace lives on (with its interfaces) while any process is in it.
        """
        if self._owner_pid is None or self._deleted:
            return
        if self._owner_pid != os.getpid():
            # A forked child inherited our registry; the namespace belongs to the parent.
            _live.pop(self.name, None)
            return
        if self.borrowed:
            self._deleted = True
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
        _remove_record(self.name)
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

    def sysctl(self, settings: dict[str, str]) -> None:
        """Write kernel settings of this namespace (its own net.* tree), e.g. a device's IPv6 knobs."""
        self._require_active()
        result = self.run(["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in settings.items())],
                          capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            raise NetnsError(f"sysctl in namespace {self.name} failed: {result.stderr.strip()}")

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


@dataclass(frozen=True)
class StaleNetns:
    """A namespace tcpstack created whose creator is gone (`exists` False: only the record is left)."""

    name: str
    pid: int
    exists: bool


def stale_namespaces() -> list[StaleNetns]:
    """The recorded namespaces whose creating process is gone, by name. Changes nothing."""
    try:
        entries = sorted(os.listdir(RECORD_DIR))
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.endswith(".json"):
            continue
        name = entry[: -len(".json")]
        record = _read_record(name)
        if record is None or not _NAME_RE.match(name) or _creator_alive(record):
            continue
        found.append(StaleNetns(name, record["pid"], _exists(name) and _is_ours(name, record)))
    return found


def _reap(name: str, record: dict[str, Any]) -> bool:
    """Delete a stale namespace of ours (killing what its creator left running in it) and its record."""
    if _exists(name) and _is_ours(name, record):
        for victim in _pids_in(name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
        _ip(["netns", "del", name], check=False)
        if _exists(name):
            return False
    _remove_record(name)
    return True


def reap_stale() -> list[str]:
    """Delete the namespaces tcpstack created whose creator is gone (e.g. it was SIGKILLed); returns
    their names. Namespaces without a record, or of a live creator, are never touched."""
    reaped = []
    for stale in stale_namespaces():
        record = _read_record(stale.name)
        if record is not None and _reap(stale.name, record) and stale.exists:
            reaped.append(stale.name)
    return reaped


_reaped_once = False


def _reap_once() -> None:
    global _reaped_once
    if _reaped_once:
        return
    _reaped_once = True
    try:
        reaped = reap_stale()
    except Exception as exc:  # leftovers must never stop a start
        log.warning("could not remove stale network namespaces: %s", exc)
        return
    if reaped:
        log.warning("removed stale network namespace(s) of dead tcpstack processes: %s", ", ".join(reaped))
