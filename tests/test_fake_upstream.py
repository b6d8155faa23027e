"""The fake OpenAI upstream, driven through the real SDK with strict response validation."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types import ModerationMultiModalInputParam
from openai.types.beta import AssistantStreamEvent
from pytest_aiohttp.plugin import AiohttpServer

from proxy.fake_upstream import FAKE_UPSTREAM, FakeKnobs, FakeUpstream, create_fake_upstream
from tests.samples import deprecated, png

RUN_EVENTS = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    *["thread.message.delta"] * 6,
    "thread.message.completed",
    "thread.run.completed",
]


async def _collect(stream: AsyncIterable[AssistantStreamEvent], seen: list[str]) -> None:
    async for event in stream:
        seen.append(event.event)


@pytest.fixture
def app() -> web.Application:
    return create_fake_upstream()


@pytest.fixture
def fake(app: web.Application) -> FakeUpstream:
    return app[FAKE_UPSTREAM]


@pytest.fixture
async def server(app: web.Application, aiohttp_server: AiohttpServer) -> TestServer:
    return await aiohttp_server(app)


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")),
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield sdk
    await sdk.close()


# ---------------------------------------------------------------- operations


async def test_images_generate_returns_n_urls(client: openai.AsyncOpenAI) -> None:
    """images.generate answers n images as URLs, with the prompt as revised_prompt."""
    images = await client.images.generate(prompt="an otter", n=3)
    assert images.data is not None
    assert len(images.data) == 3
    assert all(image.url and image.url.startswith("https://") for image in images.data)
    assert images.data[0].revised_prompt == "an otter"


async def test_images_generate_b64_json(client: openai.AsyncOpenAI) -> None:
    """response_format=b64_json answers base64 PNG data instead of URLs."""
    images = await client.images.generate(prompt="x", response_format="b64_json")
    assert images.data is not None
    assert len(images.data) == 1
    assert images.data[0].url is None
    assert base64.b64decode(images.data[0].b64_json or "").startswith(b"\x89PNG")


async def test_images_edit_reads_multipart_fields(client: openai.AsyncOpenAI) -> None:
    """images.edit (multipart) honours the n and prompt form fields."""
    images = await client.images.edit(image=("otter.png", png(), "image/png"), prompt="hat", n=2)
    assert images.data is not None
    assert [image.revised_prompt for image in images.data] == ["hat", "hat"]


async def test_images_variation_reads_multipart_fields(client: openai.AsyncOpenAI) -> None:
    """images.create_variation (multipart) honours n and response_format."""
    with deprecated():
        images = await client.images.create_variation(
            image=("otter.png", png(), "image/png"), n=2, response_format="b64_json"
        )
    assert images.data is not None
    assert len(images.data) == 2
    assert all(image.b64_json for image in images.data)


async def test_models_list_retrieve_delete(client: openai.AsyncOpenAI) -> None:
    """Models can be listed, retrieved by id and deleted."""
    models = [model.id async for model in client.models.list()]
    assert "gpt-4o" in models
    model = await client.models.retrieve("ft:gpt-4o:acme::abc123")
    assert model.id == "ft:gpt-4o:acme::abc123"
    deleted = await client.models.delete("ft:gpt-4o:acme::abc123")
    assert deleted.deleted
    assert deleted.id == "ft:gpt-4o:acme::abc123"


async def test_moderations_answer_one_result_per_string(client: openai.AsyncOpenAI) -> None:
    """A list of strings gets one unflagged result each, with every omni category present."""
    moderation = await client.moderations.create(input=["hello", "world"])
    assert moderation.id.startswith("modr-")
    assert len(moderation.results) == 2
    result = moderation.results[0]
    assert not result.flagged
    assert result.categories.illicit_violent is False
    assert result.category_scores.self_harm_intent < 0.5
    assert result.category_applied_input_types.violence == ["text"]


async def test_moderations_multimodal_input_gets_one_result(client: openai.AsyncOpenAI) -> None:
    """A multimodal list is one input: one result, image categories applied to images."""
    parts: list[ModerationMultiModalInputParam] = [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    moderation = await client.moderations.create(model="omni-moderation-latest", input=parts)
    assert len(moderation.results) == 1
    applied = moderation.results[0].category_applied_input_types
    assert applied.violence == ["text", "image"]
    assert applied.hate == ["text"]


async def test_assistants_create_list_retrieve_update_delete(client: openai.AsyncOpenAI) -> None:
    """Assistants CRUD answers spec objects that echo the request's fields."""
    with deprecated():
        created = await client.beta.assistants.create(
            model="gpt-4o-mini",
            name="Helper",
            instructions="Be brief.",
            tools=[{"type": "code_interpreter"}],
            metadata={"team": "qa"},
        )
    with deprecated():
        page = await client.beta.assistants.list()
    with deprecated():
        retrieved = await client.beta.assistants.retrieve(created.id)
    with deprecated():
        updated = await client.beta.assistants.update(created.id, name="Renamed")
    with deprecated():
        deleted = await client.beta.assistants.delete(created.id)
    assert created.id.startswith("asst_")
    assert (created.model, created.name, created.instructions) == (
        "gpt-4o-mini",
        "Helper",
        "Be brief.",
    )
    assert created.tools[0].type == "code_interpreter"
    assert created.metadata == {"team": "qa"}
    assert page.model_extra == {
        "object": "list",
        "first_id": page.data[0].id,
        "last_id": page.data[-1].id,
    }
    assert page.has_more is False
    assert retrieved.id == created.id
    assert (updated.id, updated.name) == (created.id, "Renamed")
    assert deleted.deleted


async def test_threads_and_messages(client: openai.AsyncOpenAI) -> None:
    """Threads and messages can be created, and messages listed."""
    with deprecated():
        thread = await client.beta.threads.create(metadata={"k": "v"})
    with deprecated():
        message = await client.beta.threads.messages.create(thread.id, role="user", content="Hi")
    with deprecated():
        page = await client.beta.threads.messages.list(thread.id)
    assert thread.id.startswith("thread_")
    assert thread.metadata == {"k": "v"}
    assert message.id.startswith("msg_")
    assert message.thread_id == thread.id
    assert message.content[0].type == "text"
    assert message.content[0].text.value == "Hi"
    assert page.data
    assert (page.model_extra or {})["first_id"] == page.data[0].id
    assert all(item.thread_id == thread.id for item in page.data)


async def test_run_create_answers_a_queued_run(client: openai.AsyncOpenAI) -> None:
    """A plain run create answers a queued Run object."""
    with deprecated():
        run = await client.beta.threads.runs.create("thread_abc", assistant_id="asst_abc")
    assert run.id.startswith("run_")
    assert (run.thread_id, run.assistant_id, run.status) == ("thread_abc", "asst_abc", "queued")


async def test_run_stream_sends_openai_events(client: openai.AsyncOpenAI) -> None:
    """A streamed run sends OpenAI's event sequence and ends with a completed run."""
    with deprecated():
        stream = await client.beta.threads.runs.create(
            "thread_abc", assistant_id="asst_abc", stream=True
        )
    events = [event async for event in stream]
    assert [event.event for event in events] == RUN_EVENTS
    final = events[-1]
    assert final.event == "thread.run.completed"
    assert final.data.status == "completed"
    assert final.data.usage is not None


async def test_run_stream_frames_are_flushed_one_by_one(
    fake: FakeUpstream, server: TestServer
) -> None:
    """Each SSE frame is written on its own, ahead of the next, and [DONE] closes the stream."""
    fake.knobs.event_pause = 0.5
    url = server.make_url("/v1/threads/thread_abc/runs")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"assistant_id": "asst_abc", "stream": True}) as response,
    ):
        assert response.content_type == "text/event-stream"
        first = await response.content.readuntil(b"\n\n")
        assert first.startswith(b"event: thread.run.created\ndata: {")
        assert response.content.is_eof() is False
        assert b"event:" not in response.content.read_nowait()
        fake.knobs.event_pause = 0.0
        rest = await response.content.read()
    frames = (first + rest).split(b"\n\n")
    assert frames.pop() == b""
    assert frames.pop() == b"event: done\ndata: [DONE]"
    names = [frame.split(b"\n")[0].removeprefix(b"event: ").decode() for frame in frames]
    assert names == RUN_EVENTS


async def test_uploads_create_add_part_complete(client: openai.AsyncOpenAI) -> None:
    """An upload is created pending, takes parts, and completes into a file."""
    upload = await client.uploads.create(
        bytes=5, filename="data.jsonl", mime_type="text/jsonl", purpose="batch"
    )
    part = await client.uploads.parts.create(upload.id, data=b"hello")
    completed = await client.uploads.complete(upload.id, part_ids=[part.id])
    assert upload.id.startswith("upload_")
    assert upload.status == "pending"
    assert part.id.startswith("part_")
    assert part.upload_id == upload.id
    assert completed.status == "completed"
    assert completed.file is not None
    assert completed.file.id.startswith("file-")
    assert (completed.file.filename, completed.file.bytes, completed.file.purpose) == (
        "data.jsonl",
        5,
        "batch",
    )


async def test_chat_completion_echoes_model(client: openai.AsyncOpenAI) -> None:
    """A chat completion answers with the requested model and an assistant message."""
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content


async def test_files_list(client: openai.AsyncOpenAI) -> None:
    """files.list answers file objects."""
    files = [file async for file in client.files.list()]
    assert files
    assert all(file.id.startswith("file-") for file in files)


async def test_unknown_route_is_openai_404(server: TestServer) -> None:
    """Unknown paths and methods under /v1 answer OpenAI's Invalid URL error."""
    async with (
        aiohttp.ClientSession() as session,
        session.patch(server.make_url("/v1/models")) as response,
    ):
        body = await response.json()
    assert response.status == 404
    assert body == {
        "error": {
            "message": "Invalid URL (PATCH /v1/models)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


async def test_unparsable_json_is_openai_400(server: TestServer) -> None:
    """A JSON operation given a body that is not JSON answers OpenAI's 400 error."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/v1/moderations"), data=b"{oops") as response,
    ):
        body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "invalid_request_error"


async def test_every_answer_has_openai_headers(client: openai.AsyncOpenAI) -> None:
    """Answers carry x-request-id (req_...) and openai-processing-ms."""
    raw = await client.models.with_raw_response.list()
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-processing-ms"].isdigit()


async def test_received_records_requests_in_order(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    """Every request is recorded with its method, path, query, headers and raw body."""
    await client.files.list(limit=5)
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    first, second = fake.received
    assert (first.method, first.path, first.query, first.body) == (
        "GET",
        "/v1/files",
        "limit=5",
        b"",
    )
    assert (second.method, second.path) == ("POST", "/v1/chat/completions")
    assert json.loads(second.body)["model"] == "m"
    assert second.headers["authorization"] == "Bearer sk-test"


# ---------------------------------------------------------------- knobs


async def test_latency_delays_the_answer(client: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    """With latency set, the answer is not there before the delay has passed."""
    fake.knobs.latency = 0.2
    task = asyncio.create_task(client.models.retrieve("gpt-4o"))
    done, _ = await asyncio.wait({task}, timeout=0.05)
    assert not done
    assert (await task).id == "gpt-4o"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (400, openai.BadRequestError),
    ],
)
async def test_status_knob_raises_matching_sdk_error(
    client: openai.AsyncOpenAI, fake: FakeUpstream, status: int, error: type[openai.APIStatusError]
) -> None:
    """The status knob answers that status with an OpenAI error body."""
    fake.knobs.status = status
    with pytest.raises(error) as caught:
        await client.models.list()
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    if status == 429:
        assert caught.value.code == "rate_limit_exceeded"
    if status >= 500:
        assert caught.value.type == "server_error"


async def test_expected_key_rejects_other_keys(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    """With expected_key set, another key gets 401 invalid_api_key; the right key passes."""
    fake.knobs.expected_key = "sk-other"
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.models.list()
    assert caught.value.code == "invalid_api_key"
    fake.knobs.expected_key = "sk-test"
    assert (await client.models.list()).data


async def test_flagged_inputs_get_chosen_scores(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    """An input containing a flagged key is flagged with the chosen scores; others are not."""
    fake.knobs.flagged = {"punch": {"violence": 0.9, "harassment": 0.3}}
    moderation = await client.moderations.create(input=["I will punch you", "hello"])
    hit, miss = moderation.results
    assert hit.flagged
    assert hit.categories.violence is True
    assert hit.categories.harassment is False
    assert hit.category_scores.violence == 0.9
    assert hit.category_scores.harassment == 0.3
    assert not miss.flagged
    assert miss.categories.violence is False


async def test_reset_after_events_breaks_the_stream(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    """With reset_after_events, the stream stops abruptly and the SDK raises."""
    fake.knobs.reset_after_events = 3
    with deprecated():
        stream = await client.beta.threads.runs.create(
            "thread_abc", assistant_id="asst_abc", stream=True
        )
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await _collect(stream, seen)
    assert seen == RUN_EVENTS[:3]


async def test_reset_mid_body_breaks_json_answers(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    """With reset_mid_body, a JSON answer is cut in half and the SDK raises."""
    fake.knobs.reset_mid_body = True
    with pytest.raises(openai.APIConnectionError):
        await client.models.list()


async def test_knobs_can_be_passed_at_creation(aiohttp_server: AiohttpServer) -> None:
    """create_fake_upstream uses the knobs it is given."""
    knobs = FakeKnobs(status=502)
    app = create_fake_upstream(knobs)
    assert app[FAKE_UPSTREAM].knobs is knobs
    server = await aiohttp_server(app)
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url("/v1/models")) as response,
    ):
        assert response.status == 502
        assert (await response.json())["error"]["type"] == "server_error"


# ---------------------------------------------------------------- control


@pytest.fixture
async def controlled(aiohttp_server: AiohttpServer) -> TestServer:
    """A fake serving `/_fake/knobs`, as `tollgate fake-upstream --control` does."""
    return await aiohttp_server(create_fake_upstream(control=True))


async def test_knobs_change_at_run_time_through_control(controlled: TestServer) -> None:
    """PUT /_fake/knobs changes what the next requests get; putting the default back undoes it."""
    async with aiohttp.ClientSession() as session:
        knobs_url = controlled.make_url("/_fake/knobs")
        async with session.put(knobs_url, json={"status": 503, "latency": 0}) as changed:
            assert changed.status == 200
            assert (await changed.json())["status"] == 503
        async with session.get(controlled.make_url("/v1/models")) as refused:
            assert refused.status == 503
        async with session.put(knobs_url, json={"status": None}) as undone:
            assert (await undone.json())["status"] is None
        async with session.get(controlled.make_url("/v1/models")) as answered:
            assert answered.status == 200


async def test_control_is_not_held_up_by_the_faults_it_sets(controlled: TestServer) -> None:
    """The control routes skip the fault knobs: a forced status or reset never blocks undoing it."""
    async with aiohttp.ClientSession() as session:
        knobs_url = controlled.make_url("/_fake/knobs")
        faults = {"status": 500, "reset_mid_body": True}
        async with session.put(knobs_url, json=faults) as changed:
            assert changed.status == 200
        async with session.get(knobs_url) as shown:
            assert shown.status == 200
            assert await shown.json() == {
                "latency": 0.0,
                "status": 500,
                "event_pause": 0.0,
                "reset_after_events": None,
                "reset_mid_body": True,
                "flagged": {},
                "record": True,
                "retry_after": None,
            }


async def test_flagged_inputs_can_be_set_through_control(controlled: TestServer) -> None:
    """A needle set through control flags moderation inputs containing it."""
    async with aiohttp.ClientSession() as session:
        flagged = {"flagged": {"sabotage": {"violence": 0.9}}}
        async with session.put(controlled.make_url("/_fake/knobs"), json=flagged) as changed:
            assert changed.status == 200
        moderate = controlled.make_url("/v1/moderations")
        async with session.post(moderate, json={"input": "plan the sabotage"}) as answer:
            result = (await answer.json())["results"][0]
    assert result["flagged"] is True
    assert result["categories"]["violence"] is True


@pytest.mark.parametrize(
    "changes",
    [
        {"status": 503, "lateness": 1},
        {"status": 503, "latency": "slow"},
        {"status": 503, "latency": -1},
        {"status": 503, "reset_mid_body": 1},
        {"status": 503, "latency": True},
        {"status": 503, "flagged": {"x": {"violence": "high"}}},
        {"status": 503, "flagged": {"x": 0.9}},
        [],
    ],
    ids=[
        "unknown",
        "string",
        "negative",
        "int-for-bool",
        "bool-for-number",
        "score",
        "scores",
        "not-object",
    ],
)
async def test_bad_knobs_are_refused_and_nothing_changes(
    aiohttp_server: AiohttpServer, changes: object
) -> None:
    """A knob that does not exist or does not fit is a 400, and no knob of that PUT is set."""
    app = create_fake_upstream(control=True)
    server = await aiohttp_server(app)
    async with (
        aiohttp.ClientSession() as session,
        session.put(server.make_url("/_fake/knobs"), json=changes) as refused,
    ):
        assert refused.status == 400
        assert (await refused.json())["error"]["type"] == "invalid_request_error"
    assert app[FAKE_UPSTREAM].knobs == FakeKnobs()


async def test_control_is_off_unless_asked_for(server: TestServer) -> None:
    """Without `control`, /_fake/knobs is an unknown route like any other."""
    async with (
        aiohttp.ClientSession() as session,
        session.put(server.make_url("/_fake/knobs"), json={"status": 500}) as answer,
    ):
        assert answer.status == 404
