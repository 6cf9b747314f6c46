"""What the pcap and trace writers share: a stream they may or may not have opened themselves."""

from __future__ import annotations

from types import TracebackType
from typing import IO, Any, Self


class OwnedStream:
    """`close()` flushes, and closes the stream only if this writer opened it. Safe to call twice."""

    _stream: IO[Any] | None
    _owns: bool

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._stream is None:
            return
        try:
            self.flush()
        finally:
            if self._owns:
                self._stream.close()
            self._stream = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
