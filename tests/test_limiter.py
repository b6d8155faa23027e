"""The limiter over both backends (memory, real Redis): GCRA edges, costs, atomicity, refunds."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from proxy.limiter import NEVER, Admission, Counter, Limiter, Reading, open_limiter
from proxy.limits import parse_rule
from proxy.settings import QuotaSettings, RedisSettings, Settings
from proxy.store import open_store
from tests.conftest import FakeClock, RedisServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def limiter(store_settings: dict[str, Any], clock: FakeClock) -> AsyncIterator[Limiter]:
    """A limiter over each backend, on the test's clock, with 2-second concurrency leases."""
    store = open_store(Settings(**store_settings))
    yield open_limiter(store, QuotaSettings(lease=2.0), clock)
    await store.close()


def counter(text: str, tag: str = "u:tester", scope: str = "u") -> Counter:
    rule = parse_rule(text)
    return Counter(f"tg:q:{{{tag}}}:{scope}:{rule.id}", rule, f"user {tag}")


def now_ms(clock: FakeClock) -> int:
    return int(clock() * 1000)


async def charge(limiter: Limiter, clock: FakeClock, *pairs: tuple[Counter, int]) -> bool:
    """Charge one tag's counters; whether the request was admitted."""
    return (await limiter.charge([list(pairs)], now_ms(clock))).admitted


async def read(limiter: Limiter, clock: FakeClock, *counters: Counter) -> list[Reading]:
    return await limiter.read(list(counters), now_ms(clock))


async def test_a_full_bucket_admits_exactly_its_amount(limiter: Limiter, clock: FakeClock) -> None:
    """5/minute admits 5 at once, refuses the 6th, and says when one more will fit."""
    five = counter("5/minute")
    assert [await charge(limiter, clock, (five, 1)) for _ in range(6)] == [True] * 5 + [False]
    admission = await limiter.charge([[(five, 1)]], now_ms(clock))
    (refused,) = admission.refusals
    assert (refused.remaining, refused.retry_ms, refused.reset_ms) == (0, 12_000, 60_000)


async def test_allowance_comes_back_at_the_rate_not_at_a_window_edge(
    limiter: Limiter, clock: FakeClock
) -> None:
    """After a burst, one request comes back every period/amount: no double burst at an edge."""
    five = counter("5/minute")
    for _ in range(5):
        assert await charge(limiter, clock, (five, 1))
    clock.advance(11.999)
    assert not await charge(limiter, clock, (five, 1))
    clock.advance(0.001)
    assert await charge(limiter, clock, (five, 1))
    assert not await charge(limiter, clock, (five, 1))
    clock.advance(47.999)  # 59.999 s after the burst: 4 of 5 have come back, 1 is used
    admitted = [await charge(limiter, clock, (five, 1)) for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    clock.advance(0.001)
    assert await charge(limiter, clock, (five, 1))


async def test_a_limit_not_divisible_by_its_period_still_admits_exactly_its_amount(
    limiter: Limiter, clock: FakeClock
) -> None:
    """7/minute (8571.43 ms apart) admits exactly 7 at once: integer ticks, no float drift."""
    seven = counter("7/minute")
    assert [await charge(limiter, clock, (seven, 1)) for _ in range(8)] == [True] * 7 + [False]


async def test_a_unit_comes_back_exactly_period_over_amount_later(
    limiter: Limiter, clock: FakeClock
) -> None:
    """7/minute: after a burst of 7, the 8th fits at 8571.43 ms, not a millisecond sooner."""
    seven = counter("7/minute")
    clock.advance(0.123)  # start between two of the limit's units, not on one
    for _ in range(7):
        assert await charge(limiter, clock, (seven, 1))
    clock.advance(8.571)
    assert not await charge(limiter, clock, (seven, 1))
    clock.advance(0.001)
    assert await charge(limiter, clock, (seven, 1))


async def test_costs_count_units(limiter: Limiter, clock: FakeClock) -> None:
    """Images and micro-dollars are charged by the unit: what fits is admitted, what not, not."""
    images = counter("10 images/day")
    spend = counter("$0.10/day")
    assert await charge(limiter, clock, (images, 4), (spend, 40_000))
    assert await charge(limiter, clock, (images, 4), (spend, 40_000))
    assert not await charge(limiter, clock, (images, 2), (spend, 40_000))
    image_reading, spend_reading = await read(limiter, clock, images, spend)
    assert (image_reading.remaining, spend_reading.remaining) == (2, 20_000)
    assert await charge(limiter, clock, (images, 2), (spend, 20_000))


async def test_one_exhausted_limit_charges_none_of_the_others(
    limiter: Limiter, clock: FakeClock
) -> None:
    """All or nothing: a refusal by one counter leaves every other counter of the call as it was."""
    roomy, tight = counter("100/minute"), counter("2/minute")
    images = counter("50 images/day")
    for _ in range(2):
        assert await charge(limiter, clock, (roomy, 1), (tight, 1), (images, 3))
    for _ in range(3):
        assert not await charge(limiter, clock, (roomy, 1), (tight, 1), (images, 3))
    roomy_now, tight_now, images_now = await read(limiter, clock, roomy, tight, images)
    assert (roomy_now.remaining, tight_now.remaining, images_now.remaining) == (98, 0, 44)


async def test_a_later_tag_refusing_gives_the_earlier_tag_its_charge_back(
    limiter: Limiter, clock: FakeClock
) -> None:
    """User tag charged, team tag refuses: the user's counter ends as if nothing happened."""
    user, team = counter("10/minute", "u:alice"), counter("1/minute", "t:red", "t")
    first = await limiter.charge([[(user, 1)], [(team, 1)]], now_ms(clock))
    second = await limiter.charge([[(user, 1)], [(team, 1)]], now_ms(clock))
    assert (first.admitted, second.admitted) == (True, False)
    assert [r.counter for r in second.refusals] == [team]
    assert not any(r.charged for r in second.readings)
    (user_now,) = await read(limiter, clock, user)
    assert user_now.remaining == 9


async def test_a_refund_gives_the_charge_back(limiter: Limiter, clock: FakeClock) -> None:
    """A settled refund restores exactly what the request took."""
    spend = counter("$1/day")
    admission = await limiter.charge([[(spend, 120_000)]], now_ms(clock))
    clock.advance(1)
    (group,) = admission.groups
    assert await limiter.settle_tag(group, admission.token, now_ms(clock), refund=True)
    (after,) = await read(limiter, clock, spend)
    assert after.remaining == 1_000_000


async def test_a_refund_on_top_of_earlier_use_gives_back_the_charge_and_no_more(
    limiter: Limiter, clock: FakeClock
) -> None:
    """Refunding the latest of several charges restores the level from before it, exactly."""
    two = counter("2/minute")  # one comes back every 30 s
    assert await charge(limiter, clock, (two, 1))
    clock.advance(10)  # two thirds of a unit are still owed
    (before,) = await read(limiter, clock, two)
    latest = await limiter.charge([[(two, 1)]], now_ms(clock))
    (group,) = latest.groups
    await limiter.settle_tag(group, latest.token, now_ms(clock), refund=True)
    (after,) = await read(limiter, clock, two)
    assert after.level == before.level > 0


async def test_a_refund_never_returns_what_time_already_gave_back(
    limiter: Limiter, clock: FakeClock
) -> None:
    """A charge that has already drained is refunded as nothing, not out of a later charge."""
    two = counter("2/minute")  # one comes back every 30 s
    first = await limiter.charge([[(two, 1)]], now_ms(clock))
    clock.advance(30)  # the first charge has fully come back
    assert await charge(limiter, clock, (two, 1))
    clock.advance(1)
    (group,) = first.groups
    await limiter.settle_tag(group, first.token, now_ms(clock), refund=True)
    (after,) = await read(limiter, clock, two)
    assert after.remaining == 1


async def test_a_partly_drained_charge_is_refunded_in_part(
    limiter: Limiter, clock: FakeClock
) -> None:
    """Only what is still outstanding of a charge comes back."""
    images = counter("10 images/10 seconds")  # one image comes back every second
    admission = await limiter.charge([[(images, 10)]], now_ms(clock))
    clock.advance(4)  # 4 have come back, 6 are outstanding
    (group,) = admission.groups
    await limiter.settle_tag(group, admission.token, now_ms(clock), refund=True)
    (after,) = await read(limiter, clock, images)
    assert after.remaining == 10


async def test_concurrency_slots_are_taken_and_freed(limiter: Limiter, clock: FakeClock) -> None:
    """2 concurrent: a third waits until one is freed; freeing is what settling does."""
    slots = counter("2 concurrent")
    first = await limiter.charge([[(slots, 1)]], now_ms(clock))
    assert await charge(limiter, clock, (slots, 1))
    refused = await limiter.charge([[(slots, 1)]], now_ms(clock))
    assert not refused.admitted
    assert refused.refusals[0].retry_ms == 1000
    (group,) = first.groups
    await limiter.settle_tag(group, first.token, now_ms(clock), refund=False)
    assert await charge(limiter, clock, (slots, 1))


async def test_a_slot_held_past_its_lease_is_freed(limiter: Limiter, clock: FakeClock) -> None:
    """A replica that dies holding slots does not hold them for ever: leases run out."""
    slots = counter("1 concurrent")
    assert await charge(limiter, clock, (slots, 1))
    clock.advance(1.999)
    assert not await charge(limiter, clock, (slots, 1))
    clock.advance(0.001)
    assert await charge(limiter, clock, (slots, 1))


async def test_settling_a_billable_answer_frees_slots_and_keeps_charges(
    limiter: Limiter, clock: FakeClock
) -> None:
    """Without a refund only the slot comes back."""
    slots, rate = counter("1 concurrent"), counter("3/hour")
    admission = await limiter.charge([[(slots, 1), (rate, 1)]], now_ms(clock))
    (group,) = admission.groups
    await limiter.settle_tag(group, admission.token, now_ms(clock), refund=False)
    slots_now, rate_now = await read(limiter, clock, slots, rate)
    assert (slots_now.remaining, rate_now.remaining) == (1, 2)


async def test_shadow_limits_count_and_report_but_never_refuse(
    limiter: Limiter, clock: FakeClock
) -> None:
    """A shadow rule over its limit is reported; the request goes through; it counts what fit."""
    shadow = counter("1/minute shadow")
    roomy = counter("100/minute")
    outcomes = [await limiter.charge([[(shadow, 1), (roomy, 1)]], now_ms(clock)) for _ in range(3)]
    assert all(o.admitted for o in outcomes)
    assert [len(o.shadow_refusals) for o in outcomes] == [0, 1, 1]
    shadow_now, roomy_now = await read(limiter, clock, shadow, roomy)
    assert (shadow_now.remaining, roomy_now.remaining) == (0, 97)


async def test_a_refused_request_charges_no_shadow_counter_either(
    limiter: Limiter, clock: FakeClock
) -> None:
    """All or nothing holds for shadow counters too."""
    shadow, tight = counter("10/minute shadow"), counter("1/minute")
    assert await charge(limiter, clock, (shadow, 1), (tight, 1))
    assert not await charge(limiter, clock, (shadow, 1), (tight, 1))
    (shadow_now,) = await read(limiter, clock, shadow)
    assert shadow_now.remaining == 9


async def test_a_cost_above_the_whole_limit_never_fits(limiter: Limiter, clock: FakeClock) -> None:
    """An hd image ($0.12) against $0.10/day: refused, and no retry can help."""
    spend = counter("$0.10/day")
    admission = await limiter.charge([[(spend, 120_000)]], now_ms(clock))
    assert not admission.admitted
    assert admission.refusals[0].retry_ms == NEVER


async def test_reset_makes_counters_whole(limiter: Limiter, clock: FakeClock) -> None:
    """An admin's reset forgets a counter's use."""
    three = counter("3/day")
    for _ in range(3):
        assert await charge(limiter, clock, (three, 1))
    await limiter.reset([three])
    (after,) = await read(limiter, clock, three)
    assert after.remaining == 3


async def test_reading_charges_nothing(limiter: Limiter, clock: FakeClock) -> None:
    """Usage reads leave counters untouched."""
    one, slots = counter("1/day"), counter("1 concurrent")
    for _ in range(3):
        await read(limiter, clock, one, slots)
    assert await charge(limiter, clock, (one, 1), (slots, 1))


def _snapshot(admission: Admission) -> list[tuple[int, bool, bool, int, int]]:
    return [(r.level, r.fits, r.charged, r.remaining, r.reset_ms) for r in admission.readings]


async def test_memory_and_redis_agree_on_a_long_random_run(flush_redis: RedisServer) -> None:
    """The Python counters and the Lua scripts give the same answers, step by step."""
    clocks, url = [FakeClock(), FakeClock()], SecretStr(flush_redis.url)
    stores = [
        open_store(Settings(store="memory", data_file=None)),
        open_store(Settings(store="redis", redis=RedisSettings(url=url, timeout=1.0))),
    ]
    limiters = [
        open_limiter(s, QuotaSettings(lease=5.0), c) for s, c in zip(stores, clocks, strict=True)
    ]
    counters = [counter(text) for text in ("7/10 seconds", "$0.50/10 seconds", "13 images/minute")]
    counters += [counter("5 concurrent"), counter("1/second shadow")]
    steps = random.Random(4)
    held: list[list[Admission]] = [[], []]
    outcomes: list[list[tuple[int, bool, bool, int, int]]] = []
    for _ in range(400):
        step = steps.random()
        seconds, costs = steps.random() * 3, [1, steps.choice([16_000, 80_000, 120_000]), 2, 1, 1]
        refund, pick = steps.random() < 0.5, steps.randrange(1_000)
        results: list[list[tuple[int, bool, bool, int, int]]] = []
        for limiter, clock, mine in zip(limiters, clocks, held, strict=True):
            if step < 0.3:
                clock.advance(seconds)
                results.append([])
            elif step < 0.45 and mine:
                admission = mine.pop(pick % len(mine))
                for group in admission.groups:
                    await limiter.settle_tag(group, admission.token, now_ms(clock), refund=refund)
                results.append(_snapshot(admission))
            else:
                pairs = list(zip(counters, costs, strict=True))
                admission = await limiter.charge([pairs], now_ms(clock))
                mine.append(admission)
                results.append(_snapshot(admission))
        assert results[0] == results[1]
        outcomes.append(results[0])
    for store in stores:
        await store.close()
    fitted = [sum(fits for _, fits, *_ in o) for o in outcomes if o]
    assert 0 < fitted.count(len(counters)) < len(fitted)  # both admissions and refusals
