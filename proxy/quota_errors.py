"""The quota room's refusals, in OpenAI's shape: 429 over a limit, 503 when limits cannot be
checked (fail_closed).

Over a request or image limit: `rate_limit_exceeded`, typed `requests` or `images` as OpenAI
types its own; over a spend limit: `insufficient_quota`, as OpenAI answers an exhausted
balance. Each names the limit and says when the request would fit.
"""

from __future__ import annotations

import math

from proxy.errors import ProxyError
from proxy.limiter import NEVER, Admission, Reading
from proxy.limits import Kind, dollars
from proxy.quota_headers import duration, rate_limit_headers, retry_after

_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. "
    "{subject} may spend {limit}: this request costs ${cost} and ${left} is left."
)
_RATE = (
    "Rate limit reached for {subject} on {kind} ({limit}): Limit {amount}, Used {used}, "
    "Requested {cost}."
)
_SLOTS = "Too many requests in flight for {subject} ({limit}): wait until one finishes."
_NEVER = " This request costs more than the whole limit: it cannot succeed as it is."


class QuotaUnavailable(ProxyError):
    """503 in fail_closed mode: limits cannot be checked right now."""

    def __init__(self, retry_s: float) -> None:
        super().__init__(
            503,
            "Tollgate cannot check usage limits right now; please retry shortly.",
            type="server_error",
            code="quota_store_unavailable",
            headers={"Retry-After": str(max(1, math.ceil(retry_s)))},
        )


def _message(reading: Reading) -> str:
    limit = reading.counter.rule.limit
    fields = {"subject": reading.counter.subject, "limit": limit}
    if limit.kind is Kind.SPEND:
        fields["subject"] = reading.counter.subject.capitalize()  # it starts a sentence
        text = _QUOTA.format(**fields, cost=dollars(reading.cost), left=dollars(reading.remaining))
    elif limit.kind is Kind.CONCURRENT:
        text = _SLOTS.format(**fields)
    else:
        used = limit.amount - reading.remaining
        text = _RATE.format(
            **fields, kind=limit.kind, amount=limit.amount, used=used, cost=reading.cost
        )
    if reading.retry_ms == NEVER:
        return text + _NEVER
    return text + f" Please try again in {duration(reading.retry_ms)}."


def worst_refusal(refusals: list[Reading]) -> Reading:
    """The refusal to report: a spend budget first, then the longest wait."""
    return max(
        refusals,
        key=lambda r: (r.counter.rule.limit.kind is Kind.SPEND, r.retry_ms == NEVER, r.retry_ms),
    )


class OverLimit(ProxyError):
    """429 naming the limit the request did not fit, with when to retry."""

    def __init__(self, admission: Admission) -> None:
        worst = worst_refusal(admission.refusals)
        kind = worst.counter.rule.limit.kind
        headers = rate_limit_headers(admission.readings)
        waits = [r.retry_ms for r in admission.refusals]
        headers |= retry_after(NEVER if NEVER in waits else max(waits))
        if kind is Kind.SPEND:
            error_type = code = "insufficient_quota"
        else:
            error_type = "images" if kind is Kind.IMAGES else "requests"
            code = "rate_limit_exceeded"
        super().__init__(429, _message(worst), type=error_type, code=code, headers=headers)
