"""Benchmarks of the stack against the Linux kernel over TUN (`tcpstack bench ...`).

`cps`: short connections per second in four shapes (see stack/bench/cps.py); `loadgen`: the
kernel-side load generator and echo server they use. Results are measured and printed, never
asserted.
"""
