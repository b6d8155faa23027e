"""Serving the app over HTTP/1.1: aiohttp's runner, with what its parser refuses answered as
OpenAI errors, under the header limits from settings.

aiohttp's HTTP parser refuses a malformed request (conflicting Content-Length and
Transfer-Encoding, a bad chunk, too many or too long headers, an invalid method, version or
request target) before any middleware runs, and answers it with a plain-text 400 of its own
that echoes the offending bytes (a header value may be a key). aiohttp offers no hook for that
answer (aio-libs/aiohttp#3287), so this module subclasses its connection protocol
(`RequestHandler.handle_error`) and the two classes that build it (`Server`, `AppRunner`).
Both `tollgate serve` and the test servers run through `TollgateRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import _ErrInfo

from proxy.context import SETTINGS, new_request_id
from proxy.errors import ProxyError, render
from proxy.settings import HeaderLimits, Settings

_TOO_MANY_HEADERS = "Too many headers"


def _framing(exc: BaseException | None) -> str:
    """What was wrong with the request's framing, in words that echo none of its bytes."""
    said = getattr(exc, "message", "") or ""
    if "Content-Length" in said and "Transfer-Encoding" in said:
        return "A request may not have both Content-Length and Transfer-Encoding."
    if "Duplicate" in said:
        return "A header that may be sent once (Host, Content-Length) was sent more than once."
    if isinstance(exc, TransferEncodingError) or "chunk" in said.lower():
        return "The chunked request body is malformed."
    if "Transfer-Encoding" in said:
        return "Transfer-Encoding must be exactly `chunked`."
    if "Content-Length" in said:
        return "Content-Length must be a plain decimal number."
    if "Host" in said:
        return "An HTTP/1.1 request needs exactly one Host header."
    return "The HTTP request is malformed."


def parser_refusal(exc: BaseException | None, limits: HeaderLimits) -> ProxyError:
    """The OpenAI error for a request aiohttp's parser refused with `exc`."""
    if isinstance(exc, LineTooLong) or _TOO_MANY_HEADERS in str(getattr(exc, "message", "")):
        return ProxyError(
            431,
            f"The request line and headers are too large: each may be at most "
            f"{limits.max_line_bytes} bytes, and at most {limits.max_count} headers.",
            code="request_headers_too_large",
        )
    if isinstance(exc, BadHttpMethod):
        return ProxyError(400, "The HTTP method is invalid.")
    if isinstance(exc, InvalidURLError):
        return ProxyError(400, "The request target is not a valid URL path.")
    if isinstance(exc, BadStatusLine):
        return ProxyError(400, "The HTTP request line is invalid.")
    if isinstance(exc, InvalidHeader):
        return ProxyError(400, "A header of the request is invalid.")
    return ProxyError(400, _framing(exc))


def _failure(status: int, exc: BaseException | None, limits: HeaderLimits) -> ProxyError:
    """OpenAI's error for whatever reached aiohttp's last-resort handler."""
    if isinstance(exc, ProxyError):  # a refusal from outside the middlewares (`Expect`)
        return exc
    if isinstance(exc, HttpProcessingError) or status == 400:
        return parser_refusal(exc, limits)
    if status == 504:
        return ProxyError(504, "The server did not answer in time.", type="server_error")
    return ProxyError(500, "The server had an error processing your request.", type="server_error")


_FINISH_RESPONSE = web.RequestHandler.finish_response
_DATA_RECEIVED = web.RequestHandler.data_received


class OpenAIProtocol(web.RequestHandler):
    """aiohttp's HTTP/1.1 connection, answering what it refuses itself in OpenAI's shape."""

    __slots__ = ("limits",)

    def __init__(self, manager: web.Server, *, limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """OpenAI's error body instead of aiohttp's plain text, which echoes request bytes.

        Parser refusals are the client's doing, logged at debug level without their bytes;
        anything else keeps aiohttp's error log.
        """
        if isinstance(exc, HttpProcessingError | ProxyError):
            self.logger.debug("Refused a malformed request: %s", type(exc).__name__)
        else:
            self.log_exception("Error handling request", exc_info=exc)
        if request.writer.output_size > 0:  # an answer has begun: nothing more can be said
            raise ConnectionError("Response is sent already, cannot send an error answer")
        response = render(_failure(status, exc, self.limits), new_request_id())
        response.force_close()
        return response

    def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        """Send `resp`; an aiohttp refusal raised outside the middlewares (an unknown
        `Expect`, say) is put in OpenAI's shape first. (Both overrides here run for every
        request: each hands back or calls the parent's method as it is, without `super()`
        or a coroutine of its own.)"""
        # `Exception` first: `web.HTTPException` is an ABC, whose isinstance runs Python code.
        if (
            isinstance(resp, Exception)
            and isinstance(resp, web.HTTPException)
            and resp.status >= 400
        ):
            kind = "server_error" if resp.status >= 500 else "invalid_request_error"
            resp = render(ProxyError(resp.status, resp.reason, type=kind), new_request_id())
        return _FINISH_RESPONSE(self, request, resp, start_time)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a body it refuses half-way fails the request reading it.

        llhttp (aiohttp's C parser) queues the refusal of a bad chunk behind the request whose
        body it is, which would then wait for the rest of that body for ever. Ending that
        body with the refusal lets the request answer 400 now; the connection closes after.
        """
        messages = self._messages
        queued = len(messages)
        _DATA_RECEIVED(self, data)
        if len(messages) <= queued:
            return
        reading = self._current_request
        if reading is None:
            return
        refused, _ = messages[-1]
        if isinstance(refused, _ErrInfo) and not reading.content.is_eof():
            reading.content.set_exception(refused.exc)
            self._lingering_time = 0.0  # nothing more of that body is worth reading
            self.close()


class OpenAIServer(web.Server):
    """aiohttp's low-level server, making `OpenAIProtocol` connections."""

    def __init__(self, *args: Any, limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> web.RequestHandler:
        return OpenAIProtocol(self, loop=self._loop, limits=self.limits, **self._kwargs)


def _parser_limits(limits: HeaderLimits) -> dict[str, int]:
    """aiohttp's names for the header limits."""
    return {
        "max_line_size": limits.max_line_bytes,
        "max_field_size": limits.max_line_bytes,
        "max_headers": limits.max_count,
    }


class TollgateRunner(web.AppRunner):
    """`AppRunner` for a Tollgate app: OpenAI-shaped parser refusals, header limits from the
    app's settings. Takes `AppRunner`'s keyword arguments."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        limits = self.app[SETTINGS].headers
        kwargs = plain._kwargs | _parser_limits(limits)
        return OpenAIServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            limits=limits,
            **kwargs,
        )


async def _serve_until_stopped(
    runner: TollgateRunner, settings: Settings, reuse_port: bool
) -> None:
    """Listen until cancelled (SIGTERM and SIGINT cancel it), then stop gracefully."""
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(
    app: web.Application, settings: Settings, loop: asyncio.AbstractEventLoop, *, reuse_port: bool
) -> None:
    """Run `app` on `loop` until SIGTERM or SIGINT; requests in flight get the grace period.

    What `web.run_app` does, with `TollgateRunner` in place of its `AppRunner`.
    """
    runner = TollgateRunner(
        app,
        handle_signals=True,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_grace,
    )
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve_until_stopped(runner, settings, reuse_port))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
