"""Allowances: which counters a request meets, under which keys, and what it costs each.

Who shares a counter:

- a key's own rules (policy `limits.keys.<id>`, then the issued key's `limits` map) count that
  key alone;
- user rules (`limits.users.<name>`, else `limits.default`) count the user across all its
  keys; a key without a user is a user of its own;
- team rules (`limits.teams.<name>`) count everyone on the team together.

Store keys: `tg:q:{u:<user>}:k:<key id>:<rule>`, `tg:q:{u:<user>}:u:<rule>` and
`tg:q:{t:<team>}:t:<rule>`, names percent-encoded so no name can break a `{hash tag}`. A
request so meets at most two tags, user then team: the order the limiter charges them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

from proxy.auth import Principal
from proxy.call import IMAGE_OPERATIONS, Call
from proxy.errors import ProxyError
from proxy.limiter import Charge, Counter
from proxy.limits import Kind, LimitsPolicy, Rule, key_rules
from proxy.prices import PriceTable, images_asked

CACHE_SIZE = 4096  # resolved (principal, operation) pairs kept; all forgotten when full

Groups = tuple[tuple[Counter, ...], ...]


class UnreadableLimits(ProxyError):
    """500: a key record's limits do not parse (the admin API refuses such limits; an older
    record may still hold them). The key is refused rather than let through unlimited."""

    def __init__(self, key_id: str, problem: str) -> None:
        super().__init__(
            500,
            f"The limits of key {key_id} cannot be read ({problem}); ask an admin to fix them.",
            type="server_error",
            code="invalid_key_limits",
        )


def _name(text: str) -> str:
    return quote(text, safe="")


def user_of(key_id: str, user: str) -> str:
    """Whose user counters a key charges: its user, or the key itself when it has none."""
    return user or f"key:{key_id}"


class Allowances:
    """The limits of the policy resolved into counters, remembered per key and operation."""

    def __init__(self, limits: LimitsPolicy, prices: PriceTable) -> None:
        self._limits = limits
        self._prices = prices
        self._cache: dict[tuple[object, ...], Groups] = {}
        self._fixed: dict[int, tuple[Groups, list[Charge]]] = {}

    def key_counters(self, key_id: str, user: str, extra: Mapping[str, str]) -> tuple[Counter, ...]:
        """A key's own counters: the policy's rules for its id, then its record's."""
        rules = self._limits.keys.get(key_id, ()) + key_rules(extra)
        tag = f"u:{_name(user_of(key_id, user))}"
        prefix = f"tg:q:{{{tag}}}:k:{_name(key_id)}:"
        unique: dict[str, Rule] = {}
        for rule in rules:
            unique.setdefault(rule.id, rule)  # the policy's rule wins over the record's twin
        return tuple(Counter(prefix + r.id, r, f"key {key_id}") for r in unique.values())

    def user_counters(self, key_id: str, user: str) -> tuple[Counter, ...]:
        """A user's counters: its own rules, or the default ones."""
        who = user_of(key_id, user)
        rules = self._limits.users.get(user, self._limits.default)
        prefix = f"tg:q:{{u:{_name(who)}}}:u:"
        return tuple(Counter(prefix + r.id, r, f"user {who}") for r in rules)

    def team_counters(self, team: str) -> tuple[Counter, ...]:
        """The counters a team's members share."""
        prefix = f"tg:q:{{t:{_name(team)}}}:t:"
        rules = self._limits.teams.get(team, ())
        return tuple(Counter(prefix + r.id, r, f"team {team}") for r in rules)

    def groups(self, principal: Principal, operation: str) -> Groups:
        """The counters `principal` meets on `operation`, tag by tag in charging order."""
        extra = tuple(sorted(principal.limits.items())) if principal.limits else ()
        found = (principal.key_id, principal.user, principal.team, operation, extra)
        groups = self._cache.get(found)
        if groups is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            try:
                groups = self._cache[found] = self._resolve(principal, operation)
            except ValueError as exc:
                raise UnreadableLimits(principal.key_id, str(exc)) from None
        return groups

    def _resolve(self, principal: Principal, operation: str) -> Groups:
        key_id, user = principal.key_id, principal.user
        mine = self.key_counters(key_id, user, principal.limits) + self.user_counters(key_id, user)
        tags = (mine, self.team_counters(principal.team))
        applying = (tuple(c for c in tag if c.rule.applies_to(operation)) for tag in tags)
        return tuple(tag for tag in applying if tag)

    def costs(self, groups: Groups, call: Call, fields: Mapping[str, object]) -> Sequence[Charge]:
        """What `call` costs on each counter, tag by tag, leaving out what it costs nothing.

        Only an image request's cost depends on what it asks for; any other operation's
        is the same every time for the same `groups` (which are per operation), so it is
        worked out once and kept with them. Keeping `groups` in the entry keeps its id.
        """
        if call.operation in IMAGE_OPERATIONS:
            return self._costs(groups, call, fields)
        fixed = self._fixed.get(id(groups))
        if fixed is None or fixed[0] is not groups:
            if len(self._fixed) >= CACHE_SIZE:
                self._fixed.clear()
            fixed = self._fixed[id(groups)] = (groups, self._costs(groups, call, fields))
        return fixed[1]

    def _costs(self, groups: Groups, call: Call, fields: Mapping[str, object]) -> list[Charge]:
        kinds = {counter.rule.limit.kind for tag in groups for counter in tag}
        images = images_asked(call, fields) if kinds & {Kind.IMAGES, Kind.SPEND} else 0
        spend = self._prices.cost(call, images) if Kind.SPEND in kinds else 0
        price = {Kind.REQUESTS: 1, Kind.CONCURRENT: 1, Kind.IMAGES: images, Kind.SPEND: spend}
        charges = ([(c, price[c.rule.limit.kind]) for c in tag] for tag in groups)
        return [kept for tag in charges if (kept := [(c, n) for c, n in tag if n > 0])]
