"""A request's life: its `Facts` opened at the start, its end measured once, handed on.

One middleware, the app's only one, opens the facts every room fills in, has a failure
answered (`proxy.errors.failure_answer`), notices a client that left, and when the answer is
done or abandoned measures status, bytes and latency once and hands that outcome to each
observer (the log line, the metrics), so all report the same numbers. (The failure's answer
is a plain call from here, not a middleware of its own: aiohttp calls each middleware through
a `functools.partial` and awaits one more coroutine, on every request.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.body import Body, SpooledBody, StreamedBody
from proxy.context import FACTS, Facts, Outcome
from proxy.errors import Answer


def _bytes_in(body: Body) -> int:
    if isinstance(body, StreamedBody):
        return body.received
    if isinstance(body, SpooledBody):
        return body.size
    return 0


def finish(request: web.Request, facts: Facts, response: web.StreamResponse | None) -> Outcome:
    """The request's outcome, measured now, and kept in `facts`: 499 when the client left."""
    body = facts.body
    bytes_in = len(body) if isinstance(body, bytes) else _bytes_in(body)  # bytes: the usual
    if response is None:
        status, bytes_out = 499, 0
    else:
        status = 499 if facts.aborted == "client_gone" else response.status
        bytes_out = response.body_length if response.prepared else response.content_length or 0
    facts.outcome = Outcome(status, bytes_in, bytes_out, time.perf_counter() - facts.started)
    return facts.outcome


class Observer(Protocol):
    """Something told of every request's start and end."""

    def started(self, request: web.Request) -> None:
        """The request arrived (its facts are open)."""

    def finished(self, request: web.Request, facts: Facts, outcome: Outcome) -> None:
        """The answer is done or abandoned; `outcome` is how it ended."""


def lifecycle_middleware(observers: Sequence[Observer], answer: Answer) -> Middleware:
    """Open each request's `Facts`; answer a failure with `answer`; at the request's end,
    measure it once and tell every observer."""

    @web.middleware
    async def lifecycle(request: web.Request, handler: Handler) -> web.StreamResponse:
        facts = request[FACTS] = Facts()
        for observer in observers:
            observer.started(request)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            facts.aborted = "client_gone"
            raise
        except Exception as exc:
            response = answer(request, exc)
        finally:
            outcome = finish(request, facts, response)
            for observer in observers:
                observer.finished(request, facts, outcome)
        return response

    return lifecycle
