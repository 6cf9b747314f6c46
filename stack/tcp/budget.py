"""Memory budgets: per connection (Linux `sk_rcvbuf`) and per host (Linux `tcp_mem`).

A peer decides how much of our memory its segments occupy: out-of-order data is kept until the
gap fills, and one byte at every other sequence number costs a block each. So, as Linux does:

* a connection's receive memory (unread data plus the out-of-order queue, with its bookkeeping
  counted: `ReceiveQueue.mem`, Linux's truesize) may not exceed `Config.recv_memory`. A segment
  that would pass it first prunes the out-of-order queue from the highest sequence numbers down,
  never below the segment itself (tcp_prune_queue, tcp_prune_ofo_queue: `PruneCalled`,
  `OfoPruned`); if that makes no room, the segment is dropped (`TCPOFODrop` out of order,
  `TCPRcvQDrop` in order);
* the host charges every byte queued on any connection, both ways, to one `MemoryPool` with the
  three thresholds of `Config.memory_limits` (Linux `tcp_mem`: low, pressure, high). Above
  `pressure` the host is under memory pressure (`TCPMemoryPressures` counts the entries) until it
  falls below `low`; meanwhile receive windows stop growing beyond 4 segments. Above `high` no
  connection may queue more than `RMEM_MIN` received bytes or `SNDBUF_MIN` bytes to send, and an
  orphaned connection that still holds data to send is reset when closed (`TCPAbortOnMemory`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp.buffers import SNDBUF_MIN
from stack.tcp.counters import Counters
from stack.tcp.ofo import BLOCK_COST, CHUNK_COST

if TYPE_CHECKING:
    from stack.tcp.context import Context
    from stack.tcp.tcb import Tcb

RMEM_MIN = 4096  # what a connection may always hold received, memory short or not (Linux tcp_rmem[0])
PRESSURE_WINDOW_SEGMENTS = 4  # the window's cap under memory pressure, in MSS (Linux: 4 * advmss)


class MemoryPool:
    """Bytes queued by every connection of a host, against the `tcp_mem` thresholds."""

    __slots__ = ("allocated", "counters", "high", "low", "pressure", "under_pressure")

    def __init__(self, limits: tuple[int, int, int], counters: Counters) -> None:
        self.low, self.pressure, self.high = limits
        self.counters = counters
        self.allocated = 0
        self.under_pressure = False

    def charge(self, n: int) -> None:
        """`n` bytes were queued (negative: freed); enter or leave memory pressure on the way."""
        self.allocated += n
        if self.under_pressure:
            if self.allocated < self.low:
                self.under_pressure = False
        elif self.allocated > self.pressure:
            self.under_pressure = True
            self.counters.inc("TCPMemoryPressures")

    @property
    def exhausted(self) -> bool:
        """Over the hard limit: nothing more may be queued beyond each connection's minimum."""
        return self.allocated > self.high


def recv_memory(c: Tcb) -> int:
    """The connection's receive memory limit (Linux sk_rcvbuf)."""
    cfg = c.cfg
    return cfg.recv_memory if cfg.recv_memory is not None else 2 * cfg.recv_buffer


def _can_ingest(c: Tcb, cost: int) -> bool:
    recv = c.recv
    mem = recv.mem
    if mem + cost > recv_memory(c):
        return False
    pool = recv.pool
    return pool is None or not pool.exhausted or mem + cost <= RMEM_MIN


def _prune(c: Tcb, floor: int, cost: int, ctx: Context) -> bool:
    """Make room for `cost` bytes by dropping out-of-order blocks from the top, none starting below
    `floor`, at least an eighth of the limit at a time (Linux tcp_prune_ofo_queue). Whether there
    is room now."""
    counters = ctx.counters
    counters.inc("PruneCalled")
    recv = c.recv
    step = recv_memory(c) >> 3
    goal = step
    pruned = False
    while recv.ooo is not None:
        freed = recv.prune_ooo(floor)
        if not freed:
            break
        pruned = True
        goal -= freed
        if goal <= 0:
            if _can_ingest(c, cost):
                break
            goal = step
    if pruned:
        counters.inc("OfoPruned")
    return _can_ingest(c, cost)


def queue_out_of_order(c: Tcb, seq: int, payload: bytes, ctx: Context) -> bool:
    """Keep a segment that starts beyond RCV.NXT if the budgets allow (pruning higher blocks if
    needed, Linux tcp_data_queue_ofo); whether it was kept."""
    cost = len(payload) + BLOCK_COST + CHUNK_COST  # at most what the queue grows by
    if not _can_ingest(c, cost) and not _prune(c, seq, cost, ctx):
        ctx.counters.inc("TCPOFODrop")
        return False
    c.recv.insert_ooo(c.rcv_nxt, seq, payload)
    ctx.counters.inc("TCPOFOQueue")
    return True


def in_order_fits(c: Tcb, n: int, ctx: Context) -> bool:
    """Whether `n` in-order bytes may be queued. The window keeps them within the limit unless the
    out-of-order queue holds much, or the host is over its hard limit: then the out-of-order queue
    gives way (in-order data is worth more), or the segment is dropped (`TCPRcvQDrop`)."""
    recv = c.recv
    pool = recv.pool
    if recv.ooo is None and (pool is None or not pool.exhausted):
        return True
    if _can_ingest(c, n) or (recv.ooo is not None and _prune(c, c.rcv_nxt, n, ctx)):
        return True
    ctx.counters.inc("TCPRcvQDrop")
    return False


def window_cap(c: Tcb, free: int) -> int:
    """The receive window's room, capped under memory pressure (Linux: rcv_ssthresh <= 4 * advmss)."""
    pool = c.recv.pool
    if pool is not None and pool.under_pressure:
        return min(free, PRESSURE_WINDOW_SEGMENTS * c.cfg.mss)
    return free


def out_of_memory(c: Tcb) -> bool:
    """Whether closing `c` should reset it instead (Linux tcp_out_of_memory): the host is over its
    hard limit and the connection still holds more than the minimum to send."""
    buf = c.send_buf
    return buf.pool is not None and buf.pool.exhausted and len(buf) > SNDBUF_MIN
