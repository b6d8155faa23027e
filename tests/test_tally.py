"""The tally: metric updates kept as plain numbers read exactly as if made one by one."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.instruments import LATENCY_BUCKETS
from proxy.tally import Tally, observe_all, tally_for

# Bucket bounds exactly, between two bounds, past the last one, and zero.
OBSERVATIONS = (0.005, 0.0051, 0.25, 7.5, 300.0, 301.0, 0.0, 0.01, 0.01, 1.0)
CREATED = re.compile(rb"^.*_created.*\n", re.MULTILINE)


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Gauge, Histogram]:
    counter = Counter("t_bytes", "Bytes.", ["operation"], registry=registry)
    gauge = Gauge("t_in_flight", "In flight.", registry=registry)
    histogram = Histogram(
        "t_seconds", "Seconds.", ["operation"], buckets=LATENCY_BUCKETS, registry=registry
    )
    return counter, gauge, histogram


def _exposed(registry: CollectorRegistry) -> bytes:
    """The text format without `_created` lines (they say when each child was made)."""
    return CREATED.sub(b"", generate_latest(registry))


def test_a_scrape_reads_what_direct_updates_would_have_written() -> None:
    """Counters, a gauge that goes up and down, and histogram buckets (bounds included: an
    observation equal to a bound is in that bound's bucket) read the same either way."""
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    tally = tally_for(tallied)
    d_counter, d_gauge, d_histogram = _metrics(direct)
    t_counter, t_gauge, t_histogram = _metrics(tallied)
    seen: dict[str, list[float]] = {"images.generate": [], "models.list": []}
    for number, seconds in enumerate(OBSERVATIONS):
        operation = "models.list" if number % 3 else "images.generate"
        d_counter.labels(operation).inc(100 + number)
        tally.inc(t_counter.labels(operation), 100 + number)
        d_gauge.inc()
        tally.inc(t_gauge)
        d_histogram.labels(operation).observe(seconds)
        seen[operation].append(seconds)
        if number % 2:
            d_gauge.dec()
            tally.inc(t_gauge, -1.0)
    for operation, observed in seen.items():  # in the order the direct children were made
        observe_all(t_histogram.labels(operation), observed)
    assert _exposed(tallied) == _exposed(direct)
    assert b't_seconds_bucket{le="0.005",operation="images.generate"} 2.0' in _exposed(direct)
    # Read twice: the first collection folded everything, the second adds nothing more.
    assert _exposed(tallied) == _exposed(direct)


def test_updates_stay_in_the_tally_until_read_unless_folded_at_once() -> None:
    """Deferred, a child shows nothing until the registry is collected; immediate (metrics
    shared between processes, read from files), it shows each request as soon as it is done."""
    deferred = Tally(immediate=False)
    counter = Counter("t_requests", "Requests.", registry=None)
    deferred.inc(counter)
    deferred.done()
    assert counter._value.get() == 0.0
    deferred.fold()
    assert counter._value.get() == 1.0
    immediate = Tally(immediate=True)
    immediate.inc(counter, 2.0)
    immediate.done()
    assert counter._value.get() == 3.0


def test_batches_are_folded_before_the_tally_is_read() -> None:
    """A user's own batch is counted in by every collection, ahead of the tally's sums."""
    registry = CollectorRegistry()
    tally = tally_for(registry)
    counter = Counter("t_rows", "Rows.", registry=registry)
    kept: list[float] = []

    class Rows:
        def fold(self) -> None:
            counter.inc(sum(kept))
            kept.clear()

    tally.fold_first(Rows())
    kept.extend((1.0, 2.0))
    assert counter._value.get() == 0.0
    assert b"t_rows_total 3.0" in generate_latest(registry)
    assert b"t_rows_total 3.0" in generate_latest(registry)  # folded once, not twice
