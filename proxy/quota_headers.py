"""The `x-ratelimit-*` headers in OpenAI's format, and `Retry-After`.

For each kind a request met (requests, images, spend) the headers show the most
constraining enforced limit: the one with the least remaining, and of those the one furthest
from being whole again. Resets read like OpenAI's ("20ms", "1s", "6m0s", "1h0m0s"; Go's
duration format); spend amounts are US dollars. Shadow and concurrency limits are not shown.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from proxy.context import Facts
from proxy.limiter import NEVER, Reading
from proxy.limits import Kind, dollars


def duration(ms: int) -> str:
    """Milliseconds the way OpenAI's reset headers write them: "20ms", "1.5s", "6m0s"."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0") if millis else str(seconds)
    text += "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _amount(kind: Kind, units: int) -> str:
    return dollars(units) if kind is Kind.SPEND else str(units)


def rate_limit_headers(readings: Iterable[Reading]) -> dict[str, str]:
    """The headers for what `readings` say, one set per kind met."""
    tightest: dict[Kind, Reading] = {}
    for reading in readings:
        rule = reading.counter.rule
        kind = rule.limit.kind
        if kind is Kind.CONCURRENT or rule.shadow:
            continue
        best = tightest.get(kind)
        if best is None or (reading.remaining, best.reset_ms) < (best.remaining, reading.reset_ms):
            tightest[kind] = reading
    headers: dict[str, str] = {}
    for kind, reading in tightest.items():
        headers[f"x-ratelimit-limit-{kind}"] = _amount(kind, reading.counter.rule.limit.amount)
        headers[f"x-ratelimit-remaining-{kind}"] = _amount(kind, reading.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = duration(reading.reset_ms)
    return headers


def retry_after(ms: int) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1) and `retry-after-ms`, which the SDKs read;
    nothing when retrying can never help."""
    if ms == NEVER:
        return {}
    return {"Retry-After": str(max(1, -(-ms // 1000))), "retry-after-ms": str(max(ms, 1))}


def add_rate_limit_headers(headers: MutableMapping[str, str], facts: Facts) -> None:
    """Put the headers of the charge a request was admitted with on its answer, whoever
    makes it (upstream's relay, the cache, the error room), replacing upstream's own
    `x-ratelimit-*` (Tollgate's limits are the ones that bind its clients). Called by each
    of the three, rather than from aiohttp's `on_response_prepare` signal, which costs two
    coroutines on every answer, for the few requests that met a limit."""
    if facts.rate_headers:
        headers.update(facts.rate_headers)
