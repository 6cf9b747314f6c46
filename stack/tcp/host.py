"""The host: demultiplexing, listeners, the TIME-WAIT table, RST answers, ports, ISNs and timers.

This is the sans-IO entry point of the core. A driver feeds it segments (`on_segment`), timer
expiry (`on_timers`) and user calls, each with the current time, then collects what to send and
what happened with `take()`. It never reads a clock, a socket or a device.
"""

from __future__ import annotations

from typing import NamedTuple

from stack.native import TimerWheel
from stack.tcp.config import Config, FourTuple
from stack.tcp.connection import Connection
from stack.tcp.counters import Counters
from stack.tcp.events import Closed, CloseReason, Event, StateChanged
from stack.tcp.isn import IsnGenerator
from stack.tcp.receive import listen_arrives, negotiate, segment_arrives
from stack.tcp.seq import MASK, seq_add
from stack.tcp.states import State, check_transition
from stack.tcp.syncookie import check_cookie, make_cookie
from stack.tcp.timers import Timer
from stack.tcp.timewait import TimeWait, TimeWaitTable, TwAction
from stack.wire.segment import ACK, FIN, RST, SYN, Segment, TcpOptions

S = State
TIMER_KINDS = 8  # a wheel id is cid * TIMER_KINDS + kind


class Output(NamedTuple):
    segments: list[Segment]
    events: list[Event]


class PortInUse(OSError):
    """No free local port (EADDRNOTAVAIL), or a port already listened on (EADDRINUSE)."""


class Listener:
    """A passive OPEN (RFC 9293 §3.10.1) on one port of the host's addresses."""

    __slots__ = ("backlog", "config", "embryos", "host", "port", "state")

    def __init__(self, host: Host, port: int, backlog: int, config: Config) -> None:
        self.host = host
        self.port = port
        self.backlog = backlog
        self.config = config
        self.state = S.LISTEN
        self.embryos: set[FourTuple] = set()  # connections of ours still in SYN-RECEIVED

    def close(self, now: float) -> None:
        """CLOSE in LISTEN: delete the listener; embryonic connections are reset."""
        self.host.unlisten(self, now)

    def __repr__(self) -> str:
        return f"<Listener :{self.port} {self.state}>"


class Host:
    def __init__(self, addresses: str | tuple[str, ...] = "198.18.0.2", config: Config | None = None,
                 *, timer_resolution: float = 0.0001, start: float = 0.0) -> None:
        self.addresses = (addresses,) if isinstance(addresses, str) else tuple(addresses)
        self.config = config or Config()
        self.counters = Counters()
        self.connections: dict[FourTuple, Connection] = {}
        self.time_wait = TimeWaitTable(timer_resolution, start)
        self.listeners: dict[int, Listener] = {}
        self.wheel = TimerWheel(timer_resolution, start)
        self.record_state_changes = True  # emit a StateChanged event per transition
        # Largest payload per segment handed to the link; 0 = the MSS. A driver whose link splits
        # segments itself (TSO: the kernel via the virtio-net header) raises it to ~64 KB.
        self.tso_size = 0
        self._owners: dict[int, Connection] = {}
        self._next_cid = 1
        self._out: list[Segment] = []
        self._events: list[Event] = []
        self._ack_pending: dict[Connection, None] = {}
        self._push_pending: dict[Connection, None] = {}
        self._now = start
        self._isn = IsnGenerator(self.config.secret)
        self._port_cursor = 0

    # ------------------------------------------------------------------ driver entry points
    def on_segment(self, seg: Segment, now: float) -> None:
        """SEGMENT ARRIVES (RFC 9293 §3.10.7): find the connection, TIME-WAIT record or listener."""
        self._now = now
        self.counters["InSegs"] += 1
        key = (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)
        conn = self.connections.get(key)
        if conn is not None:
            segment_arrives(conn, seg, now)
            return
        if self.time_wait:
            tw = self.time_wait.get(key)
            if tw is not None:
                self._time_wait_segment(tw, seg, now)
                return
        listener = self.listeners.get(seg.dst_port)
        if listener is not None and seg.dst_addr in self.addresses:
            self._listen_segment(listener, seg, now, None)
            return
        # CLOSED (§3.10.7.1): everything but a RST is answered with a RST.
        if not seg.flags & RST:
            self.counters.inc("TCPRcvNoListener")
        self.reply_rst(seg)

    def on_malformed(self, reason: str) -> None:
        """A packet the wire layer refused: count it by reason (it is dropped)."""
        self.counters.malformed(reason)
        if reason == "bad_tcp_checksum":
            self.counters["InCsumErrors"] += 1

    def on_timers(self, now: float) -> None:
        """Advance the timer wheel to `now` and run every timer that expired."""
        self._now = now
        owners = self._owners
        for uid in self.wheel.advance(now):
            cid, kind = divmod(uid, TIMER_KINDS)
            owner = owners.get(cid)
            if owner is not None:
                owner.on_timer(Timer(kind), now)
        if self.time_wait:
            for tw in self.time_wait.expire(now):
                check_transition(S.TIME_WAIT, S.CLOSED)
                self.record_transition(tw.four_tuple, S.TIME_WAIT, S.CLOSED, "timeout = 2MSL", now)

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

    def take(self, flush_acks: bool = True) -> Output:
        """Everything to transmit and every event since the last call.

        Data queued by user calls is sent here, so a write and the close after it leave as one
        segment. ACKs requested while processing a batch are sent here too, one per connection
        (RFC 9293 MUST-58/59), unless `flush_acks` is False: a driver that is about to run
        application code (which may answer at once) takes them later, so the answer carries them."""
        if self._push_pending:
            pending_push, self._push_pending = self._push_pending, {}
            for conn in pending_push:
                conn.push(self._now)
        if self._ack_pending and flush_acks:
            pending, self._ack_pending = self._ack_pending, {}
            now = self._now
            for conn in pending:
                if conn.state is not S.CLOSED:
                    conn.send_ack(now)
        out = Output(self._out, self._events)
        self._out = []
        self._events = []
        return out

    def has_output(self, acks: bool = True) -> bool:
        """Whether `take()` would return anything: segments, events, data to push (and ACKs due)."""
        return bool(self._out or self._events or self._push_pending or (acks and self._ack_pending))

    # ------------------------------------------------------------------ user calls
    def listen(self, port: int, backlog: int | None = None, config: Config | None = None) -> Listener:
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        if port in self.listeners:
            raise PortInUse(f"port {port} is already listened on")
        cfg = config or self.config
        listener = Listener(self, port, backlog if backlog is not None else cfg.syn_backlog, cfg)
        self.listeners[port] = listener
        check_transition(S.CLOSED, S.LISTEN)
        self.record_transition((self.addresses[0], port, "0.0.0.0", 0), S.CLOSED, S.LISTEN, "passive OPEN",
                               self._now)
        return listener

    def unlisten(self, listener: Listener, now: float) -> None:
        if self.listeners.get(listener.port) is not listener:
            return
        del self.listeners[listener.port]
        for key in list(listener.embryos):
            conn = self.connections.get(key)
            if conn is not None:
                conn.abort(now)
        check_transition(S.LISTEN, S.CLOSED)
        listener.state = S.CLOSED
        self.record_transition((self.addresses[0], listener.port, "0.0.0.0", 0), S.LISTEN, S.CLOSED, "CLOSE", now)

    def connect(self, remote_addr: str, remote_port: int, now: float, *, local_port: int | None = None,
                local_addr: str | None = None, config: Config | None = None) -> Connection:
        """Active OPEN (RFC 9293 §3.10.1): send a SYN and enter SYN-SENT."""
        self._now = now
        cfg = config or self.config
        laddr = local_addr or self.addresses[0]
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
        conn.set_state(S.SYN_SENT, "active OPEN", now)
        self.counters.inc("ActiveOpens")
        conn.send_syn(now)
        return conn

    # ------------------------------------------------------------------ services for connections
    def transmit(self, seg: Segment, flags: int) -> None:
        self._out.append(seg)
        self.counters["OutSegs"] += 1
        if flags & RST:
            self.counters["OutRsts"] += 1

    def emit_event(self, event: Event) -> None:
        self._events.append(event)

    def request_ack(self, conn: Connection) -> None:
        self._ack_pending[conn] = None

    def request_push(self, conn: Connection, now: float) -> None:
        self._push_pending[conn] = None
        self._now = now

    def take_push_request(self, conn: Connection) -> bool:
        """Withdraw a pending push request (the connection pushes now itself); whether there was one."""
        return self._push_pending.pop(conn, 0) is None

    def ack_sent(self, conn: Connection) -> None:
        if self._ack_pending:
            self._ack_pending.pop(conn, None)

    def schedule_timer(self, cid: int, kind: int, deadline: float) -> int:
        return self.wheel.schedule(deadline, cid * TIMER_KINDS + kind)

    def cancel_timer(self, handle: int) -> None:
        self.wheel.cancel(handle)

    def record_transition(self, four_tuple: FourTuple, old: State, new: State, cause: str, now: float) -> None:
        if self.record_state_changes:
            self._events.append(StateChanged(now, four_tuple, old, new, cause))

    def forget(self, conn: Connection) -> None:
        """Drop a connection from the tables (it is CLOSED, back in LISTEN, or in TIME-WAIT)."""
        key = conn.four_tuple
        if self.connections.get(key) is conn:
            del self.connections[key]
        self._owners.pop(conn.cid, None)
        self._ack_pending.pop(conn, None)
        self._push_pending.pop(conn, None)
        self.embryo_done(conn)

    def embryo_done(self, conn: Connection) -> None:
        if conn.listen_port is not None:
            listener = self.listeners.get(conn.listen_port)
            if listener is not None:
                listener.embryos.discard(conn.four_tuple)

    def reply_rst(self, seg: Segment) -> None:
        """The reset of RFC 9293 §3.10.7.1: <SEQ=SEG.ACK><CTL=RST> if the segment had ACK, else
        <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. A RST is never answered."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            rst = Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            rst = Segment(seg.dst_addr, seg.src_addr, seg.dst_port, seg.src_port, 0,
                          seq_add(seg.seq, seg.seg_len), RST | ACK, 0)
        self.transmit(rst, RST)

    def enter_time_wait(self, conn: Connection, now: float, cause: str) -> None:
        """Hand a connection's 4-tuple to a compact TIME-WAIT record for 2MSL (or skip it at the cap)."""
        cfg = conn.cfg
        if len(self.time_wait) >= cfg.max_time_wait:
            self.counters.inc("TCPTimeWaitOverflow")
            conn.finish(CloseReason.NORMAL, cause + "; TIME-WAIT cap reached", now)
            return
        conn.set_state(S.TIME_WAIT, cause, now)
        conn.close_reason = CloseReason.NORMAL
        conn.cancel_all_timers()
        self.forget(conn)
        if conn.announced:
            self.emit_event(Closed(conn, CloseReason.NORMAL))
        tw = TimeWait(conn.four_tuple, conn.snd_nxt, conn.rcv_nxt, conn.last_window(),
                      conn.ts_recent if conn.ts_ok else None, conn.ts_recent_time, conn.ts_offset, now,
                      now + cfg.time_wait_duration, conn.rcv_wscale)
        self.time_wait.add(tw)
        self.counters.inc("TW")

    # ------------------------------------------------------------------ internals
    def _new_connection(self, key: FourTuple, cfg: Config, now: float, *, passive: bool,
                        listen_port: int | None, iss: int | None) -> Connection:
        cid = self._next_cid
        self._next_cid += 1
        if iss is None:
            iss = cfg.isn(key, now) if cfg.isn is not None else self._isn.isn(key, now)
        conn = Connection(self, key, cid, cfg, iss & 0xFFFFFFFF, self._isn.ts_offset(key), now, passive,
                          listen_port)
        self.connections[key] = conn
        self._owners[cid] = conn
        return conn

    def _listen_segment(self, listener: Listener, seg: Segment, now: float, iss: int | None) -> None:
        """LISTEN (RFC 9293 §3.10.7.2): a SYN spawns an embryo connection in SYN-RECEIVED."""
        flags = seg.flags
        cookies = listener.config.syn_cookies
        if flags & (SYN | ACK | RST | FIN) != SYN:
            if flags & ACK and not flags & (RST | SYN):
                if cookies and self._cookie_ack(listener, seg, now):
                    return
                self.reply_rst(seg)
            elif flags & ACK and not flags & RST:
                self.reply_rst(seg)
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
        listen_arrives(conn, seg, now)

    def _send_cookie(self, listener: Listener, syn: Segment, now: float) -> None:
        """The SYN backlog is full: answer with a stateless SYN cookie SYN-ACK (RFC 4987 §3.6)."""
        key = (syn.dst_addr, syn.dst_port, syn.src_addr, syn.src_port)
        cookie = make_cookie(self._isn.secret, key, syn.seq, syn.options.mss or 536, now)
        window = min(listener.config.recv_buffer, 65535)
        reply = Segment(syn.dst_addr, syn.src_addr, syn.dst_port, syn.src_port, cookie, seq_add(syn.seq, 1),
                        SYN | ACK, window, 0, TcpOptions(mss=listener.config.mss))
        self.counters.inc("SyncookiesSent")
        self.transmit(reply, SYN | ACK)

    def _cookie_ack(self, listener: Listener, seg: Segment, now: float) -> bool:
        """An ACK to a listener: if it returns one of our cookies, the connection is born now."""
        key = (seg.dst_addr, seg.dst_port, seg.src_addr, seg.src_port)
        iss = (seg.ack - 1) & MASK
        peer_isn = (seg.seq - 1) & MASK
        mss = check_cookie(self._isn.secret, key, peer_isn, iss, now)
        if mss is None:
            if self.counters["SyncookiesSent"]:
                self.counters.inc("SyncookiesFailed")
            return False
        self.counters.inc("SyncookiesRecv")
        cfg = listener.config
        conn = self._new_connection(key, cfg, now, passive=True, listen_port=listener.port, iss=iss)
        # Rebuild what the SYN told us; the cookie kept only its MSS.
        negotiate(conn, Segment(seg.src_addr, seg.dst_addr, seg.src_port, seg.dst_port, peer_isn, 0, SYN,
                                seg.window, 0, TcpOptions(mss=mss)), now)
        conn.snd_nxt = conn.snd_max = seq_add(iss, 1)
        conn.rcv_adv = seq_add(conn.rcv_nxt, min(cfg.recv_buffer, 65535))  # what the SYN-ACK offered
        conn.set_state(S.SYN_RECEIVED, "ACK returns a SYN cookie", now)
        self.counters.inc("PassiveOpens")
        segment_arrives(conn, seg, now)
        return True

    def cookie_instead(self, embryo: Connection, seg: Segment, now: float) -> bool:
        """Whether `seg`, unacceptable to a half-open connection, completes a SYN cookie we sent for
        the same 4-tuple; if so that connection replaces the embryo."""
        listener = self.listeners.get(embryo.listen_port) if embryo.listen_port is not None else None
        if listener is None or not listener.config.syn_cookies or not self.counters["SyncookiesSent"]:
            return False
        if check_cookie(self._isn.secret, embryo.four_tuple, (seg.seq - 1) & MASK, (seg.ack - 1) & MASK,
                        now) is None:
            return False
        embryo.return_to_listen(now, "the peer completed our SYN cookie instead")
        return self._cookie_ack(listener, seg, now)

    def open_passive(self, remote_addr: str, remote_port: int, local_port: int, now: float, *,
                     config: Config | None = None) -> Connection:
        """A fully specified passive OPEN (RFC 9293 §3.10.1): a connection in LISTEN that accepts
        only this peer, and that a SEND turns into an active open (LISTEN -> SYN-SENT)."""
        self._now = now
        key = (self.addresses[0], local_port, remote_addr, remote_port)
        if key in self.connections or key in self.time_wait:
            raise PortInUse(f"{key} is in use")
        conn = self._new_connection(key, config or self.config, now, passive=False, listen_port=None, iss=None)
        conn.passive = True
        conn.set_state(S.LISTEN, "passive OPEN", now)
        return conn

    def _time_wait_segment(self, tw: TimeWait, seg: Segment, now: float) -> None:
        cfg = self.config
        action = tw.process(seg, now, cfg)
        if action is TwAction.ACK or action is TwAction.NONE or action is TwAction.CHALLENGE:
            self.time_wait.store(tw)  # TS.Recent, the restarted 2MSL, the ACK rate limit
        if action is TwAction.CHALLENGE:
            self.counters.inc("TCPChallengeACK")
        if action is TwAction.ACK or action is TwAction.CHALLENGE:
            self.transmit(tw.ack_segment(now), ACK)
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
                self.reply_rst(seg)

    def _end_time_wait(self, tw: TimeWait, now: float, cause: str) -> None:
        self.time_wait.remove(tw)
        check_transition(S.TIME_WAIT, S.CLOSED)
        self.record_transition(tw.four_tuple, S.TIME_WAIT, S.CLOSED, cause, now)

    def _tw_reusable(self, tw: TimeWait, now: float) -> bool:
        """Linux `tcp_tw_reuse`: timestamps were in use and the record is at least 1 s old."""
        return self.config.tw_reuse and tw.ts_ok and now - tw.entered >= 1.0

    def _pick_port(self, laddr: str, raddr: str, rport: int, now: float) -> int:
        lo, hi = self.config.ephemeral_ports
        span = hi - lo + 1
        start = self._isn.port_offset(raddr, rport) + self._port_cursor
        self._port_cursor += 1
        time_wait = self.time_wait
        for i in range(span):
            port = lo + (start + i) % span
            if port in self.listeners:
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
