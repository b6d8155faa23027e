"""Limits as values: parsing limit strings, the policy's `limits` section, key limit maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from proxy.limits import (
    Kind,
    Limit,
    LimitsPolicy,
    dollars,
    key_rules,
    parse_limit,
    parse_rule,
    parse_rules,
    to_micros,
)
from proxy.policy import Policy


@pytest.mark.parametrize(
    ("text", "kind", "amount", "period_ms"),
    [
        ("60/minute", Kind.REQUESTS, 60, 60_000),
        ("1000 per day", Kind.REQUESTS, 1000, 86_400_000),
        ("10/5 minutes", Kind.REQUESTS, 10, 300_000),
        ("500 requests/day", Kind.REQUESTS, 500, 86_400_000),
        ("20 images/day", Kind.IMAGES, 20, 86_400_000),
        ("1 image/second", Kind.IMAGES, 1, 1000),
        ("$20/month", Kind.SPEND, 20_000_000, 30 * 86_400_000),
        ("$0.04/hour", Kind.SPEND, 40_000, 3_600_000),
        ("4 concurrent", Kind.CONCURRENT, 4, 0),
        ("  2   CONCURRENT requests ", Kind.CONCURRENT, 2, 0),
        ("3/Year", Kind.REQUESTS, 3, 365 * 86_400_000),
    ],
)
def test_limit_strings_parse_to_values(text: str, kind: Kind, amount: int, period_ms: int) -> None:
    """Each documented form parses to its kind, amount (micro-dollars for spend) and period."""
    assert parse_limit(text) == Limit(kind, amount, period_ms)


@pytest.mark.parametrize(
    "text",
    [
        "60",
        "0/minute",
        "1.5/minute",
        "$20 images/day",
        "60/fortnight",
        "$1.0000001/day",
        "-3/day",
        "10000000/second",
        "0 concurrent",
        "",
    ],
)
def test_bad_limit_strings_are_refused_with_the_string_named(text: str) -> None:
    """Nonsense, zero, fractions of a request and uncountable rates are configuration errors."""
    with pytest.raises(ValueError, match="limit"):
        parse_limit(text)


def test_shadow_is_a_suffix_or_a_flag() -> None:
    """'shadow' after a limit, or shadow=True, makes a rule that reports only."""
    assert parse_rule("60/minute shadow").shadow
    assert parse_rule("60/minute", shadow=True).shadow
    assert not parse_rule("60/minute").shadow


def test_a_rule_applies_to_its_operations_only() -> None:
    """Operation patterns are globs, as for key allowances."""
    rule = parse_rule("5 images/day", ("images.*",))
    assert rule.applies_to("images.generate")
    assert not rule.applies_to("models.list")
    assert parse_rule("5/day").applies_to("passthrough")


@given(
    amount=st.integers(min_value=1, max_value=10**6),
    multiple=st.integers(min_value=1, max_value=30),
    period=st.sampled_from(["second", "minute", "hour", "day", "month", "year"]),
    kind=st.sampled_from(["", " images", "$"]),
)
def test_a_limit_reads_back_as_itself(amount: int, multiple: int, period: str, kind: str) -> None:
    """str() of a limit parses back to the same value."""
    per = period if multiple == 1 else f"{multiple} {period}s"
    text = f"${amount}/{per}" if kind == "$" else f"{amount}{kind}/{per}"
    try:
        limit = parse_limit(text)
    except ValueError:
        return  # faster than the limiter can count exactly; refused by design
    assert parse_limit(str(limit)) == limit


def test_money_is_integer_micro_dollars() -> None:
    """Dollars convert without floats, both ways."""
    assert to_micros("0.040") == 40_000
    assert to_micros(0.018) == 18_000
    assert (dollars(20_000_000), dollars(500_000), dollars(18_000)) == ("20", "0.50", "0.018")
    with pytest.raises(ValueError, match="6 decimals"):
        to_micros("0.0000001")


def test_several_limits_in_one_string() -> None:
    """`;` or `,` separate limits, as in alisaifee/limits."""
    rules = parse_rules("60/minute; 1000/day, $5/day")
    assert [str(rule) for rule in rules] == ["60/minute", "1000/day", "$5/day"]


def test_issued_key_limits_map_operation_patterns_to_limits() -> None:
    """A key record's `limits` map: pattern -> one or more limits."""
    rules = key_rules({"*": "60/minute; 1000/day", "images.*": "10 images/day"})
    assert [(str(r.limit), r.operations) for r in rules] == [
        ("60/minute", ("*",)),
        ("1000/day", ("*",)),
        ("10 images/day", ("images.*",)),
    ]
    with pytest.raises(ValueError, match="invalid limit"):
        key_rules({"*": "sixty a minute"})


def test_the_policy_limits_section() -> None:
    """Strings or {limit, operations, shadow}; defaults, users, teams and keys."""
    policy = Policy.model_validate(
        {
            "teams": {"default": {}, "red": {}},
            "limits": {
                "default": ["60/minute", {"limit": "20 images/day", "operations": "images.*"}],
                "users": {"alice": "$50/month"},
                "teams": {"red": [{"limit": "$500/month", "shadow": True}]},
                "keys": {"key_ci": ["10/minute"]},
            },
        }
    )
    limits = policy.limits
    assert [str(rule) for rule in limits.default] == ["60/minute", "20 images/day on images.*"]
    assert str(limits.users["alice"][0]) == "$50/month"
    assert limits.teams["red"][0].shadow
    assert str(limits.keys["key_ci"][0]) == "10/minute"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"teams": {"nowhere": ["1/day"]}}, "unknown team"),
        ({"default": ["1/day", "1 per day"]}, "listed twice"),
        ({"default": [{"limit": "1/day", "opertions": "x"}]}, "unknown field"),
        ({"default": [{"limit": "1/day", "operations": []}]}, "operations"),
        ({"default": [{"limit": "1/day", "shadow": "yes"}]}, "shadow"),
        ({"default": [42]}, "a limit is a string"),
        ({"users": {"bob": ["lots"]}}, "invalid limit"),
    ],
)
def test_bad_policy_limits_are_refused(section: dict[str, object], message: str) -> None:
    """A policy file with a bad limit does not load."""
    with pytest.raises(ValidationError, match=message):
        Policy.model_validate({"limits": section})


def test_no_limits_by_default() -> None:
    """Without a `limits` section nothing is limited."""
    assert Policy().limits == LimitsPolicy()


def test_the_readmes_quota_examples_load() -> None:
    """The limits and prices shown in the README's Quotas section are a valid policy."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quotas", 1)[1].split("\n## ", 1)[0]
    blocks = [yaml.safe_load(block.split("```")[0]) for block in section.split("```yaml\n")[1:3]]
    document = {"teams": {"default": {}, "research": {}}, **blocks[0], **blocks[1]}
    policy = Policy.model_validate(document)
    assert str(policy.limits.users["alice"][1]) == "$50/month"
    assert policy.limits.teams["research"][1].shadow
    assert policy.prices.operations == {"passthrough": 10_000}
