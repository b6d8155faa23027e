"""Moderation before image generation: flagged prompts are refused before money is spent."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.limits import LimitsPolicy
from proxy.moderation_policy import ModerationPolicy, ModerationRules
from proxy.policy import Policy
from tests.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    UPSTREAM_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    Upstream,
    policy_for_tests,
)
from tests.samples import deprecated, png

VIOLENT = "a knight who wants to kill the dragon"


def moderated(**policy: Any) -> Policy:
    """The test policy with its moderation section replaced."""
    return policy_for_tests().model_copy(update={"moderation": ModerationPolicy(**policy)})


def sdk_for(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=CLIENT_KEY, max_retries=0)


def paths(upstream: Upstream) -> list[str]:
    return [seen.path for seen in upstream.state.received]


async def test_a_clean_prompt_is_checked_then_generated(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """The prompt goes to /v1/moderations on the team's credential first, then the image call."""
    await sdk.images.generate(prompt="a cute baby sea otter")
    assert paths(upstream) == ["/v1/moderations", "/v1/images/generations"]
    check = upstream.state.received[0]
    assert check.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert json.loads(check.body) == {
        "model": "omni-moderation-latest",
        "input": "a cute baby sea otter",
    }


async def test_a_flagged_prompt_is_refused_before_the_image_endpoint(
    sdk: openai.AsyncOpenAI, upstream: Upstream, proxy: Proxy
) -> None:
    """400 content_policy_violation naming the categories; no image request is ever made."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97, "harassment": 0.61}}
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.images.generate(prompt=VIOLENT)
    assert refused.value.code == "content_policy_violation"
    assert refused.value.param == "prompt"
    assert "harassment, violence" in refused.value.message
    assert paths(upstream) == ["/v1/moderations"]
    line = json.loads(proxy.log_lines()[-1])
    assert line["status"] == 400
    assert line["moderation"]["categories"] == ["harassment", "violence"]
    assert line["moderation"]["scores"] == {"harassment": 0.61, "violence": 0.97}
    assert "kill" not in proxy.log_text()
    assert len(line["moderation"]["prompt_sha256"]) == 64


async def test_image_edits_are_moderated_too(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """An edit's prompt, read from the form before the file, is checked the same way."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    with pytest.raises(openai.BadRequestError):
        await sdk.images.edit(image=("o.png", png(2), "image/png"), prompt=VIOLENT)
    await sdk.images.edit(image=("o.png", png(2), "image/png"), prompt="a hat")
    assert paths(upstream) == ["/v1/moderations", "/v1/moderations", "/v1/images/edits"]


@pytest.mark.parametrize(
    ("rules", "scores", "refused"),
    [
        ({"thresholds": {"violence": 0.99}}, {"violence": 0.95}, False),  # looser than OpenAI
        ({"thresholds": {"hate": 0.1}}, {"hate": 0.2}, True),  # stricter than OpenAI
        ({"refuse": ["sexual"]}, {"violence": 0.95}, False),  # only some categories refuse
        ({"refuse": ["violence"]}, {"violence": 0.95}, True),
    ],
)
async def test_rules_decide_what_refuses(
    make_proxy: MakeProxy,
    upstream: Upstream,
    rules: dict[str, Any],
    scores: dict[str, float],
    refused: bool,
) -> None:
    """Per-category thresholds override OpenAI's flag; a refuse list narrows the categories."""
    upstream.state.knobs.flagged = {"dragon": scores}
    proxy = await make_proxy(policy=moderated(rules=ModerationRules(**rules)))
    client = sdk_for(proxy)
    try:
        await client.images.generate(prompt=VIOLENT)
        outcome = False
    except openai.BadRequestError:
        outcome = True
    await client.close()
    assert outcome is refused
    assert ("/v1/images/generations" in paths(upstream)) is not refused


async def test_teams_have_their_own_rules(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """Team red may be stricter than everyone else."""
    upstream.state.knobs.flagged = {"dragon": {"violence": 0.3}}
    strict = ModerationRules(thresholds={"violence": 0.2})
    proxy = await make_proxy(policy=moderated(teams={"red": strict}))
    client = sdk_for(proxy)
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(prompt=VIOLENT)
    await client.close()


async def test_verdicts_are_cached(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """The same prompt twice costs one moderation call; another prompt costs another."""
    proxy = await make_proxy(**store_settings)
    client = sdk_for(proxy)
    for prompt in ("an otter", "an otter", "a beaver"):
        await client.images.generate(prompt=prompt)
    await client.close()
    assert paths(upstream).count("/v1/moderations") == 2
    assert paths(upstream).count("/v1/images/generations") == 3


SEEN = web.AppKey("seen", list[str])


def _image_upstream(moderation: web.Response | None, delay: float = 0.0) -> web.Application:
    """An upstream whose image endpoint works and whose moderation endpoint misbehaves."""
    seen: list[str] = []

    async def moderations(request: web.Request) -> web.Response:
        seen.append(request.path)
        await asyncio.sleep(delay)
        return moderation or web.json_response({"id": "m", "model": "m", "results": []})

    async def images(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"created": 1, "data": [{"url": "https://x/y.png"}]})

    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_post("/v1/images/generations", images)
    app[SEEN] = seen
    return app


async def _in_front_of(
    app: web.Application, server: AiohttpServer, make_proxy: MakeProxy, policy: Policy
) -> Proxy:
    """A Tollgate with `policy` in front of the test's own upstream `app`."""
    origin = await server(app)
    return await make_proxy(str(origin.make_url("")).rstrip("/"), policy=policy)


FAILURES = [
    pytest.param(web.json_response({"error": {}}, status=500), 0.0, id="5xx"),
    pytest.param(web.json_response({"error": {}}, status=429), 0.0, id="429"),
    pytest.param(web.Response(text="not json", content_type="text/plain"), 0.0, id="garbage"),
    pytest.param(web.json_response({"results": []}), 0.0, id="no-result"),
    pytest.param(web.json_response({"results": [1]}), 0.0, id="result-not-object"),
    pytest.param(web.json_response({"results": [{"flagged": False}]}), 0.0, id="no-categories"),
    pytest.param(
        web.json_response(
            {
                "results": [
                    {
                        "flagged": True,
                        "categories": {"violence": True},
                        "category_scores": {"violence": "high"},
                    }
                ]
            }
        ),
        0.0,
        id="score-not-number",
    ),
    pytest.param(
        web.json_response(
            {"results": [{"flagged": False, "categories": [], "category_scores": {}}]}
        ),
        0.0,
        id="categories-not-object",
    ),
    pytest.param(None, 2.0, id="timeout"),
]


@pytest.mark.parametrize(("answer", "delay"), FAILURES)
async def test_moderation_failure_fails_closed_by_default(
    aiohttp_server: AiohttpServer,
    make_proxy: MakeProxy,
    answer: web.Response | None,
    delay: float,
) -> None:
    """When moderation fails, the image request is refused with 503 and never sent."""
    app = _image_upstream(answer, delay)
    proxy = await _in_front_of(app, aiohttp_server, make_proxy, moderated(timeout=0.2))
    client = sdk_for(proxy)
    with pytest.raises(openai.InternalServerError) as refused:
        await client.images.generate(prompt="an otter")
    await client.close()
    assert refused.value.status_code == 503
    assert refused.value.code == "moderation_unavailable"
    assert app[SEEN] == ["/v1/moderations"]


@pytest.mark.parametrize(("answer", "delay"), FAILURES)
async def test_moderation_failure_can_fail_open(
    aiohttp_server: AiohttpServer,
    make_proxy: MakeProxy,
    answer: web.Response | None,
    delay: float,
) -> None:
    """With fail_open, the image request goes through and the log says it was unchecked."""
    app = _image_upstream(answer, delay)
    policy = moderated(timeout=0.2, failure="fail_open")
    proxy = await _in_front_of(app, aiohttp_server, make_proxy, policy)
    client = sdk_for(proxy)
    await client.images.generate(prompt="an otter")
    await client.close()
    assert app[SEEN] == ["/v1/moderations", "/v1/images/generations"]
    assert json.loads(proxy.log_lines()[-1])["moderation"]["result"] == "unavailable"


async def _admin(proxy: Proxy, method: str, path: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as client:
        async with client.request(method, proxy.url(path), headers=headers) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer


async def test_strikes_block_a_user_until_they_age_out(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """Two refusals within the hour block the user's image requests; an hour later they pass."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, policy=moderated(strikes="2/hour"), **store_settings)
    client = sdk_for(proxy)
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            await client.images.generate(prompt=VIOLENT)
        clock.advance(60)
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        await client.images.generate(prompt="a harmless otter")
    assert blocked.value.code == "moderation_strikes_exceeded"
    report = await _admin(proxy, "GET", "/admin/strikes/red/alice")
    assert (report["strikes"], report["blocked_until"]) == (2, clock.now - 120 + 3600)
    clock.advance(3600 - 120 + 1)
    await client.images.generate(prompt="a harmless otter")
    await client.close()


async def test_an_admin_can_clear_strikes(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """After an admin clears a user's strikes, their image requests pass again at once."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    proxy = await make_proxy(policy=moderated(strikes="1/day"), **store_settings)
    client = sdk_for(proxy)
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(prompt=VIOLENT)
    with pytest.raises(openai.PermissionDeniedError):
        await client.images.generate(prompt="an otter")
    report = await _admin(proxy, "DELETE", "/admin/strikes/red/alice")
    assert report["strikes"] == 0
    await client.images.generate(prompt="an otter")
    await client.close()


async def test_other_text_operations_can_be_moderated(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Thread messages join the moderated operations when the policy says so."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    operations = ("images.generate", "beta.messages.create")
    proxy = await make_proxy(policy=moderated(rules=ModerationRules(operations=operations)))
    client = sdk_for(proxy)
    with (
        pytest.raises(openai.BadRequestError),
        pytest.warns(DeprecationWarning, match="deprecated"),
    ):
        await client.beta.threads.messages.create("thread_1", role="user", content=VIOLENT)
    await client.close()
    assert paths(upstream) == ["/v1/moderations"]


async def test_prompts_are_logged_only_when_allowed(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """With log_prompts on, the log line carries the prompt text as well as its hash."""
    proxy = await make_proxy(policy=moderated(log_prompts=True))
    client = sdk_for(proxy)
    await client.images.generate(prompt="an otter in a hat")
    await client.close()
    assert json.loads(proxy.log_lines()[-1])["moderation"]["prompt"] == "an otter in a hat"


def _edit_form(*prompts: str, prompt_first: bool = False) -> aiohttp.FormData:
    """An image edit form with its prompt(s) before or after the image."""
    form = aiohttp.FormData()
    if prompt_first:
        form.add_field("prompt", prompts[0])
    form.add_field("image", png(2), filename="o.png", content_type="image/png")
    for prompt in prompts[1:] if prompt_first else prompts:
        form.add_field("prompt", prompt)
    return form


async def _post_edit(proxy: Proxy, form: aiohttp.FormData) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url("/v1/images/edits"), data=form, headers=headers) as r:
            assert r.status == 400
            error: dict[str, Any] = (await r.json())["error"]
            return error


async def test_a_prompt_after_the_file_is_moderated_when_forms_are_held(
    proxy: Proxy, upstream: Upstream
) -> None:
    """Forms are held whole while moderation is on: a prompt after the image is checked."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    error = await _post_edit(proxy, _edit_form(VIOLENT))
    assert error["code"] == "content_policy_violation"
    assert paths(upstream) == ["/v1/moderations"]


@pytest.mark.parametrize("validation", ["documented", "off"])
async def test_a_second_prompt_cannot_smuggle_a_flagged_one(
    make_proxy: MakeProxy, upstream: Upstream, validation: str
) -> None:
    """A clean prompt first and a flagged one after the image is a 400 naming `prompt`, with
    validation on or off: moderation holds the form either way; nothing is sent."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    proxy = await make_proxy(validation=validation)
    error = await _post_edit(proxy, _edit_form("a hat", VIOLENT, prompt_first=True))
    assert error["param"] == "prompt"
    assert "more than once" in error["message"]
    assert upstream.state.received == []


def _data_url(picture: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(picture).decode()


async def test_input_images_are_moderated_with_the_prompt(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """An edit's image goes to moderation with its prompt, as one multimodal input; a flagged
    picture is refused and the edit endpoint is never called."""
    bad, fine = png(3), png(2)
    upstream.state.knobs.flagged = {base64.b64encode(bad).decode(): {"violence/graphic": 0.9}}
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.images.edit(image=("bad.png", bad, "image/png"), prompt="a hat")
    assert "violence/graphic" in refused.value.message
    await sdk.images.edit(image=("ok.png", fine, "image/png"), prompt="a hat")
    checks = [json.loads(s.body) for s in upstream.state.received if s.path == "/v1/moderations"]
    assert checks[0]["input"] == [
        {"type": "text", "text": "a hat"},
        {"type": "image_url", "image_url": {"url": _data_url(bad)}},
    ]
    assert paths(upstream) == ["/v1/moderations", "/v1/moderations", "/v1/images/edits"]


async def test_variations_have_their_image_moderated(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """A variation has no prompt: its image alone is checked, and a flagged one refused."""
    bad = png(4)
    upstream.state.knobs.flagged = {base64.b64encode(bad).decode(): {"sexual": 0.9}}
    with pytest.raises(openai.BadRequestError), deprecated():
        await sdk.images.create_variation(image=("bad.png", bad, "image/png"))
    with deprecated():
        await sdk.images.create_variation(image=("ok.png", png(2), "image/png"))
    assert paths(upstream) == ["/v1/moderations", "/v1/moderations", "/v1/images/variations"]
    check = json.loads(upstream.state.received[0].body)
    assert check["input"] == [{"type": "image_url", "image_url": {"url": _data_url(bad)}}]


async def test_image_moderation_can_be_turned_off(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """With no image operations in the rules, a variation goes straight to upstream."""
    proxy = await make_proxy(policy=moderated(rules=ModerationRules(images=())))
    client = sdk_for(proxy)
    with deprecated():
        await client.images.create_variation(image=("ok.png", png(2), "image/png"))
    await client.close()
    assert paths(upstream) == ["/v1/images/variations"]


async def test_image_verdicts_are_cached(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """The same picture and prompt twice: one moderation call."""
    for _ in range(2):
        await sdk.images.edit(image=("o.png", png(3), "image/png"), prompt="a hat")
    assert paths(upstream).count("/v1/moderations") == 1


async def test_a_refused_prompt_costs_no_quota(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """With a one-image budget, a flagged prompt is refused and given back: the next image fits."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    limits = LimitsPolicy.model_validate({"default": ["1 images/day"]})
    policy = moderated(strikes=None).model_copy(update={"limits": limits})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    client = sdk_for(proxy)
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(prompt=VIOLENT)
    assert json.loads(proxy.log_lines()[-1])["quota_refund"] == "moderation_refused"
    await client.images.generate(prompt="an otter")
    with pytest.raises(openai.RateLimitError):
        await client.images.generate(prompt="another otter")
    await client.close()
