"""One connection's transmission control block (RFC 9293 §3.3.1): state, user calls, and output.

Segment arrival lives in `stack.tcp.receive`; timers are owned by the host's timer wheel and
dispatched here by kind. Field names are RFC 9293's (`snd_una`, `snd_nxt`, `rcv_nxt`, ...), plus
`snd_max`: the highest sequence number sent so far, which stays put when a retransmission timeout
rewinds `snd_nxt` to `snd_una` (go-back-N), and against which ACKs are validated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp import congestion, sack
from stack.tcp.buffers import ReceiveQueue, SendBuffer
from stack.tcp.config import Config, FourTuple
from stack.tcp.events import Closed, CloseReason, Writable
from stack.tcp.rtt import RttEstimator
from stack.tcp.seq import MASK, seq_add, seq_gt, seq_lt, seq_sub
from stack.tcp.states import SENDING_STATES, State, check_transition
from stack.tcp.timers import N_TIMERS, TIMER_ACTIONS, Timer
from stack.wire.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions

if TYPE_CHECKING:
    from stack.tcp.host import Host

INF = float("inf")
S = State





class ConnectionError_(Exception):
    """A user call the current state does not allow (RFC 9293 §3.10 'error: ...' responses)."""


class Connection:
    """A TCP connection. User calls take `now`; output is collected by the host (`Host.take`)."""

    __slots__ = (
        "_armed",
        "_challenge_time",
        "_deadline",
        "_handle",
        "_rtt_seq",
        "_rtt_time",
        "_syn_flags_sent",
        "_want_writable",
        "announced",
        "cc",
        "cfg",
        "cid",
        "close_reason",
        "dupacks",
        "fin_queued",
        "fin_seq",
        "first_unacked_time",
        "four_tuple",
        "high_rxt",
        "history",
        "host",
        "in_recovery",
        "irs",
        "iss",
        "keepalive_sent",
        "last_ack_sent",
        "last_recv_time",
        "linger0",
        "listen_port",
        "max_snd_wnd",
        "orphan",
        "passive",
        "peer_fin",
        "rcv_adv",
        "rcv_nxt",
        "rcv_wscale",
        "read_closed",
        "recover",
        "recv",
        "retries",
        "rtt",
        "sack_ok",
        "sacked",
        "send_buf",
        "snd_max",
        "snd_mss",
        "snd_nxt",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "state",
        "ts_offset",
        "ts_ok",
        "ts_recent",
        "ts_recent_time",
        "user_data",
        "wscale_ok",
    )

    def __init__(
        self,
        host: Host,
        four_tuple: FourTuple,
        cid: int,
        config: Config,
        iss: int,
        ts_offset: int,
        now: float,
        passive: bool,
        listen_port: int | None = None,
    ) -> None:
        self.host = host
        self.four_tuple = four_tuple
        self.cid = cid
        self.cfg = config
        self.state = S.LISTEN if passive else S.CLOSED
        self.passive = passive
        self.listen_port = listen_port
        self.history: list[tuple[float, State, State, str]] = []
        self.close_reason: CloseReason | None = None
        # Whether the application knows this connection: an active one from connect(), a passive
        # one once Accepted was emitted. Only those get a Closed event.
        self.announced = not passive
        self.user_data: object = None  # free for the driver (the runtime keeps its transport here)

        # Send sequence space (RFC 9293 §3.3.1, Figure 3).
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.snd_mss = 536  # RFC 9293 §3.7.1: default when the peer sends no MSS option
        # Receive sequence space (Figure 4).
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window we advertised last (never moved left, §3.8.6.2.2)
        self.rcv_wscale = _window_shift(config.recv_buffer) if config.window_scaling else 0
        self.wscale_ok = False  # both SYNs carried the window-scale option (RFC 7323 §2.2)

        # Options (RFC 7323 timestamps, RFC 2018 SACK), decided by the handshake.
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_time = now
        self.ts_offset = ts_offset
        self.sack_ok = False
        self.last_ack_sent = 0

        self.send_buf = SendBuffer(config.send_buffer, seq_add(iss, 1))
        self.recv = ReceiveQueue()
        self.fin_queued = False  # the application shut down its sending side
        self.fin_seq: int | None = None  # sequence number of our FIN, once it has been sent
        self.peer_fin = False
        self.read_closed = False
        self.orphan = False  # the application closed the connection fully
        self.linger0 = False

        self.rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.cc = congestion.create(config.congestion_control, 536, config.initial_cwnd_segments)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss
        self.sacked: list[list[int]] = []  # SACK scoreboard: SACKed ranges above SND.UNA (stack.tcp.sack)
        self.high_rxt = iss  # RFC 6675 HighRxt: the highest sequence number retransmitted in recovery
        self.retries = 0
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self.first_unacked_time: float | None = None
        self.last_recv_time = now
        self.keepalive_sent = 0
        self._challenge_time = -INF
        self._want_writable = False
        self._deadline = [INF] * N_TIMERS
        self._handle = [-1] * N_TIMERS
        self._armed = [INF] * N_TIMERS  # when the wheel entry of each timer fires
        self._syn_flags_sent = 0  # SYN or SYN|ACK, once sent: a second one is a retransmission

    # ------------------------------------------------------------------ introspection
    def __repr__(self) -> str:
        la, lp, ra, rp = self.four_tuple
        return f"<Connection {la}:{lp} -> {ra}:{rp} {self.state}>"

    @property
    def rcv_wnd(self) -> int:
        """RCV.WND as last advertised: what the acceptability test of §3.10.7.4 checks against."""
        return max(0, seq_sub(self.rcv_adv, self.rcv_nxt))

    @property
    def recv_queue_len(self) -> int:
        """Bytes received in order and not yet read by the application (`ss` Recv-Q)."""
        return self.recv.ready_len

    @property
    def send_queue_len(self) -> int:
        """Bytes not yet acknowledged by the peer (`ss` Send-Q)."""
        return len(self.send_buf)

    def last_window(self) -> int:
        """The window field we advertised last (what a TIME-WAIT record keeps sending)."""
        return min(self.rcv_wnd >> self.rcv_wscale, 65535)

    @property
    def in_flight(self) -> int:
        return seq_sub(self.snd_nxt, self.snd_una)

    def timer_deadline(self, kind: Timer) -> float | None:
        deadline = self._deadline[kind]
        return None if deadline == INF else deadline

    # ------------------------------------------------------------------ state changes
    def set_state(self, new: State, cause: str, now: float) -> None:
        old = self.state
        check_transition(old, new)
        self.state = new
        self.history.append((now, old, new, cause))
        self.host.record_transition(self.four_tuple, old, new, cause, now)

    def finish(self, reason: CloseReason, cause: str, now: float, new_state: State = S.CLOSED) -> None:
        """Leave the connection table: CLOSED (or LISTEN, for a passive embryo), timers stopped."""
        self.set_state(new_state, cause, now)
        self.close_reason = reason
        self.cancel_all_timers()
        self.host.forget(self)
        if self.announced:
            self.host.emit_event(Closed(self, reason))

    # ------------------------------------------------------------------ timers
    def set_timer(self, kind: Timer, deadline: float) -> None:
        """Arm a timer. Pushing a deadline later leaves the wheel entry alone (it fires early, is
        re-armed then): an ACK stream that restarts the RTO costs no wheel work per ACK."""
        self._deadline[kind] = deadline
        handle = self._handle[kind]
        if handle >= 0:
            if self._armed[kind] <= deadline:
                return
            self.host.cancel_timer(handle)
        self._handle[kind] = self.host.schedule_timer(self.cid, kind, deadline)
        self._armed[kind] = deadline

    def clear_timer(self, kind: Timer) -> None:
        self._deadline[kind] = INF
        handle = self._handle[kind]
        if handle >= 0:
            self.host.cancel_timer(handle)
            self._handle[kind] = -1

    def cancel_all_timers(self) -> None:
        for kind in Timer:
            self.clear_timer(kind)

    def on_timer(self, kind: Timer, now: float) -> None:
        """The wheel fired `kind`. A lazily pushed-back deadline re-arms instead of acting."""
        self._handle[kind] = -1
        deadline = self._deadline[kind]
        if deadline == INF:
            return
        if deadline > now:
            self._handle[kind] = self.host.schedule_timer(self.cid, kind, deadline)
            self._armed[kind] = deadline
            return
        self._deadline[kind] = INF
        TIMER_ACTIONS[kind](self, now)

    # ------------------------------------------------------------------ user calls (RFC 9293 §3.10)
    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """SEND: queue data; returns how many bytes fitted in the send buffer."""
        if self.fin_queued or self.state in (S.CLOSED, S.CLOSING, S.LAST_ACK, S.TIME_WAIT):
            raise ConnectionError_("connection closing")
        if self.state is S.LISTEN:
            # SEND on a fully specified passive OPEN turns it active (RFC 9293 §3.10.2, LISTEN).
            self.passive = False
            self.set_state(S.SYN_SENT, "SEND", now)
            self.host.counters.inc("ActiveOpens")
            self.send_syn(now)
        n = self.send_buf.append(data)
        if n < len(data):
            self._want_writable = True
        if self.state in SENDING_STATES:
            self.host.request_push(self, now)  # sent by Host.take: with a close after it, one segment
        return n

    def receive(self, now: float, max_bytes: int = -1) -> bytes:
        """RECEIVE: take in-order data (all of it when max_bytes < 0), reopening the window."""
        data = self.recv.take(max_bytes) if self.recv.ready_len else b""
        if data and self.state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            self._maybe_window_update(now)
        return data

    def shutdown(self, now: float, read: bool = False, write: bool = True) -> None:
        """shutdown(2): SHUT_WR sends our FIN after pending data and keeps receiving; SHUT_RD sends nothing."""
        if read:
            self.read_closed = True
        if not write or self.fin_queued:
            return
        if self.state is S.SYN_SENT:
            self.finish(CloseReason.ABORTED, "shutdown in SYN-SENT", now)
            return
        self._queue_fin(now, "shutdown(SHUT_WR)")

    def close(self, now: float) -> None:
        """CLOSE (RFC 9293 §3.10.4) with Linux's choices: RST when unread data is discarded (SHLD-3)."""
        if self.orphan or self.state in (S.CLOSED, S.TIME_WAIT):
            return
        self.orphan = True
        self.read_closed = True
        if self.state in (S.SYN_SENT, S.LISTEN):
            self.finish(CloseReason.ABORTED, "CLOSE", now)
            return
        if self.recv.ready_len and self.state.synchronized:
            self.host.counters.inc("TCPAbortOnClose")
            self._reset(now, CloseReason.ABORTED, "close with unread data")
            return
        if self.linger0:
            self.abort(now)
            return
        if not self.fin_queued:
            self._queue_fin(now, "CLOSE")
        if self.state is S.FIN_WAIT_2:
            self.set_timer(Timer.FIN_WAIT_2, now + self.cfg.fin_timeout)

    def abort(self, now: float) -> None:
        """ABORT (RFC 9293 §3.10.5), also close() under SO_LINGER {1, 0}: RST, no TIME-WAIT."""
        if self.state in (S.CLOSED, S.TIME_WAIT):
            return
        self.orphan = True
        if self.state in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            self.host.counters.inc("TCPAbortOnLinger")
            self._reset(now, CloseReason.ABORTED, "abort")
        else:
            self.finish(CloseReason.ABORTED, "abort", now)

    def return_to_listen(self, now: float, cause: str) -> None:
        """A passive connection's handshake failed: back to LISTEN (RFC 9293 §3.10.7.4). An embryo
        of a listener simply goes away; a fully specified passive OPEN keeps listening."""
        if self.listen_port is not None:
            self.finish(CloseReason.RESET, cause, now, S.LISTEN)
            return
        self.set_state(S.LISTEN, cause, now)
        self.cancel_all_timers()
        self.snd_una = self.snd_nxt = self.snd_max = self.iss
        self.rcv_nxt = self.rcv_adv = self.irs = 0
        self.ts_ok = self.sack_ok = self.wscale_ok = False
        self.retries = 0

    def _queue_fin(self, now: float, cause: str) -> None:
        self.fin_queued = True
        state = self.state
        if state in (S.ESTABLISHED, S.SYN_RECEIVED):
            self.set_state(S.FIN_WAIT_1, cause, now)
        elif state is S.CLOSE_WAIT:
            self.set_state(S.LAST_ACK, cause, now)
        else:
            return
        self.host.request_push(self, now)  # the FIN rides on data queued in the same batch of calls

    def _reset(self, now: float, reason: CloseReason, cause: str) -> None:
        """Send <SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK> (Linux sets ACK) and drop the connection.
        SND.NXT is the highest sent (`snd_max`), as in `send_ack`. Data the application wrote just
        before goes first, as with a kernel socket, where write() has sent it already."""
        if self.host.take_push_request(self):
            self.push(now)
        self.emit(RST | ACK, self.snd_max, b"", now)
        self.finish(reason, cause, now)

    # ------------------------------------------------------------------ output
    def emit(self, flags: int, seq: int, payload: bytes, now: float, options: TcpOptions | None = None) -> None:
        """Put one segment on the host's output queue, ACK fields and options filled in."""
        la, lp, ra, rp = self.four_tuple
        if options is None:
            options = self._options(flags, now)
        window = 0
        ack = 0
        if flags & SYN:
            # Windows in SYNs are never scaled (RFC 7323 §2.2).
            window = min(self._window_free(), 65535)
            self.rcv_adv = seq_add(self.rcv_nxt, window)
        if flags & ACK:
            ack = self.rcv_nxt
            if not flags & SYN:
                window = self._advertise()
            self.last_ack_sent = ack
            self.host.ack_sent(self)
            if self._deadline[Timer.DELACK] != INF:
                self.clear_timer(Timer.DELACK)
        seg = Segment(la, ra, lp, rp, seq, ack, flags, window, 0, options, payload)
        self.host.transmit(seg, flags)

    def _options(self, flags: int, now: float) -> TcpOptions:
        if flags & SYN:
            return self._syn_options(now)
        if not self.ts_ok and not self.sack_ok:
            return _NO_OPTIONS
        timestamp = (self.tsval(now), self.ts_recent) if self.ts_ok else None
        blocks: tuple[tuple[int, int], ...] = ()
        if self.sack_ok and flags & ACK and self.recv.ooo:
            blocks = self.recv.sack_blocks(3 if self.ts_ok else 4)
        return TcpOptions(sack_blocks=blocks, timestamp=timestamp)

    def _syn_options(self, now: float) -> TcpOptions:
        cfg = self.cfg
        # In a SYN-ACK we only echo what the peer's SYN offered (RFC 7323 §1.3, RFC 2018 §2).
        answering = self.state is S.SYN_RECEIVED
        wscale = self.rcv_wscale if (cfg.window_scaling and (not answering or self.wscale_ok)) else None
        sack = cfg.sack and (not answering or self.sack_ok)
        ts: tuple[int, int] | None = None
        if cfg.timestamps and (not answering or self.ts_ok):
            ts = (self.tsval(now), self.ts_recent if answering else 0)
        return TcpOptions(mss=cfg.mss, wscale=wscale, sack_permitted=sack, timestamp=ts)

    def tsval(self, now: float) -> int:
        """Our timestamp clock: milliseconds plus a per-connection offset (RFC 7323 §5.4, §7.1)."""
        return (int(now * 1000.0) + self.ts_offset) & MASK

    def _window_free(self) -> int:
        return max(0, self.cfg.recv_buffer - self.recv.ready_len - self.recv.ooo_bytes)

    def _advertise(self) -> int:
        """The window field of an outgoing ACK. The right edge never moves left (RFC 9293 §3.8.6.2.2
        SHLD-14) and grows only by useful amounts (receiver SWS avoidance, SHLD-13)."""
        shift = self.rcv_wscale
        rcv_nxt = self.rcv_nxt
        right = seq_add(rcv_nxt, self._window_free())
        grow = seq_sub(right, self.rcv_adv)
        if grow < 0 or 0 < grow < min(self.cfg.recv_buffer // 2, self.snd_mss):
            right = self.rcv_adv
        wnd = max(0, seq_sub(right, rcv_nxt))
        field = min(wnd >> shift, 65535)
        if (field << shift) < wnd and field < 65535:
            field += 1  # round up: scaling must not pull the edge left (RFC 7323 §2.4)
        edge = seq_add(rcv_nxt, field << shift)
        if seq_gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        return field

    def send_ack(self, now: float) -> None:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with SND.NXT the highest sequence number sent: after
        a go-back-N rewind a lower SEQ would fall below the peer's RCV.NXT, making the ACK
        unacceptable there and its acknowledgment ignored (both ends can livelock that way)."""
        self.emit(ACK, self.snd_max, b"", now)

    def challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2 challenge ACK, at most one per `challenge_ack_interval` (§7)."""
        counters = self.host.counters
        if now - self._challenge_time < self.cfg.challenge_ack_interval:
            counters.inc("TCPACKSkippedChallenge")
            return
        self._challenge_time = now
        counters.inc("TCPChallengeACK")
        self.send_ack(now)

    def push(self, now: float) -> None:
        """Send what the windows, Nagle (RFC 9293 §3.7.4) and sender SWS avoidance (§3.8.6.2.1)
        allow, then our FIN once every byte before it has been sent."""
        if self.state not in SENDING_STATES:
            return
        buf = self.send_buf
        mss = self.snd_mss
        size = max(mss, self.host.tso_size)  # the link may split large segments itself (TSO)
        sent_any = False
        while True:
            avail = len(buf) - seq_sub(self.snd_nxt, buf.seq)
            if avail <= 0:
                if avail == 0 and self.fin_queued:
                    self._send_data(b"", FIN, now)  # a bare FIN goes out even into a closed window
                    sent_any = True
                break
            # In SACK recovery the pipe, not SND.NXT - SND.UNA, is what is in flight (RFC 6675 §5).
            flight = sack.pipe(self) if self.in_recovery and self.sack_ok else seq_sub(self.snd_nxt, self.snd_una)
            usable = min(self.snd_wnd, self.cc.cwnd) - flight
            n = min(avail, size, usable)
            if n <= 0:
                break
            last = n == avail
            if n < mss:
                if not last:
                    if n < self.max_snd_wnd // 2:
                        break  # a window-limited runt: wait for the window to open further
                elif self.cfg.nagle and self.snd_nxt != self.snd_una and not self.fin_queued:
                    break  # Nagle: a small segment waits while data is unacknowledged
            self._send_data(buf.slice(self.snd_nxt, n), FIN if last and self.fin_queued else 0, now)
            sent_any = True
        if (
            not sent_any
            and self.snd_nxt == self.snd_una
            and self.unsent() > 0
            and self._deadline[Timer.PERSIST] == INF
            and self.snd_wnd < self.snd_mss
        ):
            # Nothing in flight and the window keeps data back: probe it (RFC 9293 §3.8.6.1).
            self.set_timer(Timer.PERSIST, now + self.rtt.rto)

    def _send_data(self, payload: bytes, extra_flags: int, now: float) -> None:
        seq = self.snd_nxt
        flags = ACK | extra_flags
        if payload and seq_add(seq, len(payload)) == self.send_buf.end_seq():
            flags |= PSH
        n = len(payload) + (1 if extra_flags & FIN else 0)
        end = seq_add(seq, n)
        if extra_flags & FIN:
            self.fin_seq = seq_add(seq, len(payload))
        if seq_lt(seq, self.snd_max):
            self.host.counters.inc("RetransSegs")
        elif self._rtt_seq is None and not self.ts_ok:
            self._rtt_seq, self._rtt_time = end, now  # time this one (RFC 6298 §3, Karn)
        self.emit(flags, seq, payload, now)
        self.snd_nxt = end
        if seq_gt(end, self.snd_max):
            self.snd_max = end
        if self.first_unacked_time is None:
            self.first_unacked_time = now
        if self._deadline[Timer.RTX] == INF:
            self.set_timer(Timer.RTX, now + self.rtt.rto)

    def retransmit_first(self, now: float) -> None:
        """Resend one segment from SND.UNA (fast retransmit, partial ACK) without moving SND.NXT."""
        self.retransmit(self.snd_una, min(self.snd_mss, max(0, seq_sub(self.send_buf.end_seq(), self.snd_una))), now)

    def retransmit(self, seq: int, n: int, now: float) -> None:
        """Resend `n` bytes from `seq` (and our FIN if they end where it sits), SND.NXT untouched."""
        flags = ACK
        if self.fin_seq is not None and seq_add(seq, n) == self.fin_seq:
            flags |= FIN
        if n == 0 and not flags & FIN:
            return
        self.host.counters.inc("RetransSegs")
        self._rtt_seq = None  # Karn
        self.emit(flags, seq, self.send_buf.slice(seq, n), now)

    def send_syn(self, now: float) -> None:
        """(Re)send our SYN; a SYN-ACK once the peer's SYN is known (every state after SYN-SENT)."""
        flags = SYN | (0 if self.state is S.SYN_SENT else ACK)
        if self._syn_flags_sent == flags:  # not the SYN,ACK after our SYN in a simultaneous open
            self.host.counters.inc("RetransSegs")
            self.host.counters.inc("TCPSynRetrans")
        self._syn_flags_sent = flags
        self.emit(flags, self.iss, b"", now)
        self.snd_nxt = self.snd_max = seq_add(self.iss, 1)
        self.set_timer(Timer.RTX, now + self.rtt.rto)

    def _maybe_window_update(self, now: float) -> None:
        """After a read, tell the peer when the window opened by a useful amount (SHLD-13), but only
        if the window it knows is getting small: with room left, the next ACK carries the news
        (Linux's tcp_cleanup_rbuf does likewise). Requested, so a reply can carry it."""
        if self.rcv_wnd >= min(self.cfg.recv_buffer // 2, 16 * self.cfg.mss):
            return
        right = seq_add(self.rcv_nxt, self._window_free())
        if seq_sub(right, self.rcv_adv) >= min(self.cfg.recv_buffer // 2, 2 * self.cfg.mss):
            self.host.request_ack(self)

    def unsent(self) -> int:
        """Bytes in the send buffer not yet sent."""
        return len(self.send_buf) - seq_sub(self.snd_nxt, self.send_buf.seq)

    def note_writable(self) -> None:
        if self._want_writable and self.send_buf.free > 0:
            self._want_writable = False
            self.host.emit_event(Writable(self))




def _window_shift(buffer: int) -> int:
    """The smallest window-scale shift that lets 16 bits cover `buffer` (RFC 7323 §2.3, max 14)."""
    shift = 0
    while shift < 14 and (65535 << shift) < buffer:
        shift += 1
    return shift


_NO_OPTIONS = TcpOptions()
