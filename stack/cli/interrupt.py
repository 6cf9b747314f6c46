"""Ctrl-C for every `tcpstack` command: the first SIGINT stops the command within a second and
cleans up, the second stops it at once.

The first SIGINT (or SIGTERM) cancels the command's main asyncio task, so its `finally` blocks and
`async with` exits run as on any other error: the stack resets its connections, the namespace and
the processes in it go, files are closed. Code that runs outside the event loop gets a
KeyboardInterrupt instead, with the same effect through its `with` blocks. `main()` then prints
one line and exits 128 + the signal number (130 for SIGINT).

A second signal, or a cleanup still running after `CLEANUP_LIMIT` seconds, ends the process at
once: what namespaces this process created are deleted on the spot (which also ends the load
generators running in them), and the process exits without further unwinding.

Children are started in a process group of their own (stack.bench.loadgen.CHILD_GROUP), so the terminal's Ctrl-C
reaches only tcpstack, which stops them itself: no half-written tracebacks from children.

The handler is installed with `signal.signal`, not `loop.add_signal_handler`, so it runs even while
the event loop is blocked in a system call or in synchronous code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

from stack.cli.common import CliError, UsageError
from stack.link.netns import cleanup_all

T = TypeVar("T")

CLEANUP_LIMIT = 3.0  # seconds the cleanup after the first signal may take before we stop at once
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The command was stopped by `signum` (after its cleanup ran)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.signum = 0  # the first signal received, 0 if none
        self.command = "tcpstack"
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.previous: dict[int, Any] = {}
        self.watchdog: threading.Timer | None = None


_state = _State()


def _hard_stop(signum: int) -> None:
    """Stop now: delete our namespaces (ending whatever runs in them), one line, exit."""
    try:
        cleanup_all()
    finally:
        try:
            os.write(2, f"{_state.command}: interrupted\n".encode())
        finally:
            os._exit(128 + signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.signum:
        _hard_stop(_state.signum)
    _state.signum = signum
    # Cleanup is bounded: past the limit, stop as a second Ctrl-C would.
    _state.watchdog = threading.Timer(CLEANUP_LIMIT, lambda: os.kill(os.getpid(), signum))
    _state.watchdog.daemon = True
    _state.watchdog.start()
    task, loop = _state.task, _state.loop
    if task is not None and loop is not None and not task.done():
        task.cancel()
        loop.call_soon_threadsafe(lambda: None)  # wake the loop if it sleeps in select()
        return
    raise KeyboardInterrupt


def interrupted() -> int:
    """The signal that stopped the command so far (0: none)."""
    return _state.signum


def install(command: str) -> None:
    """Give this process the Ctrl-C contract (main thread only; `command` names it in messages)."""
    _state.command = command
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        if signal.getsignal(signum) is not _on_signal:
            _state.previous[signum] = signal.signal(signum, _on_signal)


def uninstall() -> None:
    for signum, previous in list(_state.previous.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous)
        del _state.previous[signum]
    if _state.watchdog is not None:
        _state.watchdog.cancel()
    _state.__init__()  # type: ignore[misc]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`, with the first signal cancelling it; raises Interrupted if it was stopped."""

    async def main() -> T:
        _state.task = asyncio.current_task()
        _state.loop = asyncio.get_running_loop()
        try:
            return await coro
        finally:
            _state.task = _state.loop = None

    if _state.signum:  # stopped between two asyncio.run calls of one command
        coro.close()
        raise Interrupted(_state.signum)
    try:
        return asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        if _state.signum:
            raise Interrupted(_state.signum) from None
        raise


def report(exc: Interrupted) -> int:
    """The one line after a signal stopped the command; returns its exit status."""
    if _state.watchdog is not None:
        _state.watchdog.cancel()
    print(f"{_state.command}: interrupted", file=sys.stderr, flush=True)
    return exc.exit_code


def guarded(command: str, body: Callable[[], int | None]) -> int:
    """Run `body` (a whole command or example) under the Ctrl-C contract; its exit status.

    A CliError becomes its one line (`COMMAND: error: ...` and 2 for a UsageError). An error that
    surfaces while a signal's cleanup runs is part of the interruption, not news."""
    install(command)
    try:
        return int(body() or 0)
    except CliError as exc:
        if _state.signum:
            return report(Interrupted(_state.signum))
        usage = isinstance(exc, UsageError)
        print(f"{command}: {'error: ' if usage else ''}{exc}", file=sys.stderr)
        return exc.code
    except Interrupted as exc:
        return report(exc)
    except (Exception, KeyboardInterrupt, asyncio.CancelledError):
        if not _state.signum:
            raise
        return report(Interrupted(_state.signum))
    finally:
        uninstall()
