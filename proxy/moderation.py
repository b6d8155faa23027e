"""The moderation room: prompts are checked with `/v1/moderations` before an image is paid for.

For each moderated operation (by default `images.generate` and `images.edit`) the prompt goes
to the upstream's moderation endpoint on the team's own credential. A verdict that the team's
rules refuse becomes OpenAI's 400 `content_policy_violation`, and the image endpoint is never
called. Verdicts are cached per credential scope, model and exact input, so a retried prompt
costs nothing more. Each refusal is a strike against the key's user; a user over the strike
limit gets 403 on image requests until the strikes age out or an admin clears them. When
moderation itself fails, the policy decides: refuse (503, the default) or let the request
through, counted either way. Logs carry categories, scores and a hash of the prompt.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.auth import Principal
from proxy.body import SpooledBody
from proxy.cache import Entry, ResponseCache
from proxy.cachestore import PREFIX
from proxy.call import Call
from proxy.context import FACTS, Facts
from proxy.errors import InvalidRequest, ProxyError
from proxy.instruments import ModerationStats
from proxy.keys import Clock
from proxy.moderation_policy import ModerationPolicy, ModerationRules
from proxy.quota import not_billable
from proxy.store import StoreUnavailable
from proxy.strikes import StrikeBook
from proxy.tenancy import Credential
from proxy.upstream import Upstream


class ContentPolicyViolation(ProxyError):
    """400 exactly as OpenAI refuses a prompt, naming the categories."""

    def __init__(self, categories: Sequence[str]) -> None:
        super().__init__(
            400,
            "Your request was rejected as a result of our safety system. The prompt was "
            f"flagged for: {', '.join(categories)}.",
            param="prompt",
            code="content_policy_violation",
        )


class ModerationUnavailable(ProxyError):
    """503 when a prompt could not be checked and the policy fails closed."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "Moderation is unavailable, so the image request was not sent. Please retry.",
            type="server_error",
            code="moderation_unavailable",
        )


class StruckOut(ProxyError):
    """403 for a user whose recent prompts were refused too often."""

    def __init__(self, until: float) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
        super().__init__(
            403,
            f"Too many of your prompts were refused recently; image requests are blocked "
            f"until {when}.",
            code="moderation_strikes_exceeded",
        )


class ModerationFailed(Exception):
    """The moderation endpoint did not give a usable verdict."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """What one check sends: a prompt, input images (PNG bytes), or both."""

    text: str | None
    images: list[bytes]

    def payload(self) -> object:
        """A plain string for text alone, else OpenAI's multimodal input list."""
        if not self.images:
            return self.text
        parts: list[dict[str, object]] = []
        if self.text is not None:
            parts.append({"type": "text", "text": self.text})
        for image in self.images:
            url = "data:image/png;base64," + base64.b64encode(image).decode()
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return parts

    def key(self) -> str:
        """What identifies these inputs for the verdict cache (images by their hash)."""
        if not self.images:
            return self.text or ""
        digests = [hashlib.sha256(image).hexdigest() for image in self.images]
        return orjson.dumps([self.text, digests]).decode()


def input_images(facts: Facts) -> list[bytes]:
    """The input image of a held form (the omni model takes one image a check)."""
    body = facts.body
    if not isinstance(body, SpooledBody):
        return []
    for part in facts.files:
        if part.name.startswith("image") and part.span is not None:
            return [body.read(*part.span)]
    return []


def refusing(results: Sequence[Mapping[str, Any]], rules: ModerationRules) -> list[str]:
    """The categories the rules refuse in these results: a threshold, where one is set,
    decides by score alone; elsewhere OpenAI's own flag counts if the category refuses."""
    found: set[str] = set()
    for result in results:
        flags, scores = result.get("categories", {}), result.get("category_scores", {})
        for name in set(flags) | set(scores):
            threshold = rules.thresholds.get(name)
            if threshold is not None:
                hit = float(scores.get(name, 0.0)) >= threshold
            else:
                hit = bool(flags.get(name)) and (rules.refuse is None or name in rules.refuse)
            if hit:
                found.add(name)
    return sorted(found)


def moderated_text(call: Call, fields: Mapping[str, Any]) -> str | None:
    """The text a request would have checked: the prompt, or a message's text content."""
    if call.prompt is not None:
        return call.prompt
    content = fields.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(text for text in texts if isinstance(text, str)) or None
    return None


def _verdict(result: object) -> bool:
    """Whether `result` is one moderation result as OpenAI shapes it: a `flagged` boolean,
    boolean `categories` and numeric `category_scores`. Anything else is no verdict at all."""
    if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
        return False
    flags, scores = result.get("categories"), result.get("category_scores")
    if not isinstance(flags, dict) or not isinstance(scores, dict):
        return False
    numbers = (isinstance(s, int | float) and not isinstance(s, bool) for s in scores.values())
    return all(isinstance(flag, bool) for flag in flags.values()) and all(numbers)


def _scores(results: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, float]:
    best: dict[str, float] = {}
    for result in results:
        for name in names:
            score = float(result.get("category_scores", {}).get(name, 0.0))
            best[name] = max(best.get(name, 0.0), score)
    return best


class Moderator:
    """The stage, with what it needs: policy, upstream, verdict cache, strike book, clock."""

    def __init__(
        self,
        policy: ModerationPolicy,
        upstream: Upstream,
        cache: ResponseCache,
        strikes: StrikeBook,
        clock: Clock,
        stats: ModerationStats,
    ) -> None:
        self.policy = policy
        self.stats = stats
        self._upstream = upstream
        self._cache = cache
        self._strikes = strikes
        self._clock = clock
        self._limit = policy.strike_limit()

    def applies(self, operation: str) -> bool:
        """Whether any team's rules moderate `operation` (fixed at start-up)."""
        if not self.policy.enabled:
            return False
        every = [self.policy.rules, *self.policy.teams.values()]
        return any(operation in rules.operations or operation in rules.images for rules in every)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        facts = request[FACTS]
        call, principal = facts.call, facts.principal
        rules = self.policy.rules_for(principal.team)
        checks_text = call.operation in rules.operations
        checks_image = call.operation in rules.images
        if not self.policy.enabled or not (checks_text or checks_image):
            return await handler(request)
        if call.operation.startswith("images."):
            await self._refuse_if_struck_out(principal)
        text = moderated_text(call, facts.fields) if checks_text else None
        images = input_images(facts) if checks_image else []
        if text is None and checks_text:
            return await self._nothing_to_check(request, handler, call)
        if text is not None or images:
            try:
                await self._check(facts, principal, rules, Inputs(text, images))
            except (ContentPolicyViolation, ModerationUnavailable):
                not_billable(request, "moderation_refused")
                raise
        return await handler(request)

    async def _nothing_to_check(
        self, request: web.Request, handler: Handler, call: Call
    ) -> web.StreamResponse:
        """No text found: fine for a message without text, never for an image request."""
        if call.operation.startswith("images."):
            raise InvalidRequest(
                "Tollgate checks the prompt before an image is sent: send a prompt, and in a "
                "form put the prompt field before the image file.",
                param="prompt",
            )
        return await handler(request)

    async def _check(
        self, facts: Facts, principal: Principal, rules: ModerationRules, inputs: Inputs
    ) -> None:
        """Refuse with 400 (and a strike) if the verdict says so; fail as the policy says."""
        try:
            results = await self._results(principal.credential, inputs)
        except ModerationFailed:
            self._record(facts, inputs, "unavailable", [], [])
            if self.policy.failure == "fail_closed":
                raise ModerationUnavailable() from None
            return
        categories = refusing(results, rules)
        self._record(facts, inputs, "flagged" if categories else "clean", categories, results)
        if categories:
            await self._strike(principal)
            raise ContentPolicyViolation(categories)

    def _record(
        self,
        facts: Facts,
        inputs: Inputs,
        result: str,
        categories: list[str],
        results: Sequence[Mapping[str, Any]],
    ) -> None:
        self.stats.checked(result, categories)
        moderation: dict[str, object] = {"result": result, "categories": categories}
        moderation["scores"] = _scores(results, categories)
        moderation["prompt_sha256"] = hashlib.sha256((inputs.text or "").encode()).hexdigest()
        moderation["images"] = len(inputs.images)
        if self.policy.log_prompts:
            moderation["prompt"] = inputs.text
        facts.moderation = moderation

    async def _results(self, credential: Credential, inputs: Inputs) -> list[Mapping[str, Any]]:
        """The moderation results for `inputs`: from the verdict cache, or from upstream."""
        key = verdict_key(credential.scope, self.policy.model, inputs.key())
        cached = await self._cache.lookup(key)
        if cached is not None:
            self.stats.cached()
            results: list[Mapping[str, Any]] = orjson.loads(cached.body)
            return results
        results = await self._ask_upstream(credential, inputs.payload())
        now = self._clock()
        entry = Entry(200, (), orjson.dumps(results), now, now + self.policy.verdict_ttl)
        await self._cache.store(key, entry)
        return results

    async def _ask_upstream(self, credential: Credential, given: object) -> list[Mapping[str, Any]]:
        payload = {"model": self.policy.model, "input": given}
        try:
            status, body = await self._upstream.post_json(
                credential, "/v1/moderations", payload, self.policy.timeout
            )
            answer = orjson.loads(body) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            raise ModerationFailed() from None
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or not results or not all(map(_verdict, results)):
            raise ModerationFailed()
        return results

    async def _refuse_if_struck_out(self, principal: Principal) -> None:
        if self._limit is None:
            return
        allowed, window = self._limit
        try:
            recent = await self._strikes.recent(_who(principal), self._clock(), window)
        except StoreUnavailable:
            return
        if len(recent) >= allowed:
            raise StruckOut(recent[len(recent) - allowed] + window)

    async def _strike(self, principal: Principal) -> None:
        if self._limit is None:
            return
        try:
            await self._strikes.add(_who(principal), self._clock(), self._limit[1])
        except StoreUnavailable:
            self.stats.strike_lost()

    async def strike_report(self, team: str, user: str) -> dict[str, object]:
        """A user's recent strikes, the limit, and until when they are blocked (if they are)."""
        allowed, window = self._limit or (0, 0.0)
        recent = await self._strikes.recent(f"{team}:{user}", self._clock(), window)
        blocked = self._limit is not None and len(recent) >= allowed
        until = recent[len(recent) - allowed] + window if blocked else None
        return {
            "team": team,
            "user": user,
            "strikes": len(recent),
            "limit": self.policy.strikes,
            "blocked_until": until,
        }

    async def clear_strikes(self, team: str, user: str) -> None:
        """Forgive a user: their image requests are allowed again at once."""
        await self._strikes.clear(f"{team}:{user}")


def _who(principal: Principal) -> str:
    return f"{principal.team}:{principal.user}"


def verdict_key(scope: str, model: str, text: str) -> str:
    """The cache key of a verdict: the scope as a hash tag, then model and exact input."""
    digest = hashlib.sha256(orjson.dumps([model, text])).hexdigest()[:40]
    return f"{PREFIX}{{{scope}}}:verdict:{digest}"


def moderation_middleware(moderator: Moderator) -> Middleware:
    """The room as a pipeline stage."""
    return moderator.__call__
