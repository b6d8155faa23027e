"""Limits as values: "60/minute", "20 images/day", "$20/month", "4 concurrent" parsed once.

A `Limit` is what is counted and how much of it a period allows; a `Rule` is a limit put to
use: on which operations (glob patterns, like key allowances) and whether it only reports
(shadow) or also refuses. Both are frozen values, parsed from the strings of the policy file
and of issued keys' `limits` maps, in the manner of alisaifee/limits.

Grammar, one limit (case-insensitive; "per" may replace "/"; a trailing "shadow" makes the
rule report without refusing):

    60/minute   1000 per day   10/5 minutes     requests (the default kind)
    20 images/day                               images: a request for `n` images costs n
    $20/month   $0.50/hour                      spend in US dollars, kept in micro-dollars
    4 concurrent                                requests in flight at once

Periods: second, minute, hour, day, month (30 days), year (365 days), optionally plural and
with a multiple ("10/5 minutes"). Several limits in one string are separated by `;` or `,`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

MICROS_PER_DOLLAR = 1_000_000
MAX_RATE_PER_MS = 2_000  # units per millisecond; keeps the limiter's integers exact (limiter.py)

PERIODS_MS: Mapping[str, int] = {
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365 * 86_400_000,
}

_RATE = re.compile(
    r"^(?P<amount>\$?\d+(?:\.\d+)?)\s*(?P<kind>requests?|images?)?\s*(?:/|\s+per\s+)\s*"
    r"(?P<multiple>\d+)?\s*(?P<period>second|minute|hour|day|month|year)s?"
    r"(?:\s+(?P<shadow>shadow))?$",
    re.IGNORECASE,
)
_CONCURRENT = re.compile(
    r"^(?P<amount>\d+)\s+concurrent(?:\s+requests?)?(?:\s+(?P<shadow>shadow))?$", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[;,]")


class Kind(StrEnum):
    """What a limit counts."""

    REQUESTS = "requests"
    IMAGES = "images"
    SPEND = "spend"  # micro-dollars
    CONCURRENT = "concurrent"


def dollars(micros: int) -> str:
    """Micro-dollars as dollars: 20000000 -> "20", 500000 -> "0.50", 18000 -> "0.018"."""
    whole, fraction = divmod(micros, MICROS_PER_DOLLAR)
    if not fraction:
        return str(whole)
    cents = f"{fraction:06d}".rstrip("0")
    return f"{whole}.{cents:0<2}"


def to_micros(amount: object) -> int:
    """Dollars (a number or decimal string, at most 6 decimals) as integer micro-dollars."""
    try:
        value = Decimal(str(amount).strip().removeprefix("$")) * MICROS_PER_DOLLAR
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {amount!r}") from None
    if value != value.to_integral_value() or value < 0:
        raise ValueError(f"dollars need at most 6 decimals and no sign: {amount!r}")
    return int(value)


def _period_text(period_ms: int) -> str:
    for name, length in sorted(PERIODS_MS.items(), key=lambda item: -item[1]):
        if period_ms == length:
            return name
        if period_ms % length == 0:
            return f"{period_ms // length} {name}s"
    return f"{period_ms} ms"


@dataclass(frozen=True, slots=True)
class Limit:
    """An amount of one kind per period (`period_ms` is 0 for concurrency)."""

    kind: Kind
    amount: int
    period_ms: int = 0

    def __post_init__(self) -> None:
        if self.amount < 1:
            raise ValueError("a limit allows at least 1")
        if (self.kind is Kind.CONCURRENT) != (self.period_ms == 0):
            raise ValueError("concurrency limits, and only they, have no period")
        if self.period_ms and self.amount > MAX_RATE_PER_MS * self.period_ms:
            raise ValueError("more than 2,000 per millisecond cannot be counted exactly")

    def __str__(self) -> str:
        if self.kind is Kind.CONCURRENT:
            return f"{self.amount} concurrent"
        per = _period_text(self.period_ms)
        if self.kind is Kind.SPEND:
            return f"${dollars(self.amount)}/{per}"
        if self.kind is Kind.IMAGES:
            return f"{self.amount} image{'' if self.amount == 1 else 's'}/{per}"
        return f"{self.amount}/{per}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A limit on some operations, enforced or in shadow mode (counted and logged only)."""

    limit: Limit
    operations: tuple[str, ...] = ("*",)
    shadow: bool = False

    def applies_to(self, operation: str) -> bool:
        """Whether a request for `operation` counts against this rule."""
        return any(fnmatchcase(operation, pattern) for pattern in self.operations)

    @property
    def id(self) -> str:
        """A stable name for the rule's counter: what it counts, how much, and on what.

        Shadow mode is not part of it, so turning a shadow rule on keeps what it counted.
        """
        scope = quote(",".join(self.operations), safe="*.,")
        return f"{self.limit.kind}:{self.limit.amount}/{self.limit.period_ms}:{scope}"

    def __str__(self) -> str:
        text = str(self.limit)
        if self.operations != ("*",):
            text += f" on {','.join(self.operations)}"
        return text + (" (shadow)" if self.shadow else "")


def _rate(found: re.Match[str]) -> Limit:
    amount, kind_word = found["amount"], (found["kind"] or "requests").lower()
    period_ms = PERIODS_MS[found["period"].lower()] * int(found["multiple"] or 1)
    if amount.startswith("$"):
        if found["kind"]:
            raise ValueError("a dollar amount is spend; drop the kind")
        return Limit(Kind.SPEND, to_micros(amount), period_ms)
    if not amount.isdigit():
        raise ValueError("only dollar amounts may have decimals")
    kind = Kind.IMAGES if kind_word.startswith("image") else Kind.REQUESTS
    return Limit(kind, int(amount), period_ms)


def parse_rule(text: str, operations: tuple[str, ...] = ("*",), shadow: bool = False) -> Rule:
    """One rule from one limit string such as "60/minute" or "$5/day shadow"."""
    cleaned = " ".join(text.split())
    try:
        if found := _RATE.match(cleaned):
            return Rule(_rate(found), operations, shadow or bool(found["shadow"]))
        if found := _CONCURRENT.match(cleaned):
            limit = Limit(Kind.CONCURRENT, int(found["amount"]))
            return Rule(limit, operations, shadow or bool(found["shadow"]))
    except ValueError as exc:
        raise ValueError(f"invalid limit {text!r}: {exc}") from None
    raise ValueError(
        f"invalid limit {text!r}: expected e.g. '60/minute', '20 images/day', "
        "'$20/month' or '4 concurrent'"
    )


def parse_limit(text: str) -> Limit:
    """The `Limit` of one limit string."""
    return parse_rule(text).limit


def parse_rules(text: str, operations: tuple[str, ...] = ("*",)) -> tuple[Rule, ...]:
    """Every rule of a string holding one or more limits separated by `;` or `,`."""
    parts = [part for part in _SEPARATORS.split(text) if part.strip()]
    if not parts:
        raise ValueError("no limit given")
    return tuple(parse_rule(part, operations) for part in parts)


def distinct(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """`rules`, refusing two that would share one counter."""
    ids = [rule.id for rule in rules]
    if len(ids) != len(set(ids)):
        raise ValueError("the same limit is listed twice for the same operations")
    return rules


def key_rules(limits: Mapping[str, str]) -> tuple[Rule, ...]:
    """The rules of an issued key's `limits` map: operation pattern -> limit string(s).

    `{"*": "60/minute; 1000/day", "images.*": "10 images/day"}`.
    """
    rules = (
        rule
        for pattern, text in sorted(limits.items())
        for rule in parse_rules(text, (pattern.strip() or "*",))
    )
    return distinct(tuple(rules))


def _operations(value: object) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else value
    if not isinstance(patterns, list | tuple) or not patterns:
        raise ValueError("operations must be a pattern or a non-empty list of patterns")
    if not all(isinstance(p, str) and p.strip() for p in patterns):
        raise ValueError("operations must be non-empty strings")
    return tuple(p.strip() for p in patterns)


def rule_from(value: Any) -> Rule:
    """A rule from the policy file: a limit string, or {limit, operations, shadow}."""
    if isinstance(value, Rule):
        return value
    if isinstance(value, str):
        return parse_rule(value)
    if not isinstance(value, dict) or not isinstance(value.get("limit"), str):
        raise ValueError("a limit is a string, or a mapping with a 'limit' string")
    unknown = set(value) - {"limit", "operations", "shadow"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    shadow = value.get("shadow", False)
    if not isinstance(shadow, bool):
        raise ValueError("shadow must be true or false")
    return parse_rule(value["limit"], _operations(value.get("operations", "*")), shadow)


def _rule_list(value: object) -> tuple[Rule, ...]:
    """A list of rules from the policy file (one string of limits is accepted too)."""
    if isinstance(value, str):
        return distinct(parse_rules(value))
    if not isinstance(value, list | tuple):
        raise ValueError("a list of limits")
    return distinct(tuple(rule_from(item) for item in value))


Rules = Annotated[
    tuple[Rule, ...],
    PlainValidator(_rule_list),
    PlainSerializer(lambda rules: [str(rule) for rule in rules]),
]


class LimitsPolicy(BaseModel):
    """The `limits` section of the policy file.

    `default` is every user's own allowance unless `users` lists the user; `teams` are shared
    by all of a team's members; `keys` (by key id, static or issued) narrow one key further.
    Every rule that applies to a request must let it through.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: Rules = ()
    users: dict[str, Rules] = Field(default_factory=dict)
    teams: dict[str, Rules] = Field(default_factory=dict)
    keys: dict[str, Rules] = Field(default_factory=dict)
