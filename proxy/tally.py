"""The tally: metric updates kept as plain numbers until the metrics are read.

prometheus_client takes a lock for every increment and finds a histogram's bucket with a
Python loop. The tally adds to plain numbers instead (a dict entry per metric child), and
has batches of its users' own (`Batch`: the request metrics keep a row per request) counted
in, before every collection of the registry it is folded into, so `/metrics` shows exactly
what updates made one at a time would have shown. When the metrics are shared between worker
processes (files another process reads), a scrape of another worker cannot fold this one's
tally, so each update is folded at once (`immediate`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import Metric


class Batch(Protocol):
    """Updates of its own that a user keeps until the tally is folded."""

    def fold(self) -> None:
        """Count everything kept into the metrics, and start again from nothing."""


class Tally:
    """Counter and gauge increments not yet in their children, and batches to fold first."""

    def __init__(self, *, immediate: bool) -> None:
        self.immediate = immediate
        self._added: dict[Counter | Gauge, float] = {}
        self._batches: list[Batch] = []

    def fold_first(self, batch: Batch) -> None:
        """Have every fold of the tally fold `batch` too."""
        self._batches.append(batch)

    def inc(self, child: Counter | Gauge, amount: float = 1.0) -> None:
        """Add `amount` to a counter's or gauge's child (a gauge may take a negative one)."""
        added = self._added
        added[child] = added.get(child, 0.0) + amount

    def fold(self) -> None:
        """Move everything tallied into the prometheus children, and start again from zero."""
        for batch in self._batches:
            batch.fold()
        added, self._added = self._added, {}
        for child, amount in added.items():
            child.inc(amount)

    def done(self) -> None:
        """One request's updates are in: fold them now if another process may read them."""
        if self.immediate:
            self.fold()


def observe_all(child: Histogram, observed: list[float]) -> None:
    """What `child.observe(value)` for each value does, at the cost of a few C-level passes.

    prometheus_client offers no public way to add n observations at once; its child keeps a
    value per bucket and one for the sum (`_buckets`, `_sum`), the ones `observe` adds to. A
    value goes in the first bucket whose upper bound is at least the value, so a bucket holds
    the values up to its bound less those up to the bound before: `observed` is sorted (in
    place) and bisected once per bucket, a sixth of what finding each value's bucket costs.
    The sum is taken first, in the order observed, as one `observe` after another adds."""
    if not observed:
        return
    total = sum(observed)
    observed.sort()
    counted = 0
    for bucket, bound in zip(child._buckets, child._upper_bounds, strict=True):
        upto = bisect_right(observed, bound)
        if upto > counted:
            bucket.inc(upto - counted)
            counted = upto
    child._sum.inc(total)


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
