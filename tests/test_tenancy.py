"""Teams bill to their own upstream credentials, and image requests carry a pseudonymous user."""

from __future__ import annotations

import json
import re

import aiohttp
import openai
import pytest

from proxy.policy import Policy, Team
from proxy.settings import Settings
from proxy.tenancy import Tenancy, TenancyError
from tests.conftest import (
    BLUE_UPSTREAM_KEY,
    CLIENT_KEY,
    OTHER_KEY,
    UPSTREAM_KEY,
    MakeProxy,
    Proxy,
    Upstream,
    policy_for_tests,
    without_moderation,
)
from tests.samples import png


def _client(proxy: Proxy, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=key, max_retries=0)


async def test_each_team_bills_to_its_own_credential(proxy: Proxy, upstream: Upstream) -> None:
    """alice (team red) goes out on the central key, bob (team blue) on blue's key."""
    upstream.state.knobs.expected_key = None
    for key in (CLIENT_KEY, OTHER_KEY):
        client = _client(proxy, key)
        await client.models.list()
        await client.close()
    sent = [seen.headers["Authorization"] for seen in upstream.state.received]
    assert sent == [f"Bearer {UPSTREAM_KEY}", f"Bearer {BLUE_UPSTREAM_KEY}"]
    assert "OpenAI-Organization" not in upstream.state.received[1].headers


async def test_image_requests_get_a_pseudonymous_user(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """generate and edit reach upstream with a `user` that is a hash, not the user's name."""
    await sdk.images.generate(prompt="an otter")
    await sdk.images.edit(image=("o.png", png(2), "image/png"), prompt="an otter")
    generate, edit = (seen.body for seen in upstream.state.received if "images" in seen.path)
    ids = re.findall(rb"tg-user-[0-9a-f]{32}", generate) + re.findall(
        rb'name="user"\r\n\r\n(tg-user-[0-9a-f]{32})', edit
    )
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert b"alice" not in generate + edit


async def test_only_image_requests_get_one(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """OpenAI reads `user` on the image operations; other bodies go on without one."""
    await sdk.moderations.create(input="hello")
    await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    bodies = [seen.body for seen in upstream.state.received]
    assert len(bodies) == 2
    assert all(b"tg-user-" not in body and "user" not in json.loads(body) for body in bodies)


async def test_a_user_the_client_sent_is_kept(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """A client's own `user` is never replaced or doubled."""
    await sdk.images.generate(prompt="an otter", user="user-1234")
    await sdk.images.edit(image=("o.png", png(2), "image/png"), prompt="x", user="user-1234")
    generate, edit = (seen.body for seen in upstream.state.received if "images" in seen.path)
    assert b"tg-user-" not in generate + edit
    assert edit.count(b'name="user"') == 1


@pytest.mark.parametrize(
    ("sent", "validation"),
    [
        (
            ' \r\n\t{ "prompt" : "an otter \u2603 {\\"x\\"}", "n":1,"extra":{"a":[1, 2]} }\n',
            "documented",
        ),
        ('{"prompt":"an otter","size":"1024x1024"}', "documented"),
        ("{ }", "off"),
        ("", "off"),
    ],
)
async def test_the_user_is_spliced_into_the_clients_own_json(
    make_proxy: MakeProxy, upstream: Upstream, sent: str, validation: str
) -> None:
    """The JSON upstream gets is the client's bytes with `"user"` put in front of the first
    member: whitespace, key order, escapes and unicode as sent, and still one JSON object."""
    proxy = await make_proxy(validation=validation, policy=without_moderation(policy_for_tests()))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/images/generations")
        async with client.post(url, data=sent.encode(), headers=headers) as answer:
            assert answer.status == 200, await answer.text()
    (seen,) = [seen for seen in upstream.state.received if "images" in seen.path]
    user = re.search(rb'"user":"(tg-user-[0-9a-f]{32})"', seen.body)
    assert user is not None
    received = json.loads(seen.body)
    assert received == {**json.loads(sent or "{}"), "user": user[1].decode()}
    assert next(iter(received)) == "user"
    if sent.strip(" \r\n\t{}"):
        assert seen.body.replace(user[0] + b",", b"", 1) == sent.encode()


def test_pseudonyms_are_stable_and_keyed() -> None:
    """The same user maps to the same id everywhere; another secret gives another id."""
    policy = Policy()
    one = Tenancy(policy, Settings(pseudonym_secret="s1", data_file=None))
    again = Tenancy(policy, Settings(pseudonym_secret="s1", data_file=None))
    other = Tenancy(policy, Settings(pseudonym_secret="s2", data_file=None))
    assert one.pseudonym("red", "alice") == again.pseudonym("red", "alice")
    assert one.pseudonym("red", "alice") != other.pseudonym("red", "alice")
    assert one.pseudonym("red", "alice") != one.pseudonym("red", "bob")


def test_a_team_naming_a_missing_credential_stops_start_up() -> None:
    """A policy whose team names an unset credential is refused, with the variable to set."""
    policy = Policy(teams={"default": Team(), "ml": Team(credential="ml")})
    with pytest.raises(TenancyError, match="TOLLGATE_CREDENTIALS__ML__API_KEY"):
        Tenancy(policy, Settings(data_file=None))
