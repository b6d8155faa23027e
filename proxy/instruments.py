"""Every metric Tollgate exports, named by Prometheus conventions, in a registry the app owns.

One class per room that counts something (the request, the cache, moderation, quota), each
made once per app with its label children resolved ahead where the values are known (status
classes, cache results, categories, limit kinds, error kinds, the policy's teams), so the hot
path does a dict lookup and an increment, and dashboards see zeros rather than no data. Label
values come from bounded sets; where a client could choose one (users, image parameters), only
the first few distinct values get their own label and the rest are counted as `other`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy.tally import tally_for

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0
)  # fmt: skip
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
CACHE_RESULTS = ("hit", "coalesced", "miss", "bypass")
MODERATION_RESULTS = ("clean", "flagged", "unavailable")
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
QUOTA_KINDS = ("requests", "images", "spend", "concurrent")
UPSTREAM_ERRORS = ("timeout", "connect", "reset", "5xx")
IMAGE_OPERATIONS = frozenset({"images.generate", "images.edit", "images.create_variation"})
IMAGE_LABEL_SETS = 64  # distinct (model, size, quality) label sets before `other`
OTHER = "other"
NONE = "none"


def current(child: Counter) -> float:
    """A counter's value in this process (for tests and reports, never on the hot path)."""
    for metric in child.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return sample.value
    return 0.0


class Capped:
    """Label values as they come, up to `limit` distinct ones; every later one is `other`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept: set[object] = set()

    def admit(self, value: object) -> bool:
        """Whether `value` has (or may now have) a label of its own."""
        if value in self._kept:
            return True
        if len(self._kept) >= self._limit:
            return False
        self._kept.add(value)
        return True


def _children(family: Counter, values: Iterable[str]) -> dict[str, Counter]:
    """The family's child per value, made now so each is exported (at zero) from the start."""
    return {value: family.labels(value) for value in values}


class CacheStats:
    """The cache room's counters: cacheable requests by result, and store failures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._tally = tally_for(registry)  # first: folded before the counters below are read
        requests = Counter(
            "tollgate_cache_requests",
            "Cacheable requests by how the cache answered: hit, coalesced (shared another "
            "request's fetch), miss, or bypass (the client said no-store).",
            ["result"],
            registry=registry,
        )
        self._hit, self._coalesced, self._miss, self._bypass = (
            requests.labels(result) for result in CACHE_RESULTS
        )
        self._store_errors = Counter(
            "tollgate_cache_store_errors",
            "Cache store calls that failed; the request went upstream instead.",
            registry=registry,
        )

    def hit(self) -> None:
        """An answer served from the store."""
        self._tally.inc(self._hit)
        self._tally.done()

    def coalesced(self) -> None:
        """An answer shared from an identical request's fetch."""
        self._tally.inc(self._coalesced)
        self._tally.done()

    def miss(self) -> None:
        """An answer fetched upstream for the cache."""
        self._tally.inc(self._miss)
        self._tally.done()

    def bypass(self) -> None:
        """A request the client kept out of the cache."""
        self._tally.inc(self._bypass)
        self._tally.done()

    def store_error(self) -> None:
        """A store call that failed and was stepped around."""
        self._store_errors.inc()

    @property
    def store_errors(self) -> float:
        """How many store calls failed in this process."""
        return current(self._store_errors)


class ModerationStats:
    """The moderation room's counters: checks by result, refusals by category."""

    def __init__(self, registry: CollectorRegistry) -> None:
        checks = Counter(
            "tollgate_moderation_checks",
            "Prompts checked before an image request: clean, flagged (refused) or unavailable.",
            ["result"],
            registry=registry,
        )
        self._results = _children(checks, MODERATION_RESULTS)
        self._flagged = Counter(
            "tollgate_moderation_flagged",
            "Refused prompts by the category that refused them (one prompt may count in several).",
            ["category"],
            registry=registry,
        )
        self._categories = _children(self._flagged, MODERATION_CATEGORIES)
        self._cached = Counter(
            "tollgate_moderation_cached_verdicts",
            "Checks answered from the verdict cache instead of the moderation endpoint.",
            registry=registry,
        )
        self._strikes_lost = Counter(
            "tollgate_moderation_strike_store_errors",
            "Strikes that could not be recorded because the store failed.",
            registry=registry,
        )

    def checked(self, result: str, categories: Sequence[str]) -> None:
        """One verdict, and the categories that made it a refusal."""
        self._results[result].inc()
        for category in categories:
            self._category(category).inc()

    def _category(self, name: str) -> Counter:
        child = self._categories.get(name)
        return child if child is not None else self._flagged.labels(OTHER)

    def cached(self) -> None:
        """A verdict that came from the cache."""
        self._cached.inc()

    def strike_lost(self) -> None:
        """A strike the store did not take."""
        self._strikes_lost.inc()

    @property
    def flagged(self) -> float:
        """How many prompts were refused in this process."""
        return current(self._results["flagged"])


class QuotaMetrics:
    """What the quota room reports: refusals by limit kind, fail-open bypasses, store errors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._refusals = Counter(
            "tollgate_quota_refusals",
            "Requests refused with 429 by the kind of limit they went over.",
            ["kind"],
            registry=registry,
        )
        self._kinds = _children(self._refusals, QUOTA_KINDS)
        self._bypasses = Counter(
            "tollgate_quota_bypasses",
            "Requests let through unchecked because the quota store failed (fail_open).",
            registry=registry,
        )
        self._store_errors = Counter(
            "tollgate_quota_store_errors",
            "Quota store calls that failed (fail_open or fail_closed alike).",
            registry=registry,
        )

    def refused(self, kind: str) -> None:
        """A 429 over a limit of `kind`: requests, images, spend or concurrent."""
        child = self._kinds.get(kind)
        (child if child is not None else self._refusals.labels(OTHER)).inc()

    def bypassed(self) -> None:
        """A request let through without a check because the store failed (fail_open)."""
        self._bypasses.inc()

    def store_error(self) -> None:
        """A quota store call that failed."""
        self._store_errors.inc()


class AuthMetrics:
    """Failed authentications, and requests refused because their address had too many."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._failures = Counter(
            "tollgate_auth_failures",
            "Requests with a missing or wrong client key or admin token.",
            registry=registry,
        )
        self._lockouts = Counter(
            "tollgate_auth_lockouts",
            "Requests refused with 429 because their address failed to authenticate too often.",
            registry=registry,
        )
        self._store_errors = Counter(
            "tollgate_auth_failure_store_errors",
            "Failed authentications left uncounted because the store failed.",
            registry=registry,
        )

    def failed(self) -> None:
        """One failed authentication."""
        self._failures.inc()

    def locked_out(self) -> None:
        """One request refused for its address's failures."""
        self._lockouts.inc()

    def store_error(self) -> None:
        """A failure the store did not count."""
        self._store_errors.inc()


class _PerOperation:
    """The children of one operation, resolved once."""

    __slots__ = ("bytes_in", "bytes_out", "duration", "upstream")

    def __init__(self, meter: RequestMeter, operation: str) -> None:
        self.duration = meter.duration.labels(operation)
        self.upstream = meter.upstream_duration.labels(operation)
        self.bytes_in = meter.bytes_in.labels(operation)
        self.bytes_out = meter.bytes_out.labels(operation)


class RequestMeter:
    """The request's own metrics: traffic, latency, bytes, images, upstream errors, users."""

    def __init__(
        self, registry: CollectorRegistry, top_users: int, teams: Iterable[str] = ()
    ) -> None:
        self.tally = tally_for(registry)  # first: folded before the metrics below are read
        self.requests = Counter(
            "tollgate_requests",
            "Requests to /v1 by operation, status class and team (`none` before they are known).",
            ["operation", "status_class", "team"],
            registry=registry,
        )
        self.duration = Histogram(
            "tollgate_request_duration_seconds",
            "Time from a request's arrival until its answer was sent, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "tollgate_upstream_duration_seconds",
            "Time from sending a request upstream until its answer's headers arrived.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "tollgate_requests_in_flight",
            "Requests to /v1 being answered now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.bytes_in = Counter(
            "tollgate_request_bytes",
            "Request body bytes received from clients, by operation.",
            ["operation"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "tollgate_response_bytes",
            "Response body bytes sent to clients, by operation.",
            ["operation"],
            registry=registry,
        )
        self.images = Counter(
            "tollgate_images_generated",
            "Images in successful image answers, by team, and model, size and quality as asked.",
            ["team", "model", "size", "quality"],
            registry=registry,
        )
        upstream_errors = Counter(
            "tollgate_upstream_errors",
            "Forwarded requests that failed upstream: timeout, connect, reset or 5xx.",
            ["kind"],
            registry=registry,
        )
        self.upstream_errors = _children(upstream_errors, UPSTREAM_ERRORS)
        self.users = Counter(
            "tollgate_user_requests",
            f"Requests to /v1 by team and user (the first {top_users} users; later ones as "
            "`other`). Exported only when per-user metrics are on.",
            ["team", "user"],
            registry=registry if top_users else None,
        )
        self.spend = Counter(
            "tollgate_spend_estimated_dollars",
            "Estimated upstream spend in US dollars by team, from Tollgate's price table, "
            "of the requests upstream answered with success.",
            ["team"],
            registry=registry,
        )
        self._spend_children = _children(self.spend, teams)
        self._top_users = Capped(top_users)
        self._image_sets = Capped(IMAGE_LABEL_SETS)
        self._operations: dict[str, _PerOperation] = {}
        self._requests: dict[tuple[str, int, str], Counter] = {}
        self._user_children: dict[tuple[str, str], Counter] = {}
        self._image_children: dict[tuple[str, str, str, str], Counter] = {}
        self.per_user = top_users > 0

    def operation(self, operation: str) -> _PerOperation:
        """The per-operation children, made on first use."""
        children = self._operations.get(operation)
        if children is None:
            children = self._operations[operation] = _PerOperation(self, operation)
        return children

    def request(self, operation: str, status: int, team: str) -> Counter:
        """The request counter's child for this operation, status class and team."""
        key = (operation, status // 100, team)
        child = self._requests.get(key)
        if child is None:
            status_class = STATUS_CLASSES[min(max(key[1], 1), 5) - 1]
            child = self._requests[key] = self.requests.labels(operation, status_class, team)
        return child

    def spent(self, team: str) -> Counter:
        """The team's estimated spend child (in dollars), made on first use."""
        child = self._spend_children.get(team)
        if child is None:
            child = self._spend_children[team] = self.spend.labels(team)
        return child

    def user(self, team: str, user: str) -> Counter:
        """The per-user child; past the cap, the team's `other`."""
        key = (team, user)
        child = self._user_children.get(key)
        if child is not None:
            return child
        if not self._top_users.admit(key):
            key = (team, OTHER)
            child = self._user_children.get(key)
            if child is not None:
                return child
        child = self._user_children[key] = self.users.labels(*key)
        return child

    def image(self, team: str, model: str, size: str, quality: str) -> Counter:
        """The images child for these parameters; past the cap, the team's `other`."""
        key = (team, model, size, quality)
        child = self._image_children.get(key)
        if child is not None:
            return child
        if not self._image_sets.admit(key[1:]):
            key = (team, OTHER, OTHER, OTHER)
            child = self._image_children.get(key)
            if child is not None:
                return child
        child = self._image_children[key] = self.images.labels(*key)
        return child


class Instruments:
    """All of the app's metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry, teams: Iterable[str], top_users: int) -> None:
        self.registry = registry
        self.requests = RequestMeter(registry, top_users, teams)
        self.cache = CacheStats(registry)
        self.moderation = ModerationStats(registry)
        self.quota = QuotaMetrics(registry)
        self.auth = AuthMetrics(registry)
