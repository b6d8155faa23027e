"""End to end: the official SDK, pointed at Tollgate, runs every operation of the reference pages.

Each test checks both sides: what the SDK got back (parsed strictly against its own models)
and what the fake upstream received (method, path, body, and the central key in place of the
client's).
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Upstream
from tests.samples import deprecated, png


def _last(upstream: Upstream, method: str, path: str) -> dict[str, Any]:
    """The last request upstream received, checked for method, path and key swap; its JSON."""
    seen = upstream.state.received[-1]
    assert (seen.method, seen.path) == (method, path)
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY.encode() not in seen.body
    if not seen.body or not seen.headers.get("Content-Type", "").startswith("application/json"):
        return {}
    body: dict[str, Any] = json.loads(seen.body)
    return body


async def test_images_generate(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """images.generate: n images come back; upstream got the prompt and options."""
    images = await sdk.images.generate(
        model="dall-e-3", prompt="A cute baby sea otter", n=1, size="1024x1792", quality="hd"
    )
    assert len(images.data or []) == 1
    sent = _last(upstream, "POST", "/v1/images/generations")
    assert sent.pop("user").startswith("tg-user-")
    assert sent == {
        "model": "dall-e-3",
        "prompt": "A cute baby sea otter",
        "n": 1,
        "size": "1024x1792",
        "quality": "hd",
    }


async def test_images_edit(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """images.edit: a multipart image, mask and prompt reach upstream whole."""
    picture, mask = png(4), png(4)
    images = await sdk.images.edit(
        image=("otter.png", picture, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="A cute baby sea otter wearing a beret",
        n=2,
        size="256x256",
    )
    assert len(images.data or []) == 2
    _last(upstream, "POST", "/v1/images/edits")
    body = upstream.state.received[-1].body
    assert picture in body
    assert b"A cute baby sea otter wearing a beret" in body


async def test_images_create_variation(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """images.create_variation: the image reaches upstream and n variations come back."""
    picture = png(2)
    with deprecated():
        images = await sdk.images.create_variation(
            image=("otter.png", picture, "image/png"), n=3, size="512x512"
        )
    assert len(images.data or []) == 3
    _last(upstream, "POST", "/v1/images/variations")
    assert picture in upstream.state.received[-1].body


async def test_models(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """models.list, retrieve and delete all pass through with their paths intact."""
    listed = [model.id async for model in await sdk.models.list()]
    assert listed
    _last(upstream, "GET", "/v1/models")
    model = await sdk.models.retrieve("gpt-4o")
    assert model.id == "gpt-4o"
    _last(upstream, "GET", "/v1/models/gpt-4o")
    deleted = await sdk.models.delete("ft:gpt-4o-mini:acemeco:suffix:abc123")
    assert deleted.deleted
    _last(upstream, "DELETE", "/v1/models/ft:gpt-4o-mini:acemeco:suffix:abc123")


async def test_moderations(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """moderations.create: the verdict upstream gives is the verdict the client gets."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.99}}
    verdict = await sdk.moderations.create(input=["I want to kill them.", "hello"])
    assert [result.flagged for result in verdict.results] == [True, False]
    assert verdict.results[0].category_scores.violence == 0.99
    assert _last(upstream, "POST", "/v1/moderations") == {
        "input": ["I want to kill them.", "hello"]
    }


async def test_assistants(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """beta.assistants create, list, retrieve, update and delete, with the beta header kept."""
    with deprecated():
        created = await sdk.beta.assistants.create(
            model="gpt-4o", name="Math Tutor", tools=[{"type": "code_interpreter"}]
        )
    assert upstream.state.received[-1].headers["OpenAI-Beta"] == "assistants=v2"
    assert _last(upstream, "POST", "/v1/assistants")["name"] == "Math Tutor"
    with deprecated():
        listed = await sdk.beta.assistants.list(limit=20, order="desc")
    assert listed.data
    assert upstream.state.received[-1].query == "limit=20&order=desc"
    with deprecated():
        fetched = await sdk.beta.assistants.retrieve(created.id)
    assert fetched.id == created.id
    _last(upstream, "GET", f"/v1/assistants/{created.id}")
    with deprecated():
        updated = await sdk.beta.assistants.update(created.id, name="HR Helper")
    assert updated.name == "HR Helper"
    assert _last(upstream, "POST", f"/v1/assistants/{created.id}") == {"name": "HR Helper"}
    with deprecated():
        deleted = await sdk.beta.assistants.delete(created.id)
    assert deleted.deleted
    _last(upstream, "DELETE", f"/v1/assistants/{created.id}")


async def test_threads_and_messages(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """beta.threads.create, then messages create and list on that thread."""
    with deprecated():
        thread = await sdk.beta.threads.create()
    _last(upstream, "POST", "/v1/threads")
    with deprecated():
        message = await sdk.beta.threads.messages.create(
            thread.id, role="user", content="How does AI work?"
        )
    assert message.thread_id == thread.id
    sent = _last(upstream, "POST", f"/v1/threads/{thread.id}/messages")
    assert sent == {"role": "user", "content": "How does AI work?"}
    with deprecated():
        listed = await sdk.beta.threads.messages.list(thread.id)
    assert listed.data
    _last(upstream, "GET", f"/v1/threads/{thread.id}/messages")


async def test_runs_plain(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """beta.threads.runs.create without streaming answers one run object."""
    with deprecated():
        run = await sdk.beta.threads.runs.create("thread_abc", assistant_id="asst_abc")
    assert run.thread_id == "thread_abc"
    assert _last(upstream, "POST", "/v1/threads/thread_abc/runs") == {"assistant_id": "asst_abc"}


async def test_runs_streamed(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """beta.threads.runs.create with stream=True yields OpenAI's events through to completion."""
    with deprecated():
        stream = await sdk.beta.threads.runs.create(
            "thread_abc", assistant_id="asst_abc", stream=True
        )
    events = [event.event async for event in stream]
    assert events[0] == "thread.run.created"
    assert events[-1] == "thread.run.completed"
    assert "thread.message.delta" in events
    sent = _last(upstream, "POST", "/v1/threads/thread_abc/runs")
    assert sent == {"assistant_id": "asst_abc", "stream": True}


async def test_uploads(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """uploads.create, parts.create (multipart, streamed) and complete."""
    data = b"line\n" * 10000
    upload = await sdk.uploads.create(
        bytes=len(data), filename="train.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    assert _last(upstream, "POST", "/v1/uploads")["filename"] == "train.jsonl"
    part = await sdk.uploads.parts.create(upload.id, data=data)
    assert part.upload_id == upload.id
    _last(upstream, "POST", f"/v1/uploads/{upload.id}/parts")
    assert data in upstream.state.received[-1].body
    done = await sdk.uploads.complete(upload.id, part_ids=[part.id])
    assert done.status == "completed"
    assert _last(upstream, "POST", f"/v1/uploads/{upload.id}/complete") == {"part_ids": [part.id]}


async def test_undocumented_paths_pass_through(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """Chat completions and files list are not in the table and still work unchanged."""
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.model == "gpt-4o-mini"
    assert _last(upstream, "POST", "/v1/chat/completions")["messages"] == [
        {"role": "user", "content": "hi"}
    ]
    files = await sdk.files.list()
    assert files.data is not None
    _last(upstream, "GET", "/v1/files")


async def test_sdk_errors_keep_their_types(sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """Upstream 429 and 500 reach the SDK as RateLimitError and InternalServerError."""
    upstream.state.knobs.status = 429
    with pytest.raises(openai.RateLimitError):
        await sdk.models.list()
    upstream.state.knobs.status = 500
    with pytest.raises(openai.InternalServerError):
        await sdk.models.list()
