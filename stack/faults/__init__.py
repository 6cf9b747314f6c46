"""Fault injection: break TCP on purpose, one rule per line.

Grammar (one rule; a scenario file holds one per line, ``#`` starts a comment, blank lines are
ignored)::

    rule      = ACTION DIRECTION [POSITIONAL] { KEY=VALUE }
    DIRECTION = in       toward the stack          | out   from the stack toward the peer

    ACTION (and its own parameters)
      drop                                  lose the segment
      delay DURATION [jitter=DURATION]      extra delay, +/- uniform jitter (clamped at 0)
      dup [copies=N]                        N extra copies right behind it (default 1)
      reorder [hold=N] [timeout=DURATION]   hold it until N later segments in the same direction
                                            crossed (default 1), or at most timeout (default 1s)
      corrupt [bits=N]                      flip N bits (default 1) of the TCP header/payload:
                                            the receiver counts a TCP checksum error and drops it
      truncate len=N | cut=N                keep the first N bytes of the packet / remove the last N
      rewrite CHANGE...                     window=N  seq+=N seq-=N  ack+=N ack-=N
                                            flags=F (set exactly)  flags+=F (add)  flags-=F (clear)
      inject rst|syn|ack [seq=+N|-N]        send one more segment behind the matched one, same
                                            direction and 4-tuple, SEQ = matched SEQ + SEG.LEN
                                            (the sender's next seq, i.e. what the receiver expects
                                            when nothing is missing) + N; default seq=+0

    MATCHERS (any rule; all given must hold)
      flags=F        any of these flags set (letters F S R P A U E C; '.' = none); in a rewrite,
                     where flags= is the change, spell it has=F
      flags==F       exactly these flags
      port=N  sport=N  dport=N       either port / source port / destination port
      addr=A  src=A  dst=A           either address / source / destination: an address or a
                                     prefix of either family (198.18.0.1, 2001:2::/64)
      payload=yes|no                 carries data or not
      state=S[,S...]                 the stack's connection is in one of these states when the
                                     segment is sent, not when it arrives (TIME-WAIT, FIN-WAIT-1,
                                     ...; ss names like ESTAB work too; CLOSED also means "no
                                     connection")
      after=DURATION before=DURATION time window since the engine started: after <= t < before
      nth=N          only the Nth matching segment      first=N   the first N
      every=K        every Kth (K, 2K, ...)             (counted per rule, all connections)
      p=P [seed=S]   probability (0.1 or 10%), drawn after nth/first/every; seed= makes the rule's
                     own RNG reproducible (without it, it is seeded from the engine's seed)
      proto=icmp     the rule acts on ICMP and ICMPv6 datagrams instead of TCP segments (a rule
                     without it never touches ICMP): drop, delay, dup, corrupt and truncate, with
                     the matchers that read no TCP field (after, before, nth, first, every, p)

    DURATION = NUMBER[us|ms|s], e.g. 200us 50ms 1.5s (a bare number is seconds)

Examples::

    drop out state=TIME-WAIT nth=1      # lose the stack's first ACK sent in TIME-WAIT
    drop in flags=F nth=1               # lose the peer's first FIN
    delay out 50ms jitter=10ms
    dup in p=0.1 seed=7
    reorder in flags=F hold=1           # the FIN overtakes nothing; the next segment overtakes it
    corrupt in p=0.01 seed=3
    inject in rst seq=+0 flags=F        # an exact RST right behind the peer's FIN
    rewrite out has=S window=0
    drop in proto=icmp nth=1            # lose the first ICMP message toward the stack (a PTB, a ping)

Rules apply in order as a pipeline (every matching rule applies, not just the first); see
`stack.faults.engine` for the details. A bad rule raises `FaultRuleError` (1-based column, and the
line for a file) before anything runs.
"""

from stack.faults.engine import COUNTER_NAMES, Crossing, FaultEngine, Listener, Release, StateOf
from stack.faults.rules import (
    ACTIONS,
    Action,
    Corrupt,
    Delay,
    Drop,
    Dup,
    FaultRule,
    FaultRuleError,
    Inject,
    Reorder,
    Rewrite,
    Truncate,
    format_duration,
    load_rules,
    parse_duration,
    parse_rule,
    parse_rules,
)

__all__ = [
    "ACTIONS",
    "COUNTER_NAMES",
    "Action",
    "Corrupt",
    "Crossing",
    "Delay",
    "Drop",
    "Dup",
    "FaultEngine",
    "FaultRule",
    "FaultRuleError",
    "Inject",
    "Listener",
    "Release",
    "Reorder",
    "Rewrite",
    "StateOf",
    "Truncate",
    "format_duration",
    "load_rules",
    "parse_duration",
    "parse_rule",
    "parse_rules",
]
