"""The router's HTTP server protocol: uvicorn's httptools protocol, with a response's head and
first body part sent in one write.

uvicorn writes a response's head when the app sends `http.response.start` and its body when
the app sends `http.response.body`: two system calls per JSON reply, and a client that wakes up
for the head often sleeps again until the body arrives. On a slow 2-core VM the router's socket
writes were about a quarter of its sampled time per sequential request, and the added latency
was 0.2-1.7% lower with one write than with two (up to 9% on a busy machine;
`bench/results/router_overhead.md`). So the transport holds a write back until the end of the
event-loop step it was made in, or until the next write, whichever comes first, and sends both
in one: never more than one write is held, for less than one step of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that sends each write together with the next one made in the same step of
    the event loop (a response's head with its body). Everything else is the wrapped one's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold `data` until the next write or the end of this loop step."""
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.writelines((held, data))  # one system call (uvloop: writev)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the pieces as one."""
        self.write(b"".join(list_of_data))

    def flush(self) -> None:
        """Send the write held back, if any."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close (the wrapped transport sends what it buffered)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is held."""
        self._held = None
        self._transport.abort()

    def write_eof(self) -> None:
        """Send what is held, then half-close."""
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent, the held write included."""
        held = len(self._held) if self._held is not None else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport` (`uvicorn.run(http=...)`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wrap the connection's transport, then let uvicorn set the connection up."""
        wrapped = CoalescingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, wrapped))  # uvloop's are not subclasses
