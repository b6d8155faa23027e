"""The log room: one canonical JSON line per request, written when the answer is done."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import BinaryIO

import orjson
import structlog
from aiohttp import web
from structlog.typing import EventDict, WrappedLogger

from proxy.context import Facts, Outcome
from proxy.settings import LogSettings

Logger = structlog.typing.FilteringBoundLogger
_JSON_LINE = orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z  # "...Z", not "...+00:00"


def _encode(logger: WrappedLogger, method: str, rendered: EventDict) -> bytes:
    """The console renderer's text (it arrives as `rendered`) as the bytes `BytesLogger` writes."""
    return str(rendered).encode("utf-8", errors="replace")


class _Stamp:
    """Adds `level` and an ISO-8601 UTC `timestamp`, formatting each second's text only once.

    structlog's add_log_level and TimeStamper do the same with a datetime per line; on the
    canonical line, written for every request, this one costs a fraction of that.
    """

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["level"] = method
        event["timestamp"] = f"{self._text}.{int((now - second) * 1_000_000):06d}Z"
        return event


def _level(settings: LogSettings) -> int:
    return logging.getLevelNamesMapping()[settings.level.upper()]


def build_logger(settings: LogSettings, stream: BinaryIO, *, exceptions: bool = True) -> Logger:
    """A logger of the app's own (no global structlog configuration).

    JSON goes through orjson straight to bytes, structlog's documented fast path. The request
    logger (`exceptions=False`) skips exception formatting: the canonical line never has one.
    """
    last: list[structlog.typing.Processor] = (
        [structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        if settings.format == "json"
        else [structlog.dev.ConsoleRenderer(colors=False), _encode]
    )
    first: list[structlog.typing.Processor] = [_Stamp()]
    if exceptions:
        first.append(structlog.processors.format_exc_info)
    level = _level(settings)
    lazy = structlog.wrap_logger(
        structlog.BytesLogger(stream),
        processors=[*first, *last],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
    logger: Logger = lazy.bind()  # a concrete logger: the lazy proxy would re-bind every call
    return logger


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond (`round(x, 3)` formats the float as text to round it:
    six times the cost, on two fields of every line)."""
    return int(seconds * 1_000_000 + 0.5) / 1000


def _fields(
    request: web.Request, facts: Facts, outcome: Outcome, line: dict[str, object]
) -> dict[str, object]:
    """The canonical line's fields put in `line`, in the order they are written (a new key
    goes last; a key already there keeps its place)."""
    line["request_id"] = facts.request_id
    line["method"] = request.method
    line["path"] = request.path
    line["key_id"] = facts.key_id
    line["user"] = facts.user
    line["team"] = facts.team
    line["operation"] = facts.operation
    line["model"] = facts.model
    line["status"] = outcome.status
    line["upstream_status"] = facts.upstream_status
    line["upstream_error"] = facts.upstream_error
    upstream = facts.upstream_seconds
    line["upstream_ms"] = None if upstream is None else _ms(upstream)
    line["aborted"] = facts.aborted
    line["cache"] = facts.cache
    line["moderation"] = facts.moderation
    line["quota"] = facts.quota
    line["quota_cost"] = facts.quota_cost
    line["quota_reason"] = facts.quota_reason
    line["quota_shadow"] = facts.quota_shadow
    line["quota_refund"] = facts.quota_refund
    line["auth"] = facts.auth
    line["client"] = facts.client
    line["bytes_in"] = outcome.bytes_in
    line["bytes_out"] = outcome.bytes_out
    line["latency_ms"] = _ms(outcome.seconds)
    return line


class CanonicalLine:
    """The log room as an observer of the request's life: one line at its end."""

    def __init__(self, log: Logger) -> None:
        self._log = log

    def started(self, request: web.Request) -> None:
        """Nothing is written until the end."""

    def finished(self, request: web.Request, facts: Facts, outcome: Outcome) -> None:
        """Write the request's one line."""
        self._log.info("request", **_fields(request, facts, outcome, {}))


class JsonCanonicalLine:
    """The JSON canonical line written without structlog's per-call machinery: the same
    fields and level, rendered by orjson as structlog's `JSONRenderer` does (every field is
    JSON already, so its fallback for other objects is never needed), then one write, as
    `BytesLogger` does. The same bytes for a third of the instructions. The time stamp is
    a UTC `datetime` that orjson writes itself, in `_Stamp`'s format (the microseconds left
    out when they are zero, as `datetime.isoformat` does): a fifth of `_Stamp`'s cost.

    The flush that `BytesLogger` makes after every line comes once the event loop's turn is
    over: the lines of all the answers finished in one turn leave in one system call, never
    later than the loop's next wait for I/O."""

    def __init__(self, stream: BinaryIO) -> None:
        # The keys of a line, in their order, from the first line written on: each line starts
        # as a copy (a clone of the dict's table), and putting values under keys already there
        # costs half what building a dict of thirty keys anew does.
        self._blank: dict[str, object] = {}
        self._write = stream.write
        self._stream_flush = stream.flush
        self._flush_due = False

    def started(self, request: web.Request) -> None:
        """Nothing is written until the end."""

    def finished(self, request: web.Request, facts: Facts, outcome: Outcome) -> None:
        """Write the request's one line."""
        event = _fields(request, facts, outcome, self._blank.copy())
        event["event"], event["level"] = "request", "info"
        event["timestamp"] = datetime.now(UTC)
        if len(self._blank) < len(event):
            self._blank = dict.fromkeys(event)
        self._write(orjson.dumps(event, default=repr, option=_JSON_LINE))
        if not self._flush_due:
            self._flush_due = True
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:  # called outside any event loop: nothing to wait for
                self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        self._stream_flush()


def canonical_line(settings: LogSettings, stream: BinaryIO) -> CanonicalLine | JsonCanonicalLine:
    """The request log's observer: JSON on the short path, anything else through structlog
    (which also drops the line when the level is above `info`)."""
    if settings.format == "json" and _level(settings) <= logging.INFO:
        return JsonCanonicalLine(stream)
    return CanonicalLine(build_logger(settings, stream, exceptions=False))
