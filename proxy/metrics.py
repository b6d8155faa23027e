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
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy.context import Facts, Outcome
from proxy.instruments import IMAGE_OPERATIONS, NONE, RequestMeter
from proxy.settings import MetricsSettings

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


def _images(meter: RequestMeter, facts: Facts, team: str, status: int) -> None:
    call = facts.call
    if call.operation not in IMAGE_OPERATIONS or not 200 <= status < 300:
        return
    model, size, quality = call.model or NONE, call.size or NONE, call.quality or NONE
    meter.tally.inc(meter.image(team, model, size, quality), call.n or 1)


def observe(meter: RequestMeter, request: web.Request, facts: Facts, outcome: Outcome) -> None:
    """Count one finished request from its facts, each measured once elsewhere."""
    tally = meter.tally
    operation, team = facts.operation or NONE, facts.team or NONE
    tally.inc(meter.request(operation, outcome.status, team))
    children = meter.operation(operation)
    tally.observe(children.duration, outcome.seconds)
    if outcome.bytes_in:
        tally.inc(children.bytes_in, outcome.bytes_in)
    if outcome.bytes_out:
        tally.inc(children.bytes_out, outcome.bytes_out)
    if facts.upstream_seconds is not None:
        tally.observe(children.upstream, facts.upstream_seconds)
    if facts.upstream_error is not None:
        tally.inc(meter.upstream_errors[facts.upstream_error])
    if meter.per_user and facts.user is not None:
        tally.inc(meter.user(team, facts.user))
    if operation in IMAGE_OPERATIONS:
        _images(meter, facts, team, outcome.status)


class RequestMetrics:
    """The metrics room as an observer of the request's life: `/v1` requests only."""

    def __init__(self, meter: RequestMeter) -> None:
        self._meter = meter

    def started(self, request: web.Request) -> None:
        """One more request in flight."""
        if request.path.startswith("/v1/"):
            tally = self._meter.tally
            tally.inc(self._meter.in_flight)
            tally.done()

    def finished(self, request: web.Request, facts: Facts, outcome: Outcome) -> None:
        """One fewer in flight, and the request counted."""
        if request.path.startswith("/v1/"):
            tally = self._meter.tally
            tally.inc(self._meter.in_flight, -1.0)
            observe(self._meter, request, facts, outcome)
            tally.done()


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
