"""The metrics room: observe each `/v1` request's facts, and serve them at `/metrics`.

The room sits between the log and errors rooms, so it sees every answer as the client gets it
(refusals included) and reads the same `Facts` and `Outcome` the canonical log line is written
from. `/metrics` is Prometheus's text format, on the main port or on a port of its own.

Worker processes: prometheus_client keeps values in memory per process, unless its value class
keeps them in files in a shared directory (its "multiprocess mode"), chosen process-wide before
the first metric is made. `tollgate serve` switches it on when TOLLGATE_METRICS__MULTIPROC_DIR
is set (`share_across_processes`), and `/metrics` then sums every process's files, so any
worker's scrape reports the whole server.
"""

from __future__ import annotations

import os
from collections import Counter as Counts
from collections.abc import AsyncIterator, Callable
from functools import partial
from itertools import compress
from operator import is_not, itemgetter
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy.call import Call
from proxy.context import Facts, Outcome
from proxy.instruments import IMAGE_OPERATIONS, NONE, RequestMeter
from proxy.prices import PriceTable, images_asked
from proxy.settings import MetricsSettings
from proxy.tally import observe_all

EXPOSITION = web.AppKey("exposition", CollectorRegistry)
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def share_across_processes(directory: Path) -> None:
    """Make this process keep its metrics in `directory`, for `/metrics` to sum with the
    other workers'. Process-wide (prometheus_client's own design), so call it once at start-up
    before the app is made, as `tollgate serve` does; the directory must start empty for each
    run of the server (a supervisor of workers clears it before starting them)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _shared_here(directory: Path) -> bool:
    return bool(getattr(values.ValueClass, "_multiprocess", False)) and os.environ.get(
        "PROMETHEUS_MULTIPROC_DIR"
    ) == str(directory)


def exposition_registry(settings: MetricsSettings, own: CollectorRegistry) -> CollectorRegistry:
    """What `/metrics` reads: the app's own registry, or every worker's files summed."""
    directory = settings.multiproc_dir
    if directory is None:
        return own
    if not _shared_here(directory):
        raise RuntimeError(
            "TOLLGATE_METRICS__MULTIPROC_DIR is set but this process does not keep its metrics "
            "there: call proxy.metrics.share_across_processes() first (tollgate serve does)"
        )
    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=str(directory))  # type: ignore[no-untyped-call]
    return summed


async def expose(request: web.Request) -> web.Response:
    """The metrics in Prometheus's text format."""
    body = generate_latest(request.app[EXPOSITION])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# What an image request asked for: model, size, quality, `n`, whether all its fields were
# read, and how many images it is priced at (see `proxy.prices.images_asked`).
Asked = tuple[str | None, str | None, str | None, int | None, bool, int]
# A finished request as the metrics count it (`RequestMetrics` keeps one per request).
Row = tuple[
    int,  # status
    str,  # team (`none` before it is known)
    float,  # seconds, arrival to answer
    int,  # request body bytes
    int,  # response body bytes
    float | None,  # seconds until upstream's answer headers, when it was asked
    str | None,  # upstream error kind
    Counter | None,  # the user's child of the per-user counter, when per-user metrics are on
    Asked | None,  # what an image request asked for
    int | None,  # upstream's status, when it answered
]
_STATUS_TEAM = itemgetter(0, 1)
_TEAM = itemgetter(1)
_SECONDS = itemgetter(2)
_BYTES_IN = itemgetter(3)
_BYTES_OUT = itemgetter(4)
_UPSTREAM_SECONDS = itemgetter(5)
_UPSTREAM_ERROR = itemgetter(6)
_USER = itemgetter(7)
_TEAM_IMAGES = itemgetter(1, 8)
_UPSTREAM_STATUS = itemgetter(9)
_STATUS = itemgetter(0)
_SUCCESS = frozenset(range(200, 300)).__contains__  # None, or any other status: False
_KNOWN = partial(is_not, None)
BATCH = 256  # rows kept before they are counted, when nobody reads the metrics sooner


class RequestMetrics:
    """The metrics room as an observer of the request's life: `/v1` requests only.

    Each finished request is kept as one row (a tuple of what it counts), by operation, and
    the rows are counted into the meter's children in bulk when the metrics are read or
    `BATCH` rows have piled up: per operation and label set, with `collections.Counter`,
    `sum` and `map` over `itemgetter`s (C-level passes), the same totals as an update per
    request for a fraction of the Python calls. With metrics shared between processes, every
    row is counted at once (another worker's scrape cannot fold this one's rows).

    The estimated spend is counted from the same rows: the price table's price of what each
    request asked for, when upstream answered it with success (what OpenAI bills).

    Per-user children are found as each request finishes, so the first users to come are
    the ones with labels of their own, as they would be counted one by one. Image label sets
    are admitted as a batch is counted: at the cap, among the sets first seen in one batch,
    those of one operation come before another's."""

    def __init__(self, meter: RequestMeter, prices: PriceTable) -> None:
        self._meter = meter
        self._prices = prices
        self._rows: dict[str, list[Row]] = {}
        self._kept = 0
        self._in_flight = 0
        self._batch = 1 if meter.tally.immediate else BATCH
        meter.tally.fold_first(self)

    def started(self, request: web.Request) -> None:
        """One more request in flight."""
        if request.path.startswith("/v1/"):
            self._in_flight += 1
            if self._batch == 1:
                self._meter.in_flight.set(self._in_flight)

    def finished(self, request: web.Request, facts: Facts, outcome: Outcome) -> None:
        """One fewer in flight, and the request kept to be counted."""
        if not request.path.startswith("/v1/"):
            return
        self._in_flight -= 1
        meter, operation, team = self._meter, facts.operation or NONE, facts.team or NONE
        asked = None
        if operation in IMAGE_OPERATIONS:
            call = facts.call
            images = images_asked(call, facts.fields)
            asked = (call.model, call.size, call.quality, call.n, call.fields_complete, images)
        row = (
            outcome.status,
            team,
            outcome.seconds,
            outcome.bytes_in,
            outcome.bytes_out,
            facts.upstream_seconds,
            facts.upstream_error,
            meter.user(team, facts.user) if meter.per_user and facts.user else None,
            asked,
            facts.upstream_status,
        )
        rows = self._rows.get(operation)
        if rows is None:
            rows = self._rows[operation] = []
        rows.append(row)
        self._kept += 1
        if self._kept >= self._batch:
            self.fold()

    def fold(self) -> None:
        """Count every kept row into the meter's children, and keep none."""
        rows, self._rows, self._kept = self._rows, {}, 0
        meter = self._meter
        meter.in_flight.set(self._in_flight)
        for operation, kept in rows.items():
            _count(meter, operation, kept)
            if operation in IMAGE_OPERATIONS:
                _count_images(meter, self._prices, operation, kept)
            else:
                _count_spend(meter, self._prices, operation, kept)


def _count(meter: RequestMeter, operation: str, rows: list[Row]) -> None:
    """One operation's rows into its children: requests, latency, bytes, upstream, users."""
    for (status, team), count in Counts(map(_STATUS_TEAM, rows)).items():
        meter.request(operation, status, team).inc(count)
    children = meter.operation(operation)
    observe_all(children.duration, list(map(_SECONDS, rows)))
    children.bytes_in.inc(sum(map(_BYTES_IN, rows)))
    children.bytes_out.inc(sum(map(_BYTES_OUT, rows)))
    observe_all(children.upstream, list(filter(_KNOWN, map(_UPSTREAM_SECONDS, rows))))
    errors = list(map(_UPSTREAM_ERROR, rows))
    if errors.count(None) < len(errors):  # a C-level pass finds none, the usual case
        for kind, count in Counts(filter(_KNOWN, errors)).items():
            meter.upstream_errors[kind].inc(count)
    if meter.per_user:
        for child, count in Counts(filter(_KNOWN, map(_USER, rows))).items():
            child.inc(count)


AskedCounts = Counts[tuple[str, Asked | None]]


def _asked(rows: list[Row], chosen: list[bool]) -> AskedCounts:
    """How many of the `chosen` rows asked for each thing, by team."""
    return Counts(map(_TEAM_IMAGES, compress(rows, chosen)))


def _count_images(meter: RequestMeter, prices: PriceTable, operation: str, rows: list[Row]) -> None:
    """Images in the successful answers, by team and the model, size and quality asked; and
    the estimated spend of those upstream answered with success (the same rows, unless
    Tollgate refused or broke off some upstream had answered: then counted apart)."""
    answered = list(map(_SUCCESS, map(_STATUS, rows)))
    billed = list(map(_SUCCESS, map(_UPSTREAM_STATUS, rows)))
    done = _asked(rows, answered)
    for (team, asked), count in done.items():
        if asked is not None:
            model, size, quality, n, _, _ = asked
            child = meter.image(team, model or NONE, size or NONE, quality or NONE)
            child.inc(count * (n or 1))
    for (team, asked), count in (done if billed == answered else _asked(rows, billed)).items():
        micros = 0 if asked is None else _image_price(prices, operation, asked)
        if micros:
            meter.spent(team).inc(count * micros / 1_000_000)


def _count_spend(meter: RequestMeter, prices: PriceTable, operation: str, rows: list[Row]) -> None:
    """The estimated spend of the rows upstream answered with success, by team, at the
    operation's price per request (none for most)."""
    per_request = prices.cost(Call(operation, False), 0)
    if not per_request:
        return
    billed = compress(map(_TEAM, rows), map(_SUCCESS, map(_UPSTREAM_STATUS, rows)))
    for team, count in Counts(billed).items():
        meter.spent(team).inc(count * per_request / 1_000_000)


def _image_price(prices: PriceTable, operation: str, asked: Asked) -> int:
    """Micro-dollars of one image request that asked for `asked`."""
    model, size, quality, n, complete, images = asked
    call = Call(operation, True, model, None, n, size, quality, fields_complete=complete)
    return prices.cost(call, images)


def _own_port_app(registry: CollectorRegistry) -> web.Application:
    app = web.Application()
    app[EXPOSITION] = registry
    app.router.add_get("/metrics", expose)
    return app


def serve_metrics(app: web.Application, settings: MetricsSettings, host: str) -> None:
    """Mount `/metrics` on the app, or on its own port while the app runs."""
    shared = settings.multiproc_dir is not None
    if settings.port is None:
        app.router.add_get("/metrics", expose)
    else:
        where = (settings.host or host, settings.port)
        app.cleanup_ctx.append(_own_port(app[EXPOSITION], *where, shared=shared))
    if settings.multiproc_dir is not None:
        app.cleanup_ctx.append(_leave_processes(settings.multiproc_dir))


def _own_port(registry: CollectorRegistry, host: str, port: int, *, shared: bool) -> CleanupContext:
    """`/metrics` on a port of its own; worker processes that sum their metrics all bind it
    (SO_REUSEPORT), since whichever one the kernel picks reports the whole server."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(_own_port_app(registry), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=shared or None).start()
        yield
        await runner.cleanup()

    return lifecycle


def _leave_processes(directory: Path) -> CleanupContext:
    """At shutdown, drop this process's live gauges (in-flight) from the shared directory."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]

    return lifecycle
