"""The asyncio runtime around the sans-IO core: `Stack`, its transports and servers."""

from stack.runtime.pipe import PipeEnd, pipe_pair
from stack.runtime.stack import Server, Stack
from stack.runtime.transport import TcpTransport

__all__ = ["PipeEnd", "Server", "Stack", "TcpTransport", "pipe_pair"]
