"""Typed keys and the per-request record that the pipeline rooms share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDictProxy

from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.auth import Principal
    from proxy.body import Body
    from proxy.call import Call
    from proxy.multipart import FormFile
    from proxy.quota import Billing


def new_request_id() -> str:
    """A fresh id in OpenAI's `req_<hex>` style, for answers upstream gave no id to."""
    return "req_" + os.urandom(16).hex()


@dataclass(slots=True)
class Outcome:
    """How a request ended, measured once for the log and the metrics rooms alike.
    Read-only by convention: frozen, its four fields cost an `object.__setattr__` each."""

    status: int  # 499 when the client hung up
    bytes_in: int
    bytes_out: int
    seconds: float


@dataclass(init=False)
class Facts:
    """What is known about one request, and what the rooms hand on to the ones after them.

    Filled in by each room, and written out by the log room. What is handed on (the principal,
    the call, the body and its fields and files, the rate-limit headers and billing) is set
    once each, by the room that works it out, before any room that reads it runs (reading one
    earlier is an AttributeError, a programming error, as a missing request key was). One
    record reached through one request key: every `request[KEY]` is a Python-level call.

    Made for every request, so only `started` is set at first: every other fact reads its
    class-level default until a room sets it (twenty assignments and a slotted dataclass's
    generated __init__ cost about five times as much, for facts most requests never set).
    """

    started: float
    # Handed on (see above):
    principal: Principal = field(repr=False)  # auth: whose key it is
    call: Call = field(repr=False)  # route: what it asks for
    fields: dict[str, Any] = field(repr=False)  # route: the body's JSON or form text fields
    files: tuple[FormFile, ...] = field(repr=False)  # route: a form's file parts
    body: Body = field(default=b"", repr=False)  # route: what goes upstream (enduser may add)
    rate_headers: dict[str, str] | None = field(default=None, repr=False)  # quota: x-ratelimit-*
    billing: Billing | None = field(default=None, repr=False)  # quota: of a charged request
    # What the log line and the metrics report, and what it is worked out from:
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    operation: str | None = None
    model: str | None = None
    upstream_status: int | None = None
    upstream_seconds: float | None = None  # until upstream's answer headers arrived
    upstream_error: str | None = None  # "timeout", "connect", "reset" or "5xx"
    aborted: str | None = None  # "client_gone" or "upstream_broke" once the answer has started
    known_id: str | None = None  # upstream's x-request-id, or Tollgate's once one was needed
    cache: str | None = None  # "hit", "miss" or "bypass" where the cache room took part
    upstream_headers: CIMultiDictProxy[str] | None = field(default=None, repr=False)  # as they came
    moderation: dict[str, object] | None = None  # verdict facts; never the prompt unless allowed
    outcome: Outcome | None = None  # set once, when the answer is done or abandoned
    quota: str | None = None  # "admitted", "refused", "bypassed" (fail_open), "unavailable"
    quota_cost: dict[str, int] | None = None  # what was charged: requests, images, spend_micros
    quota_reason: str | None = None  # the limit that refused, or why the store was skipped
    quota_shadow: list[str] | None = None  # shadow limits the request went over
    quota_refund: str | None = None  # why the charge was given back ("... (lost)" if it failed)
    auth: str | None = None  # "failed" (counted against the address) or "locked_out" (429)
    client: str | None = None  # the address it counted against, when `auth` is set

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def request_id(self) -> str:
        """The request's id: upstream's where it gave one; made here only when first needed."""
        if self.known_id is None:
            self.known_id = new_request_id()
        return self.known_id


# A room with nothing to do once the answer comes: it looks at the request, may change what is
# sent, and raises a `ProxyError` to refuse. Unlike a middleware it does not wrap the rest of
# the pipeline, so it costs no coroutine, before or while the answer is relayed.
Check = Callable[[web.Request], None]

SETTINGS = web.AppKey("settings", Settings)
FACTS = web.RequestKey("facts", Facts)
