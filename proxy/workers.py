"""Serving: one process, or a pre-fork master keeping N worker processes on one port.

Each worker is a whole Tollgate (its own event loop, upstream pool and store client) bound
with SO_REUSEPORT, so the kernel spreads connections across them. The master opens nothing
itself: it forks the workers, forwards SIGTERM and SIGINT to them, and waits. A worker that is
told to stop closes its listener, lets the requests in flight (streams included) finish
within the grace period, and exits; the master exits 0 once every worker has.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from aiohttp import web
from prometheus_client.multiprocess import mark_process_dead

from proxy.metrics import share_across_processes
from proxy.server import serve
from proxy.settings import Settings

AppFactory = Callable[[Settings], web.Application]
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


class WorkerError(RuntimeError):
    """The settings do not allow the number of workers asked for."""


def check_workers(settings: Settings, workers: int) -> None:
    """More than one worker needs a shared store: per-process counts would not add up."""
    if workers < 1:
        raise WorkerError("--workers must be at least 1")
    if workers > 1 and settings.store == "memory":
        raise WorkerError(
            "--workers above 1 needs TOLLGATE_STORE=redis: with the memory store each worker "
            "would keep its own keys, quotas and cache"
        )


def share_metrics(settings: Settings, workers: int) -> Settings:
    """Sum every worker's metrics in one directory. One process just joins the configured one
    (whoever started the set empties it); a master of several empties the configured one for
    this run, or makes a fresh temporary one when none is set."""
    directory = settings.metrics.multiproc_dir
    if workers == 1:
        if directory is not None:
            share_across_processes(directory)
        return settings
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="tollgate-metrics-"))
    for stale in directory.glob("*.db"):
        stale.unlink()
    share_across_processes(directory)
    metrics = settings.metrics.model_copy(update={"multiproc_dir": directory})
    return settings.model_copy(update={"metrics": metrics})


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed, the standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_one(settings: Settings, factory: AppFactory, *, reuse_port: bool = False) -> None:
    """Run one Tollgate in this process until SIGTERM or SIGINT, then stop gracefully."""
    app = factory(settings)
    _settle_start_up()
    serve(app, settings, _event_loop(), reuse_port=reuse_port)


def _settle_start_up() -> None:
    """Keep what start-up made (modules, request schemas, the app) out of the collector's
    full passes: they live as long as the process, and with them every full collection
    walked the whole heap while requests waited (p99 40 ms against 7 ms frozen, at 32
    connections on the bench's one worker)."""
    gc.collect()
    gc.freeze()


def _die_with(master: int) -> None:
    """Have Linux send this worker SIGTERM when its master dies, however it dies (SIGKILL
    included), so no worker keeps serving unmanaged; if the master is already gone, stop."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux: no such request
        return
    if os.getppid() != master:
        os._exit(0)


def _start_worker(settings: Settings, factory: AppFactory) -> int:
    master = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker
        _die_with(master)
        code = 0
        try:
            serve_one(settings, factory, reuse_port=True)
        except BaseException:  # pragma: no cover - reported by the master as a failed worker
            code = 1
        os._exit(code)
    return pid


def _forget_gauges(settings: Settings, pid: int) -> None:
    """A worker that died without its own clean-up leaves live gauges; drop them."""
    if settings.metrics.multiproc_dir is not None:
        mark_process_dead(pid, str(settings.metrics.multiproc_dir))  # type: ignore[no-untyped-call]


def serve_many(settings: Settings, factory: AppFactory, workers: int) -> int:
    """Fork `workers` processes on one port; forward stop signals; 0 when all stopped cleanly."""
    children = [_start_worker(settings, factory) for _ in range(workers)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            failed += 1
            _forget_gauges(settings, pid)
    if failed:
        print(f"tollgate: {failed} worker(s) did not stop cleanly", file=sys.stderr)
    return 1 if failed else 0
