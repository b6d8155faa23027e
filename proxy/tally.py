"""The tally: per-request metric updates kept as plain numbers until the metrics are read.

prometheus_client takes a lock for every increment and finds a histogram's bucket with a
Python loop; with a handful of updates per request that was about 50k instructions on a
request whose forwarding costs 480k. The tally adds to plain numbers instead (a dict entry per
metric child, a `bisect` for the bucket) and moves the sums into the same prometheus children
when they are read: before every collection of the registry it is folded into, so `/metrics`
shows exactly what it showed before. When the metrics are shared between worker processes
(files another process reads), a scrape of another worker cannot fold this one's tally, so
each update is folded at once (`immediate`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import Metric


class _Observed:
    """One histogram child's observations since the last fold."""

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.buckets = [0] * len(bounds)
        self.total = 0.0


class Tally:
    """Counter and gauge increments and histogram observations, not yet in their children."""

    def __init__(self, *, immediate: bool) -> None:
        self.immediate = immediate
        self._added: dict[Counter | Gauge, float] = {}
        self._observed: dict[Histogram, _Observed] = {}

    def inc(self, child: Counter | Gauge, amount: float = 1.0) -> None:
        """Add `amount` to a counter's or gauge's child (a gauge may take a negative one)."""
        added = self._added
        added[child] = added.get(child, 0.0) + amount

    def observe(self, child: Histogram, value: float) -> None:
        """One observation of a histogram's child (the bucket is the first bound >= value)."""
        observed = self._observed.get(child)
        if observed is None:
            observed = self._observed[child] = _Observed(child._upper_bounds)
        observed.buckets[bisect_left(observed.bounds, value)] += 1
        observed.total += value

    def fold(self) -> None:
        """Move everything tallied into the prometheus children, and start again from zero."""
        added, self._added = self._added, {}
        for child, amount in added.items():
            child.inc(amount)
        observed, self._observed = self._observed, {}
        for histogram, seen in observed.items():
            _fold_histogram(histogram, seen)

    def done(self) -> None:
        """One request's updates are in: fold them now if another process may read them."""
        if self.immediate:
            self.fold()


def _fold_histogram(child: Histogram, seen: _Observed) -> None:
    """prometheus_client offers no public way to add n observations at once; its child keeps
    a value per bucket and one for the sum (`_buckets`, `_sum`), the ones `observe` adds to."""
    buckets = child._buckets
    for index, count in enumerate(seen.buckets):
        if count:
            buckets[index].inc(count)
    child._sum.inc(seen.total)


class _FoldFirst:
    """Registered ahead of the metrics it folds into, so every collection sees them whole."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    def describe(self) -> Iterable[Metric]:
        """No metrics of its own."""
        return ()

    def collect(self) -> Iterable[Metric]:
        """Fold the tally; yield nothing."""
        self._tally.fold()
        return ()


def tally_for(registry: CollectorRegistry) -> Tally:
    """A tally folded before each collection of `registry`. Register metrics after calling
    this: a registry collects in the order things were registered."""
    shared = bool(getattr(values.ValueClass, "_multiprocess", False))
    tally = Tally(immediate=shared)
    registry.register(_FoldFirst(tally))
    return tally
