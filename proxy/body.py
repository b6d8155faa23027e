"""The request body as it travels upstream: bytes already read, or a bounded live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import StreamReader

from proxy.errors import PayloadTooLarge


class StreamedBody:
    """Bytes already read ahead, then the rest of the client's body as it arrives.

    Nothing is held beyond one chunk. Counting on the way enforces the size limit on bodies
    whose length was not declared (chunked uploads): past `limit`, the stream stops with
    `PayloadTooLarge` and `overflowed` tells the upstream room why the send failed.
    """

    def __init__(self, prefix: bytes, content: StreamReader, limit: int) -> None:
        self._prefix = prefix
        self._content = content
        self.limit = limit
        self.received = 0
        self.overflowed = False
        self.added = 0  # bytes Tollgate put in on the way (a form field), beyond the client's

    def insert_before(self, marker: bytes, data: bytes) -> bool:
        """Put `data` in front of the first `marker` in the bytes read ahead, if it is there."""
        at = self._prefix.find(marker)
        if at < 0:
            return False
        self._prefix = self._prefix[:at] + data + self._prefix[at:]
        self.added += len(data)
        self.limit += len(data)
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, as aiohttp's client sends it."""
        if self._prefix:
            yield self._count(self._prefix)
        while True:
            chunk = await self._content.readany()
            if not chunk:
                return
            yield self._count(chunk)

    def _count(self, chunk: bytes) -> bytes:
        self.received += len(chunk)
        if self.received > self.limit:
            self.overflowed = True
            raise PayloadTooLarge(self.limit)
        return chunk


Body = bytes | StreamedBody
