"""Deterministic flow steering for a multi-queue TUN device: which worker owns which flow.

With N queues on one TUN device the kernel picks a queue for every packet it sends us. Left to
itself (tun's automatic steering) it looks the flow up in a table filled when userspace *writes* a
packet of that flow on a queue, keyed by a symmetric flow hash with a seed chosen at boot; an entry
idle for about 3 s expires and the table stops taking entries at 4096 flows. Past that the queue
comes from the hash, which userspace cannot compute. So a connection the stack opened, idle for a
few seconds or one of more than 4096 recent flows, can land on a worker that does not own it
(docs/workers.md measures this).

Instead we attach a steering program (TUNSETSTEERINGEBPF): an eBPF socket filter that returns a
hash of `src_port ^ dst_port` of a TCP packet (`flow_hash`); tun takes that value modulo
the number of queues. XOR is symmetric, so both directions of a flow map to one queue, and the
function is known to userspace: `owner(local_port, remote_port, n)` below is the same computation. A worker opening a
connection picks a local port the function maps to itself; a connection the kernel opens lands on
the worker its ports name. An ICMP or ICMPv6 error goes by the ports of the TCP header it quotes
(the segment we sent), so it reaches the worker whose connection it is about (RFC 5927 §5.1
checks, path MTU: stack.tcp.icmp). Anything else (echo, other protocols, an IPv6 packet with
extension headers) goes to queue 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import platform
import struct

__all__ = ["SteeringError", "attach_steering", "flow_hash", "load_steering_program", "owner"]

TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)

_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_SOCKET_FILTER = 1
_SYS_BPF = {"x86_64": 321, "aarch64": 280}

# Opcodes (linux/bpf.h, linux/bpf_common.h), spelled out once.
_MOV64_X = 0xBF
_MOV64_K = 0xB7
_ADD64_K = 0x07
_ADD64_X = 0x0F
_AND64_K = 0x57
_LSH64_K = 0x67
_RSH64_K = 0x77
_XOR64_X = 0xAF
_LD_ABS_B = 0x30
_LD_IND_B = 0x50
_LD_IND_H = 0x48
_MUL32_K = 0x24
_RSH32_K = 0x74
_JEQ_K = 0x15
_JNE_K = 0x55
_JGE_K = 0x35
_JA = 0x05
_EXIT = 0x95

_IPPROTO_TCP = 6
_IPPROTO_ICMP = 1
_IPPROTO_ICMPV6 = 58
_ICMP_ECHOREPLY, _ICMP_ECHO = 0, 8  # the ICMP messages that quote nothing
_ICMPV6_INFO = 128  # ICMPv6 types below are errors (RFC 4443 §2.1)


class SteeringError(OSError):
    """The kernel refused the steering program (no bpf(), verifier, or the ioctl)."""


# Fibonacci hashing: XOR alone would leave the low bit to the ports' parity, and Linux's connect()
# hands out ports of one parity first (with a fixed server port every flow would map to one queue
# of two). Multiplying by 2^32/phi and keeping the top 16 bits mixes every bit of the XOR into them.
_GOLDEN = 0x9E3779B1


def flow_hash(port_a: int, port_b: int) -> int:
    """The 16-bit value the steering program returns (tun takes it modulo the queue count)."""
    return (((port_a ^ port_b) * _GOLDEN) & 0xFFFFFFFF) >> 16


def owner(local_port: int, remote_port: int, workers: int) -> int:
    """The worker (queue) that owns a flow: what the steering program computes in the kernel."""
    return flow_hash(local_port, remote_port) % workers


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def _program() -> bytes:
    """flow_hash(src_port, dst_port) of an IPv4 or IPv6 TCP packet, or of the TCP header an ICMP or
    ICMPv6 error quotes; else 0. The packet starts at the IP header (a TUN device has no link
    layer). LD_ABS/LD_IND read through r6 = the skb; a read past the end ends the program with 0.
    r7 holds the offset of the TCP header whose ports count."""
    # Labels are resolved by position: (label, code, dst, src, target-label or off, imm).
    prog: list[tuple[str | None, int, int, int, str | int, int]] = [
        (None, _MOV64_X, 6, 1, 0, 0),              # r6 = skb
        (None, _LD_ABS_B, 0, 0, 0, 0),             # r0 = version | IHL
        (None, _MOV64_X, 7, 0, 0, 0),
        (None, _RSH64_K, 7, 0, 0, 4),              # r7 = version
        (None, _JEQ_K, 7, 0, "v6", 6),
        (None, _JNE_K, 7, 0, "none", 4),
        (None, _AND64_K, 0, 0, 0, 0x0F),           # IPv4: header length = IHL * 4
        (None, _LSH64_K, 0, 0, 0, 2),
        (None, _MOV64_X, 7, 0, 0, 0),
        (None, _LD_ABS_B, 0, 0, 0, 9),             # protocol
        (None, _JEQ_K, 0, 0, "ports", _IPPROTO_TCP),
        (None, _JNE_K, 0, 0, "none", _IPPROTO_ICMP),
        (None, _LD_IND_B, 0, 7, 0, 0),             # ICMP type
        (None, _JEQ_K, 0, 0, "none", _ICMP_ECHOREPLY),
        (None, _JEQ_K, 0, 0, "none", _ICMP_ECHO),
        (None, _ADD64_K, 7, 0, 0, 8),              # the quoted IPv4 header (RFC 792)
        (None, _LD_IND_B, 0, 7, 0, 9),             # its protocol
        (None, _JNE_K, 0, 0, "none", _IPPROTO_TCP),
        (None, _LD_IND_B, 0, 7, 0, 0),             # its IHL
        (None, _AND64_K, 0, 0, 0, 0x0F),
        (None, _LSH64_K, 0, 0, 0, 2),
        (None, _ADD64_X, 7, 0, 0, 0),              # the quoted TCP header
        (None, _JA, 0, 0, "ports", 0),
        ("v6", _MOV64_K, 7, 0, 0, 40),             # IPv6: fixed 40-byte header
        (None, _LD_ABS_B, 0, 0, 0, 6),             # next header
        (None, _JEQ_K, 0, 0, "ports", _IPPROTO_TCP),
        (None, _JNE_K, 0, 0, "none", _IPPROTO_ICMPV6),
        (None, _LD_ABS_B, 0, 0, 0, 40),            # ICMPv6 type
        (None, _JGE_K, 0, 0, "none", _ICMPV6_INFO),
        (None, _LD_ABS_B, 0, 0, 0, 48 + 6),        # the quoted IPv6 header's next header (RFC 4443 §3)
        (None, _JNE_K, 0, 0, "none", _IPPROTO_TCP),
        (None, _MOV64_K, 7, 0, 0, 48 + 40),        # the quoted TCP header
        ("ports", _LD_IND_H, 0, 7, 0, 0),          # source port
        (None, _MOV64_X, 8, 0, 0, 0),
        (None, _LD_IND_H, 0, 7, 0, 2),             # destination port
        (None, _XOR64_X, 0, 8, 0, 0),
        (None, _MUL32_K, 0, 0, 0, _GOLDEN - (1 << 32)),  # imm is signed 32 bits
        (None, _RSH32_K, 0, 0, 0, 16),
        (None, _EXIT, 0, 0, 0, 0),
        ("none", _MOV64_K, 0, 0, 0, 0),
        (None, _EXIT, 0, 0, 0, 0),
    ]
    labels = {label: i for i, (label, *_rest) in enumerate(prog) if label is not None}
    out = b""
    for i, (_label, code, dst, src, off, imm) in enumerate(prog):
        rel = labels[off] - i - 1 if isinstance(off, str) else off
        out += _insn(code, dst, src, rel, imm)
    return out


def load_steering_program() -> int:
    """Load the program with bpf(BPF_PROG_LOAD); returns its fd (close it after attaching)."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise SteeringError(f"no bpf() syscall number known for {platform.machine()}")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    insns = ctypes.create_string_buffer(_program())
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, zero-padded
    struct.pack_into("<IIQQIIQ", attr, 0, _BPF_PROG_TYPE_SOCKET_FILTER, len(insns.raw) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_), 1, len(log),
                     ctypes.addressof(log))
    fd = int(libc.syscall(nr, _BPF_PROG_LOAD, attr, len(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise SteeringError(err, f"bpf(BPF_PROG_LOAD) failed: {os.strerror(err)}"
                                 + (f" ({detail[-1]})" if detail else ""))
    return fd


def attach_steering(tun_fd: int) -> None:
    """Make the device behind `tun_fd` steer every packet with the program (any queue's fd will
    do: the program belongs to the device)."""
    prog = load_steering_program()
    try:
        fcntl.ioctl(tun_fd, TUNSETSTEERINGEBPF, struct.pack("i", prog))
    except OSError as exc:
        raise SteeringError(exc.errno, f"TUNSETSTEERINGEBPF failed: {exc.strerror}") from exc
    finally:
        os.close(prog)  # the device holds its own reference
