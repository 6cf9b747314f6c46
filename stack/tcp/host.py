"""The host: demultiplexing, listeners, the TIME-WAIT table, RST answers, ports, ISNs and timers.

This is the sans-IO entry point of the core and the ONLY owner of its tables. A driver feeds it
segments (`on_segment`), timer expiry (`on_timers`) and user calls (through a connection's
handle), each with the current time, then collects what to send and what happened with
`take(now)`. It never reads a clock, a socket or a device. Connections get the host's `Context`
and return an `Outcome`; the host acts on it (`act`): only here do connections enter or leave the
4-tuple table, the TIME-WAIT table and a listener's SYN backlog.
"""

from __future__ import annotations

import errno
import weakref
from collections.abc import Callable
from typing import NamedTuple

from stack.native import TimerWheel
from stack.tcp.arrival import listen_arrives, negotiate, return_to_listen
from stack.tcp.budget import MemoryPool
from stack.tcp.config import Config, FourTuple, default_peer_mss
from stack.tcp.connection import Connection
from stack.tcp.context import Context
from stack.tcp.counters import Counters
from stack.tcp.events import CloseReason, Event
from stack.tcp.handle import ConnectionHandle
from stack.tcp.icmp import IcmpHost, error_key, prefix, seq_acceptable, tcp_error
from stack.tcp.isn import IsnGenerator
from stack.tcp.outcome import CookieCheck, Established, Finished, Outcome, ToTimeWait
from stack.tcp.sender import push, reply_rst, send_ack, send_syn
from stack.tcp.seq import MASK, seq_add
from stack.tcp.states import State, check_transition
from stack.tcp.syncookie import check_cookie, make_cookie, recently_sent
from stack.tcp.tcb import N_TIMERS, Timer, _window_shift
from stack.tcp.timewait import TimeWait, TimeWaitTable, TwAction
from stack.wire.address import canonical_address
from stack.wire.icmp import IcmpMessage
from stack.wire.reasons import ICMP_REASONS
from stack.wire.segment import ACK, FIN, RST, SYN, Segment, TcpOptions

S = State


class Output(NamedTuple):
    segments: list[Segment]
    events: list[Event]


class PortInUse(OSError):
    """No free local port (EADDRNOTAVAIL), or a port already listened on (EADDRINUSE)."""


class Listener:
    """A passive OPEN (RFC 9293 §3.10.1) on one port of the host's addresses."""

    __slots__ = ("backlog", "config", "cookie_sent", "embryos", "host", "port", "state")

    def __init__(self, host: Host, port: int, backlog: int, config: Config) -> None:
        self.host = host
        self.port = port
        self.backlog = backlog
        self.config = config
        self.state = S.LISTEN
        self.embryos: set[FourTuple] = set()  # connections of ours still in SYN-RECEIVED
        self.cookie_sent = -float("inf")  # when the last SYN cookie went out (Linux: last overflow)

    def close(self, now: float) -> None:
        """CLOSE in LISTEN: delete the listener; embryonic connections are reset."""
        self.host.unlisten(self, now)

    def __repr__(self) -> str:
        return f"<Listener :{self.port} {self.state}>"


class Host:
    def __init__(self, addresses: str | tuple[str, ...] = "198.18.0.2", config: Config | None = None,
                 *, timer_resolution: float = 0.0001, start: float = 0.0) -> None:
        # Canonical text (stack.wire.address): what parse_packet puts in every segment it decodes.
        self.addresses = tuple(map(canonical_address, (addresses,) if isinstance(addresses, str) else addresses))
        self.config = config or Config()
        self.counters = Counters()
        self.connections: dict[FourTuple, Connection] = {}
        self.time_wait = TimeWaitTable(timer_resolution, start)
        self.listeners: dict[int, Listener] = {}
        self.wheel = TimerWheel(timer_resolution, start)
        self.ctx = Context(self.counters, self.wheel, start, MemoryPool(self.config.memory_limits, self.counters))
        self._owners: dict[int, Connection] = {}
        # Connections in TIME-WAIT whose handle the application still holds: when the record ends,
        # the handle's state and history say so. Weak: a dropped handle costs nothing here.
        self._time_wait_handles: weakref.WeakValueDictionary[FourTuple, Connection] = weakref.WeakValueDictionary()
        self._next_cid = 1
        self._isn = IsnGenerator(self.config.secret)
        self._port_cursor = 0
        # With several workers on one multi-queue TUN (stack.runtime.workers), which flows are this
        # host's: (local port, remote port) -> bool. A flow another worker owns is neither answered
        # nor picked as a local port here. None: every flow is ours.
        self.owns_flow: Callable[[int, int], bool] | None = None
        self.icmp = IcmpHost(self.config, self.counters, start)

    # ------------------------------------------------------------------ driver settings
    @property
    def record_state_changes(self) -> bool:
        """Whether a StateChanged event is emitted per transition (off when nobody watches)."""
        return self.ctx.record_state_changes

    @record_state_changes.setter
    def record_state_changes(self, on: bool) -> None:
        self.ctx.record_state_changes = on

    @property
    def tso_size(self) -> int:
        """Largest payload per segment handed to the link (0: the MSS); raised by a driver whose
        link splits segments itself (TSO)."""
        return self.ctx.tso_size

    @tso_size.setter
    def tso_size(self, size: int) -> None:
        self.ctx.tso_size = size

    @property
    def memory(self) -> MemoryPool:
        """What every connection's buffers hold, against `Config.memory_limits` (stack.tcp.budget)."""
        return self.ctx.memory

    @property
    def edges(self) -> dict[tuple[State, State], int]:
        """How often each state change happened on this host (the diagram-coverage test reads it)."""
        return self.ctx.edges

    # ------------------------------------------------------------------ driver entry points
    def on_segment(self, seg: Segment, now: float) -> None:
        """SEGMENT ARRIVES (RFC 9293 §3.10.7): find the connection, TIME-WAIT record or listener."""
        ctx = self.ctx
        ctx.now = now
        self.counters["InSegs"] += 1
        key = (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)
        conn = self.connections.get(key)
        if conn is not None:
            outcome = conn.process(seg, ctx)
            if outcome is not None:
                self.act(conn, outcome)
            return
        if self.time_wait:
            tw = self.time_wait.get(key)
            if tw is not None:
                self._time_wait_segment(tw, seg, now)
                return
        owns = self.owns_flow
        if owns is not None and not owns(seg.dst_port, seg.src_port):
            # Another worker's state: a RST from here would kill its connection. Count, drop.
            self.counters.inc("TCPMisrouted")
            return
        listener = self.listeners.get(seg.dst_port)
        if listener is not None and seg.dst_addr in self.addresses:
            self._listen_segment(listener, seg, now, None)
            return
        # CLOSED (§3.10.7.1): everything but a RST is answered with a RST.
        if not seg.flags & RST:
            self.counters.inc("TCPRcvNoListener")
        reply_rst(seg, ctx)

    def on_malformed(self, reason: str, version: int = 4) -> None:
        """A packet the wire layer refused: count it by reason (it is dropped). A bad ICMP message
        counts as Linux counts it, in the ICMP section of its IP `version`, not as a TCP error."""
        if reason in ICMP_REASONS:
            section = prefix(version)
            self.counters.inc("InMalformed." + reason)
            self.counters.inc(section + "InErrors")
            if reason == "bad_icmp_checksum":
                self.counters.inc(section + "InCsumErrors")
            return
        self.counters.malformed(reason)
        if reason == "bad_tcp_checksum":
            self.counters["InCsumErrors"] += 1

    def on_icmp(self, msg: IcmpMessage, now: float) -> IcmpMessage | None:
        """ICMP or ICMPv6 in (stack.tcp.icmp): returns the echo reply to send, if any. An error
        reaches the connection its quote names only with a SEQ in flight (RFC 5927 §5.1)."""
        icmp = self.icmp
        icmp.received(msg)
        if not msg.is_error:
            return icmp.answer_echo(msg, self.addresses, now)
        key = error_key(msg)
        conn = self.connections.get(key) if key is not None else None
        if conn is None or msg.quote is None:
            if key is None or not (self.time_wait and key in self.time_wait):
                self.counters.inc(prefix(msg.version) + "InErrors")  # about nothing of ours (Linux)
            return None
        if not seq_acceptable(conn, msg.quote.seq):
            self.counters.inc("OutOfWindowIcmps")
            return None
        self.act(conn, tcp_error(conn, msg, self.context(now)))
        return None

    def on_timers(self, now: float) -> None:
        """Advance the timer wheel to `now` and run every timer that expired."""
        ctx = self.ctx
        ctx.now = now
        owners = self._owners
        for uid in self.wheel.advance(now):
            cid, kind = divmod(uid, N_TIMERS)
            owner = owners.get(cid)
            if owner is not None:
                outcome = owner.on_timer(Timer(kind), ctx)
                if outcome is not None:
                    self.act(owner, outcome)
        if self.time_wait:
            for tw in self.time_wait.expire(now):
                self._time_wait_ended(tw, "timeout = 2MSL", now)

    def next_deadline(self) -> float | None:
        """When `on_timers` should next be called (None: no timer pending)."""
        deadline = self.wheel.next_deadline()
        if self.time_wait:
            tw_deadline = self.time_wait.next_deadline()
            if tw_deadline is not None and (deadline is None or tw_deadline < deadline):
                return tw_deadline
        return deadline

    def pending_timers(self) -> int:
        """Timers in the wheels: zero once every connection and TIME-WAIT is gone."""
        return len(self.wheel) + self.time_wait.timers()

    def take(self, now: float, flush_acks: bool = True) -> Output:
        """Everything to transmit and every event since the last call.

        Data queued by user calls is sent here, so a write and the close after it leave as one
        segment. ACKs requested while processing a batch are sent here too, one per connection
        (RFC 9293 MUST-58/59), unless `flush_acks` is False: a driver that is about to run
        application code (which may answer at once) takes them later, so the answer carries them."""
        ctx = self.ctx
        ctx.now = now
        if ctx.push_pending:
            pending_push, ctx.push_pending = ctx.push_pending, {}
            for conn in pending_push:
                push(conn, ctx)
        if ctx.ack_pending and flush_acks:
            pending, ctx.ack_pending = ctx.ack_pending, {}
            for conn in pending:
                if conn.state is not S.CLOSED:
                    send_ack(conn, ctx)
        out = Output(ctx.out, ctx.events)
        ctx.out = []
        ctx.events = []
        return out

    def has_output(self, acks: bool = True) -> bool:
        """Whether `take()` would return anything: segments, events, data to push (and ACKs due)."""
        ctx = self.ctx
        return bool(ctx.out or ctx.events or ctx.push_pending or (acks and ctx.ack_pending))

    # ------------------------------------------------------------------ acting on outcomes
    def context(self, now: float) -> Context:
        """The context, set to `now`, for a call into a connection made at that time."""
        ctx = self.ctx
        ctx.now = now
        return ctx

    def act(self, conn: Connection, outcome: Outcome | None) -> None:
        """Carry out what a connection returned: the host's tables change only here."""
        if outcome is None:
            return
        kind = type(outcome)
        if kind is Finished:
            self._forget(conn)
        elif kind is ToTimeWait:
            assert isinstance(outcome, ToTimeWait)
            self._to_time_wait(conn, outcome.cause)
        elif kind is Established:
            self._embryo_done(conn)
        elif kind is CookieCheck:
            assert isinstance(outcome, CookieCheck)
            if not self._cookie_instead(conn, outcome.segment):
                reply_rst(outcome.segment, self.ctx)

    def _forget(self, conn: Connection) -> None:
        """Drop a connection from the tables (it is CLOSED, back in LISTEN, or in TIME-WAIT)."""
        key = conn.four_tuple
        if self.connections.get(key) is conn:
            del self.connections[key]
        owned = self._owners.pop(conn.cid, None) is not None
        conn.recv.release()
        conn.send_buf.release()
        ctx = self.ctx
        ctx.ack_pending.pop(conn, None)
        ctx.push_pending.pop(conn, None)
        if owned and conn.orphan:
            ctx.orphans -= 1
        self._embryo_done(conn)
        # The handle keeps answering through its connection; the way back is no longer needed
        # (every event about the connection is out). Without this cycle a connection the
        # application dropped is freed at once, not by the cyclic garbage collector.
        conn.handle = None

    def _embryo_done(self, conn: Connection) -> None:
        if conn.listen_port is not None:
            listener = self.listeners.get(conn.listen_port)
            if listener is not None:
                listener.embryos.discard(conn.four_tuple)

    def _to_time_wait(self, conn: Connection, cause: str) -> None:
        """Hand a connection's 4-tuple to a compact TIME-WAIT record for 2MSL (or skip it at the cap)."""
        ctx = self.ctx
        if len(self.time_wait) >= conn.cfg.max_time_wait:
            self.counters.inc("TCPTimeWaitOverflow")
            conn.send_owed_ack(ctx)
            conn.finish(CloseReason.NORMAL, cause + "; TIME-WAIT cap reached", ctx)
            self._forget(conn)
            return
        record = conn.enter_time_wait(cause, ctx)
        held = conn.handle is not None and conn.announced
        self._forget(conn)
        self.time_wait.add(record)
        self.counters.inc("TW")
        if held:
            self._time_wait_handles[conn.four_tuple] = conn

    def _time_wait_ended(self, tw: TimeWait, cause: str, now: float) -> None:
        self.record_transition(tw.four_tuple, S.TIME_WAIT, S.CLOSED, cause, now)
        if self._time_wait_handles:
            conn = self._time_wait_handles.pop(tw.four_tuple, None)
            if conn is not None:
                conn.time_wait_ended(cause, now)

    def record_transition(self, four_tuple: FourTuple, old: State, new: State, cause: str, now: float) -> None:
        """A state change of something that is not a connection: a listener, a TIME-WAIT record."""
        check_transition(old, new)
        ctx = self.ctx
        ctx.now = now
        ctx.state_changed(four_tuple, old, new, cause)

    # ------------------------------------------------------------------ user calls
    def listen(self, port: int, backlog: int | None = None, config: Config | None = None) -> Listener:
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        if port in self.listeners:
            raise PortInUse(f"port {port} is already listened on")
        cfg = config or self.config
        listener = Listener(self, port, backlog if backlog is not None else cfg.syn_backlog, cfg)
        self.listeners[port] = listener
        self.record_transition((self.addresses[0], port, "0.0.0.0", 0), S.CLOSED, S.LISTEN, "passive OPEN",
                               self.ctx.now)
        return listener

    def unlisten(self, listener: Listener, now: float) -> None:
        if self.listeners.get(listener.port) is not listener:
            return
        del self.listeners[listener.port]
        ctx = self.context(now)
        for key in list(listener.embryos):
            conn = self.connections.get(key)
            if conn is not None:
                # Half-open connections go silently, as Linux frees its request sockets: a later
                # segment from the peer finds nothing and gets the RST then.
                self.act(conn, conn.finish(CloseReason.ABORTED, "listener closed", ctx))
        listener.state = S.CLOSED
        self.record_transition((self.addresses[0], listener.port, "0.0.0.0", 0), S.LISTEN, S.CLOSED, "CLOSE", now)

    def connect(self, remote_addr: str, remote_port: int, now: float, *, local_port: int | None = None,
                local_addr: str | None = None, config: Config | None = None) -> ConnectionHandle:
        """Active OPEN (RFC 9293 §3.10.1): send a SYN and enter SYN-SENT."""
        ctx = self.context(now)
        cfg = config or self.config
        if ":" in remote_addr:
            remote_addr = canonical_address(remote_addr)  # IPv6 text has more than one spelling
        laddr = local_addr or self.local_address_for(remote_addr)
        if local_port is None:
            local_port = self._pick_port(laddr, remote_addr, remote_port, now)
        key = (laddr, local_port, remote_addr, remote_port)
        iss: int | None = None
        if key in self.connections:
            raise PortInUse(f"{laddr}:{local_port} -> {remote_addr}:{remote_port} is in use")
        tw = self.time_wait.get(key)
        if tw is not None:
            if not self._tw_reusable(tw, now):
                raise PortInUse(f"{laddr}:{local_port} -> {remote_addr}:{remote_port} is in TIME-WAIT")
            iss = tw.reopen_isn()
            self.counters.inc("TWRecycled")
            self._end_time_wait(tw, now, "reused by connect (tw_reuse)")
        conn = self._new_connection(key, cfg, now, passive=False, listen_port=None, iss=iss)
        conn.set_state(S.SYN_SENT, "active OPEN", ctx)
        self.counters.inc("ActiveOpens")
        send_syn(conn, ctx)
        assert conn.handle is not None
        return conn.handle

    def open_passive(self, remote_addr: str, remote_port: int, local_port: int, now: float, *,
                     config: Config | None = None) -> ConnectionHandle:
        """A fully specified passive OPEN (RFC 9293 §3.10.1): a connection in LISTEN that accepts
        only this peer, and that a SEND turns into an active open (LISTEN -> SYN-SENT)."""
        ctx = self.context(now)
        remote_addr = canonical_address(remote_addr)
        key = (self.local_address_for(remote_addr), local_port, remote_addr, remote_port)
        if key in self.connections or key in self.time_wait:
            raise PortInUse(f"{key} is in use")
        conn = self._new_connection(key, config or self.config, now, passive=False, listen_port=None, iss=None)
        conn.passive = True
        conn.set_state(S.LISTEN, "passive OPEN", ctx)
        assert conn.handle is not None
        return conn.handle

    def local_address_for(self, remote_addr: str) -> str:
        """The host's first address of `remote_addr`'s family: IPv6 text has a ':', IPv4 none.
        Raises OSError(ENETUNREACH) when the host has no address of that family."""
        v6 = ":" in remote_addr
        for addr in self.addresses:
            if (":" in addr) == v6:
                return addr
        family = "IPv6" if v6 else "IPv4"
        raise OSError(errno.ENETUNREACH, f"no {family} address on this host to reach {remote_addr} from")

    # ------------------------------------------------------------------ internals
    def _new_connection(self, key: FourTuple, cfg: Config, now: float, *, passive: bool,
                        listen_port: int | None, iss: int | None) -> Connection:
        cid = self._next_cid
        self._next_cid += 1
        if iss is None and cfg.isn is None:
            iss, ts_offset = self._isn.isn_and_ts_offset(key, now)
        else:
            if iss is None:
                assert cfg.isn is not None
                iss = cfg.isn(key, now)
            ts_offset = self._isn.ts_offset(key)
        conn = Connection(key, cid, cfg, iss & 0xFFFFFFFF, ts_offset, now, passive, listen_port)
        conn.recv.pool = conn.send_buf.pool = self.ctx.memory  # their bytes count toward tcp_mem (stack.tcp.budget)
        conn.handle = ConnectionHandle(self, conn)
        self.connections[key] = conn
        self._owners[cid] = conn
        return conn

    def _listen_segment(self, listener: Listener, seg: Segment, now: float, iss: int | None) -> None:
        """LISTEN (RFC 9293 §3.10.7.2): a SYN spawns an embryo connection in SYN-RECEIVED."""
        flags = seg.flags
        cookies = listener.config.syn_cookies
        ctx = self.ctx
        if flags & (SYN | ACK | RST | FIN) != SYN:
            if flags & ACK and not flags & (RST | SYN):
                if cookies and self._cookie_ack(listener, seg, now):
                    return
                reply_rst(seg, ctx)
            elif flags & ACK and not flags & RST:
                reply_rst(seg, ctx)
            return  # RST ignored; SYN+FIN and the rest dropped
        if len(listener.embryos) >= listener.backlog:
            self.counters.inc("ListenOverflows")
            if cookies:
                self._send_cookie(listener, seg, now)
            else:
                self.counters.inc("ListenDrops")
            return
        key = (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)
        conn = self._new_connection(key, listener.config, now, passive=True, listen_port=listener.port, iss=iss)
        listener.embryos.add(key)
        listen_arrives(conn, seg, ctx)

    def _send_cookie(self, listener: Listener, syn: Segment, now: float) -> None:
        """The SYN backlog is full: answer with a stateless SYN cookie SYN-ACK (RFC 4987 §3.6).
        With timestamps, window scaling and SACK ride in our TSval (stack.tcp.syncookie)."""
        key = (syn.dst_addr, syn.dst_port, syn.src_addr, syn.src_port)
        cfg = listener.config
        opts = syn.options
        ts_clock = (int(now * 1000.0) + self._isn.ts_offset(key)) & MASK if cfg.timestamps and opts.timestamp else None
        wscale = opts.wscale if cfg.window_scaling else None
        sack = cfg.sack and opts.sack_permitted
        cookie, tsval = make_cookie(self._isn.secret, key, syn.seq, opts.mss or default_peer_mss(syn.dst_addr), now,
                                    wscale=wscale, sack=sack, ts_clock=ts_clock)
        mss = cfg.mss_for(syn.dst_addr)
        options = TcpOptions(mss=mss)
        if tsval is not None and opts.timestamp is not None:
            options = TcpOptions(mss=mss, wscale=_window_shift(cfg.recv_buffer) if wscale is not None else None,
                                 sack_permitted=sack, timestamp=(tsval, opts.timestamp[0]))
        window = min(cfg.recv_buffer, 65535)
        reply = Segment(syn.dst_addr, syn.src_addr, syn.dst_port, syn.src_port, cookie, seq_add(syn.seq, 1),
                        SYN | ACK, window, 0, options)
        listener.cookie_sent = now
        self.counters.inc("SyncookiesSent")
        self.ctx.transmit(reply)

    def _cookie_ack(self, listener: Listener, seg: Segment, now: float) -> bool:
        """An ACK to a listener: if it returns one of our recent cookies, the connection is born now."""
        if not recently_sent(listener.cookie_sent, now):
            return False  # no cookie out there: nothing to check (Linux: no recent overflow)
        key = (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)
        cfg = listener.config
        iss = (seg.ack - 1) & MASK
        peer_isn = (seg.seq - 1) & MASK
        ts = seg.options.timestamp if cfg.timestamps else None
        info = check_cookie(self._isn.secret, key, peer_isn, iss, now, ts[1] if ts else None)
        if info is None:
            self.counters.inc("SyncookiesFailed")
            return False
        self.counters.inc("SyncookiesRecv")
        ctx = self.ctx
        conn = self._new_connection(key, cfg, now, passive=True, listen_port=listener.port, iss=iss)
        # Rebuild what the SYN told us from what the cookie kept.
        negotiate(conn, Segment(seg.src_addr, seg.dst_addr, seg.src_port, seg.dst_port, peer_isn, 0, SYN,
                                seg.window, 0, TcpOptions(mss=info.mss, wscale=info.wscale, sack_permitted=info.sack,
                                                          timestamp=(ts[0], 0) if ts else None)), now)
        conn.snd_nxt = conn.snd_max = seq_add(iss, 1)
        conn.rcv_adv = seq_add(conn.rcv_nxt, min(cfg.recv_buffer, 65535))  # what the SYN-ACK offered
        conn.set_state(S.SYN_RECEIVED, "ACK returns a SYN cookie", ctx)
        self.counters.inc("PassiveOpens")
        self.act(conn, conn.process(seg, ctx))
        return True

    def _cookie_instead(self, embryo: Connection, seg: Segment) -> bool:
        """Whether `seg`, unacceptable to a half-open connection, completes a SYN cookie we sent for
        the same 4-tuple; if so that connection replaces the embryo."""
        listener = self.listeners.get(embryo.listen_port) if embryo.listen_port is not None else None
        now = self.ctx.now
        if listener is None or not listener.config.syn_cookies or not recently_sent(listener.cookie_sent, now):
            return False
        ts = seg.options.timestamp if listener.config.timestamps else None
        if check_cookie(self._isn.secret, embryo.four_tuple, (seg.seq - 1) & MASK, (seg.ack - 1) & MASK, now,
                        ts[1] if ts else None) is None:
            return False
        self.act(embryo, return_to_listen(embryo, "the peer completed our SYN cookie instead", self.ctx))
        return self._cookie_ack(listener, seg, now)

    def _time_wait_segment(self, tw: TimeWait, seg: Segment, now: float) -> None:
        cfg = self.config
        action = tw.process(seg, now, cfg)
        if action is TwAction.ACK or action is TwAction.NONE or action is TwAction.CHALLENGE:
            self.time_wait.store(tw)  # TS.Recent, the restarted 2MSL, the ACK rate limit
        if action is TwAction.CHALLENGE:
            self.counters.inc("TCPChallengeACK")
        if action is TwAction.ACK or action is TwAction.CHALLENGE:
            self.ctx.transmit(tw.ack_segment(now))
        elif action is TwAction.KILL:
            self.counters.inc("TWKilled")
            self._end_time_wait(tw, now, "rcv RST")
        elif action is TwAction.REOPEN:
            listener = self.listeners.get(seg.dst_port)
            isn = tw.reopen_isn()
            self.counters.inc("TCPTimeWaitReopen")
            self._end_time_wait(tw, now, "SYN reopens the 4-tuple (RFC 6191)")
            if listener is not None:
                self._listen_segment(listener, seg, now, isn)
            else:
                reply_rst(seg, self.ctx)

    def _end_time_wait(self, tw: TimeWait, now: float, cause: str) -> None:
        self.time_wait.remove(tw)
        self._time_wait_ended(tw, cause, now)

    def _tw_reusable(self, tw: TimeWait, now: float) -> bool:
        """Linux `tcp_tw_reuse`: timestamps were in use and the record is at least 1 s old."""
        return self.config.tw_reuse and tw.ts_ok and now - tw.entered >= 1.0

    def _pick_port(self, laddr: str, raddr: str, rport: int, now: float) -> int:
        lo, hi = self.config.ephemeral_ports
        span = hi - lo + 1
        start = self._isn.port_offset(raddr, rport) + self._port_cursor
        self._port_cursor += 1
        time_wait = self.time_wait
        owns = self.owns_flow
        for i in range(span):
            port = lo + (start + i) % span
            if port in self.listeners or (owns is not None and not owns(port, rport)):
                continue
            key = (laddr, port, raddr, rport)
            if key in self.connections:
                continue
            if not time_wait or key not in time_wait:
                return port
            # The first usable port wins, free or a reusable TIME-WAIT (Linux __inet_hash_connect).
            if self.config.tw_reuse:
                tw = time_wait.get(key)
                if tw is not None and self._tw_reusable(tw, now):
                    return port
        raise PortInUse(f"no free local port toward {raddr}:{rport} (EADDRNOTAVAIL)")

    # ------------------------------------------------------------------ observation
    def state_for(self, four_tuple: FourTuple) -> State | None:
        """The state of whatever holds this 4-tuple: a connection, a TIME-WAIT record, a listener."""
        conn = self.connections.get(four_tuple)
        if conn is not None:
            return conn.state
        if self.time_wait and four_tuple in self.time_wait:
            return S.TIME_WAIT
        if four_tuple[1] in self.listeners and four_tuple[0] in self.addresses:
            return S.LISTEN
        return None

    def stats(self) -> dict[str, int]:
        """The counters, plus the gauges Linux reports beside them."""
        snapshot = dict(self.counters)
        snapshot["CurrEstab"] = sum(
            1 for c in self.connections.values() if c.state in (S.ESTABLISHED, S.CLOSE_WAIT)
        )
        snapshot["TimeWait"] = len(self.time_wait)
        return snapshot

    def send_mss(self, four_tuple: FourTuple) -> int | None:
        """The MSS a connection sends with (a TSO driver splits larger segments to it)."""
        conn = self.connections.get(four_tuple)
        return None if conn is None else conn.snd_mss

    def handles(self) -> list[ConnectionHandle]:
        """The handles of every connection in the table (TIME-WAIT records have none)."""
        return [c.handle for c in self.connections.values() if c.handle is not None]

    @staticmethod
    def tcb(handle: ConnectionHandle) -> Connection:
        """The TCB behind a handle: white-box access for core tests, the fuzzer and experiments
        that read RFC 9293's variables directly. Applications use the handle."""
        return handle._conn
