"""The asyncio runtime around the sans-IO core: `Stack`, its transports and servers."""

from stack.runtime.stack import Server, Stack
from stack.runtime.transport import TcpTransport

__all__ = ["Server", "Stack", "TcpTransport"]
