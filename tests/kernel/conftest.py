"""Fixtures for tests that talk to the real kernel through a TUN device in a private namespace.

Everything here skips (with the exact reason) where the kernel link cannot work: no root, no
/dev/net/tun, no iproute2.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack.link.netns import install_signal_handlers, reap_stale
from stack.link.tun import TunLink, kernel_link_available
from tests.kernel.peer import FAMILIES, Fam

KERNEL_LINK_OK, KERNEL_LINK_REASON = kernel_link_available()

# Module-level marker: `pytestmark = [requires_kernel_link]` or `@requires_kernel_link`.
requires_kernel_link = pytest.mark.skipif(not KERNEL_LINK_OK, reason=KERNEL_LINK_REASON or "n/a")


@pytest.fixture(scope="session")
def _kernel_link_session() -> Iterator[None]:
    if not KERNEL_LINK_OK:
        pytest.skip(KERNEL_LINK_REASON)
    # Namespaces left by an earlier run that was SIGKILLed (only dead owners' `tcps-<pid>-<n>`).
    reap_stale()
    # A SIGTERM to pytest would otherwise kill it before any fixture finaliser runs.
    install_signal_handlers()
    yield


@pytest.fixture
def netns_tun(_kernel_link_session: None) -> Iterator[TunLink]:
    """An open TunLink in a fresh namespace; the namespace is deleted even if the test fails."""
    link = TunLink()
    try:
        link.open()
        yield link
    finally:
        link.close()


@pytest.fixture(params=FAMILIES, ids=lambda fam: fam.name)
def fam(request: pytest.FixtureRequest) -> Fam:
    """Run the test once over IPv4 and once over IPv6 (the same TUN carries both)."""
    value: Fam = request.param
    return value


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def stack_workers(request: pytest.FixtureRequest, _kernel_link_session: None) -> Iterator[int]:
    """A test that runs its coroutine with tests.kernel.peer.run_test runs twice: the stack in this
    process, then inside one worker of a pool of two on a multi-queue TUN device, where no segment
    may be misrouted (opt in with `pytest.mark.usefixtures("stack_workers")`)."""
    from tests.kernel import peer

    peer.WORKERS[0] = request.param
    try:
        yield request.param
    finally:
        peer.WORKERS[0] = 1
