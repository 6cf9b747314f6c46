"""Running scripts on targets: one run, or many (kernel runs side by side, each in its own namespace).

A run is skipped, with the reason, when the script holds a construct this runner does not
implement, when the stack target cannot follow one of its sysctls, or when this machine cannot
host the kernel target (no root, no TUN). A stack run that fails where docs/linux-differences.md
lists the difference is marked intended (`RunResult.intended`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from stack.drill import differences
from stack.drill.differences import Difference
from stack.drill.runner import Failure, Runner, RunResult, tolerance_of
from stack.drill.script import Script
from stack.drill.stack_target import StackTarget
from stack.tcp.config import Config

TARGETS = ("kernel", "stack")
KERNEL_JOBS = 8  # kernel runs mostly wait on timers: several share the CPU without disturbing timing

ProbeFactory = Callable[[str], Callable[[], "str | None"]]


@dataclass
class Options:
    tolerance_usecs: int | None = None
    config: Config | None = None  # the stack target's base configuration
    probe_factory: ProbeFactory | None = None  # kernel states for ladders
    differences: list[Difference] | None = None


def _skip(script: Script, target: str, reason: str) -> RunResult:
    return RunResult(script.path, target, "SKIP", skip_reason=reason)


def run_one(script: Script, target: str, options: Options, cancel: threading.Event | None = None) -> RunResult:
    """Run `script` on "kernel" or "stack" (never raises for what the run finds)."""
    if script.unsupported:
        first = script.unsupported[0]
        return _skip(script, target, f"unsupported {first.what} (line {first.line})")
    tolerance = tolerance_of(script, options.tolerance_usecs)
    if target == "stack":
        base = options.config or Config()
        reason = StackTarget.unsupported(script, base)
        if reason is not None:
            return _skip(script, target, f"unsupported {reason}")
        result = Runner(script, StackTarget(base), tolerance).run()
        result.intended = _intended(result, options)
        return result
    from stack.drill.kernel_target import KernelTarget
    from stack.link.tun import kernel_link_available

    ok, why = kernel_link_available()
    if not ok:
        return _skip(script, target, f"no kernel target here: {why}")
    try:
        kernel = KernelTarget(options.probe_factory, cancel)
    except Exception as exc:  # a namespace or TUN device that cannot be made: this run fails, others go on
        return RunResult(script.path, target, "FAIL",
                         Failure(0, "setup", "a kernel target", f"{type(exc).__name__}: {exc}"))
    return Runner(script, kernel, tolerance).run()


def _intended(result: RunResult, options: Options) -> Difference | None:
    if result.status != "FAIL" or result.failure is None:
        return None
    listed = options.differences if options.differences is not None else differences.load()
    return differences.find(listed, result.script, result.failure.line, result.failure.field)


def run_all(scripts: Sequence[Script], targets: Sequence[str], options: Options,
            stop: Callable[[RunResult], bool] | None = None) -> Iterator[RunResult]:
    """Every (script, target) run, yielded in script order then target order. Kernel runs start
    side by side in threads; stack runs run in this thread. Once `stop(result)` is true, runs
    not yet started are dropped and those in progress stopped."""
    halted = threading.Event()

    def kernel_job(script: Script) -> RunResult | None:
        if halted.is_set():
            return None
        return run_one(script, "kernel", options, halted)

    # A thread waking for a timed event waits for the GIL up to the switch interval (5 ms by default):
    # shorten it while kernel runs share the process, so their timing stays within a millisecond.
    interval = sys.getswitchinterval()
    if "kernel" in targets:
        sys.setswitchinterval(0.0002)
    with ThreadPoolExecutor(max_workers=KERNEL_JOBS) as pool:
        futures: dict[int, Future[RunResult | None]] = {}
        if "kernel" in targets:
            futures = {i: pool.submit(kernel_job, s) for i, s in enumerate(scripts)}
        try:
            for i, script in enumerate(scripts):
                for target in targets:
                    result = futures[i].result() if target == "kernel" else run_one(script, "stack", options)
                    if result is None:
                        return
                    yield result
                    if stop is not None and stop(result):
                        halted.set()
                        return
        finally:
            halted.set()
            for future in futures.values():
                future.cancel()
            sys.setswitchinterval(interval)
