"""The request body as it travels upstream: bytes read, a bounded live stream, or a held form.

A held form is spooled whole (in memory up to 1 MiB, then on disk) before it is sent: image
edits and variations are checked as a whole form when validation is on (the mask comes after
the image). The spool is bounded by the request size limit and sent upstream as a stream with
a known Content-Length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from tempfile import SpooledTemporaryFile

from aiohttp import StreamReader
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from proxy.errors import InvalidRequest, PayloadTooLarge, ProxyError
from proxy.multipart import Delimiters

# What reading a client's body raises when the HTTP parser gives up on it half-way (a bad
# chunk): aiohttp's C parser raises its own refusal, the pure-Python one wraps it.
MALFORMED_BODY = (HttpProcessingError, RequestPayloadError)
BROKEN_BODY = "The request body is malformed: its chunked encoding could not be read."


class StreamedBody:
    """Bytes already read ahead, then the rest of the client's body as it arrives.

    Nothing is held beyond one chunk. Counting on the way enforces the size limit on bodies
    whose length was not declared (chunked uploads): past `limit`, the stream stops with
    `PayloadTooLarge`. A body the HTTP parser gives up on stops it with `InvalidRequest`.
    Either way `refused` keeps the error, telling the upstream room why the send failed.
    """

    def __init__(self, prefix: bytes, content: StreamReader, limit: int) -> None:
        self._prefix = prefix
        self._content = content
        self.limit = limit
        self.received = 0
        self.refused: ProxyError | None = None
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
            chunk = await self._next()
            if not chunk:
                return
            yield self._count(chunk)

    async def _next(self) -> bytes:
        try:
            return await self._content.readany()
        except MALFORMED_BODY:
            self.refused = InvalidRequest(BROKEN_BODY)
            raise self.refused from None

    def _count(self, chunk: bytes) -> bytes:
        self.received += len(chunk)
        if self.received > self.limit:
            self.refused = PayloadTooLarge(self.limit)
            raise self.refused
        return chunk


IN_MEMORY = 1024 * 1024
BLOCK = 64 * 1024


class SpooledBody:
    """A body read to its end and kept in a spool, sent on from there.

    Like `StreamedBody`, it can take a form part in front of its first part
    (`insert_before`), which `added` counts into the length sent upstream.
    """

    def __init__(self, spool: SpooledTemporaryFile[bytes], size: int) -> None:
        self._spool = spool
        self.size = size
        self.added = 0
        self._insert: tuple[int, bytes] | None = None

    @property
    def length(self) -> int:
        """The Content-Length of what is sent upstream."""
        return self.size + self.added

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes of the client's body from `offset`."""
        self._spool.seek(offset)
        return self._spool.read(max(0, min(size, self.size - offset)))

    def insert_before(self, marker: bytes, data: bytes) -> bool:
        """Put `data` in front of the first `marker` near the start, once."""
        at = self.read(0, BLOCK).find(marker)
        if at < 0 or self._insert is not None:
            return False
        self._insert = (at, data)
        self.added += len(data)
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, block by block, with the inserted bytes in their place."""
        at, data = self._insert or (self.size, b"")
        for block in self._blocks(0, at):
            yield block
        if data:
            yield data
        for block in self._blocks(at, self.size):
            yield block

    def _blocks(self, start: int, end: int) -> Iterator[bytes]:
        for offset in range(start, end, BLOCK):
            if self._spool.closed:  # the request ended while upstream was still reading
                return
            yield self.read(offset, min(BLOCK, end - offset))

    def close(self) -> None:
        """Drop the spool (and its file on disk, if it got that far)."""
        self._spool.close()


async def spool(body: StreamedBody, delimiters: Delimiters) -> SpooledBody:
    """Read all of `body` into a spool, noting the form's delimiters on the way.

    `body` enforces the size limit as it goes (413 past it); nothing has been sent yet.
    """
    # Not a `with`: the spool outlives this call, and `SpooledBody.close` (or the error) ends it.
    held: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(max_size=IN_MEMORY)  # noqa: SIM115
    try:
        async for chunk in body.chunks():
            held.write(chunk)
            delimiters.feed(chunk)
    except BaseException:
        held.close()
        raise
    return SpooledBody(held, body.received)


Body = bytes | StreamedBody | SpooledBody
