"""The x-ratelimit headers' format: OpenAI's (Go) durations, dollars, and Retry-After."""

from __future__ import annotations

import pytest

from proxy.limiter import NEVER
from proxy.quota_headers import duration, retry_after


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (20, "20ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (8640, "8.64s"),
        (61_001, "1m1.001s"),
        (360_000, "6m0s"),
        (3_600_000, "1h0m0s"),
        (17_280_000, "4h48m0s"),
        (30 * 86_400_000, "720h0m0s"),
    ],
)
def test_resets_read_like_openais(ms: int, text: str) -> None:
    """'20ms', '1s', '6m0s': the format of OpenAI's x-ratelimit-reset-* headers."""
    assert duration(ms) == text


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    """Retry-After is whole seconds, at least 1; retry-after-ms is exact."""
    assert retry_after(1) == {"Retry-After": "1", "retry-after-ms": "1"}
    assert retry_after(30_000) == {"Retry-After": "30", "retry-after-ms": "30000"}
    assert retry_after(30_001)["Retry-After"] == "31"
    assert retry_after(NEVER) == {}
