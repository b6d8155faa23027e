"""The end of a request, measured once: status, bytes in and out, and latency.

The metrics room (inner) and the log room (outer) both write out how a request ended; the
first to ask measures it and keeps it in `Facts.outcome`, so both report the same numbers.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.body import SpooledBody, StreamedBody
from proxy.context import Facts, Outcome
from proxy.route import BODY


def _bytes_in(request: web.Request) -> int:
    body = request.get(BODY)
    if isinstance(body, StreamedBody):
        return body.received
    if isinstance(body, SpooledBody):
        return body.size
    if isinstance(body, bytes):
        return len(body)
    return 0


def _bytes_out(response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    return response.content_length or 0


def _status(response: web.StreamResponse | None, facts: Facts) -> int:
    if response is None or facts.aborted == "client_gone":
        return 499
    return response.status


def finish(request: web.Request, facts: Facts, response: web.StreamResponse | None) -> Outcome:
    """The request's outcome: measured now if nobody has yet, else as it was measured."""
    if facts.outcome is None:
        facts.outcome = Outcome(
            status=_status(response, facts),
            bytes_in=_bytes_in(request),
            bytes_out=_bytes_out(response),
            seconds=time.perf_counter() - facts.started,
        )
    return facts.outcome
