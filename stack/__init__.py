"""tcpstack: a userspace TCP stack over a Linux TUN device.

Layers (imports point down only): cli -> observe -> runtime -> faults -> link -> tcp -> wire -> native.
The TCP core (`stack.tcp`) is sans-IO: it is handed segments, user calls and the current time, and
returns segments to send and events; it never reads a clock or touches a device.
"""

__version__ = "0.1.0"
