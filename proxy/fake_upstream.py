"""A fake OpenAI API (aiohttp) answering like the real one, with fault knobs, for tests and benches.

It records every request it receives, answers the operations Tollgate is exercised with (images,
models, moderations, assistants, threads, messages, runs with SSE streaming, uploads, chat
completions, files) with bodies the official SDK accepts under strict validation, and misbehaves on
demand through `FakeKnobs` (latency, forced statuses with `Retry-After`, pauses and resets
mid-stream or mid-body, malformed bodies, a required API key, flagged moderation inputs). It notes
every request whose client left before its answer was complete (`cut_off`). Every answer is made
up; nothing is persisted except the uploads' declared metadata, which `complete` echoes back.
Started with `control=True` (the `--control` flag of `tollgate fake-upstream`), it also serves
`GET` and `PUT /_fake/knobs`, so another process can change the knobs while it runs
(bench/soak.py injects faults that way).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDictProxy

JSON = dict[str, Any]
Event = tuple[str, JSON]

_MAX_BODY: Final = 128 * 1024 * 1024
_MODELS: Final = (
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4.1", 1744316542, "system"),
    ("o3-mini", 1737146383, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("dall-e-3", 1698785189, "system"),
    ("omni-moderation-latest", 1731689265, "system"),
    ("whisper-1", 1677532384, "openai-internal"),
)
_DEFAULT_MODEL: Final = "gpt-4o"
_MODERATION_MODEL: Final = "omni-moderation-latest"
_REPLY_WORDS: Final = ("Hello", " from", " the", " fake", " upstream", ".")
_TINY_PNG_B64: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
# Omni moderation categories and the input types each one can be applied to.
_MODERATION_CATEGORIES: Final[Mapping[str, tuple[str, ...]]] = {
    "harassment": ("text",),
    "harassment/threatening": ("text",),
    "hate": ("text",),
    "hate/threatening": ("text",),
    "illicit": ("text",),
    "illicit/violent": ("text",),
    "self-harm": ("text", "image"),
    "self-harm/instructions": ("text", "image"),
    "self-harm/intent": ("text", "image"),
    "sexual": ("text", "image"),
    "sexual/minors": ("text",),
    "violence": ("text", "image"),
    "violence/graphic": ("text", "image"),
}
_BASELINE_SCORE: Final = 1.0e-6
_FLAG_THRESHOLD: Final = 0.5
# status -> (error type, error code, message) for the `status` knob; 5xx fall back to server_error.
_ERROR_KINDS: Final[Mapping[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Not found."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
}
_SERVER_ERROR: Final = (
    "server_error",
    None,
    "The server had an error while processing your request. Sorry about that!",
)


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class FakeKnobs:
    """Faults to inject; read afresh on every request, so tests may change them at run time."""

    latency: float = 0.0
    status: int | None = None
    event_pause: float = 0.0
    reset_after_events: int | None = None
    reset_mid_body: bool = False
    expected_key: str | None = None
    flagged: dict[str, dict[str, float]] = field(default_factory=dict)
    record: bool = True
    retry_after: str | None = None  # sent with a forced status, as OpenAI does with its 429s
    malformed: dict[str, bytes] = field(default_factory=dict)  # path -> a 200 body, as it is


# The knobs `PUT /_fake/knobs` and `--knobs` may set, with the JSON types each one takes.
_SETTABLE: Final[Mapping[str, tuple[type, ...]]] = {
    "latency": (int, float),
    "status": (int, type(None)),
    "event_pause": (int, float),
    "reset_after_events": (int, type(None)),
    "reset_mid_body": (bool,),
    "flagged": (dict,),
    "retry_after": (str, type(None)),
    "record": (bool,),
}


def set_knobs(knobs: FakeKnobs, changes: object) -> None:
    """Apply a JSON object of knob values to `knobs`; ValueError names what does not fit."""
    if not isinstance(changes, dict):
        raise ValueError("knobs must be a JSON object")
    for name, value in changes.items():
        kinds = _SETTABLE.get(name)
        if kinds is None:
            raise ValueError(f"unknown knob {name!r}; known: {', '.join(_SETTABLE)}")
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds) or not _fits(name, value):
            raise ValueError(f"knob {name!r} cannot be {value!r}")
    for name, value in changes.items():
        setattr(knobs, name, value)


def _fits(name: str, value: object) -> bool:
    """Numbers are not negative; `flagged` maps needles to {category: score}."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value >= 0
    if name != "flagged" or not isinstance(value, dict):
        return True
    return all(
        isinstance(scores, dict)
        and all(
            isinstance(category, str) and isinstance(score, int | float) and score >= 0
            for category, score in scores.items()
        )
        for scores in value.values()
    )


def knob_values(knobs: FakeKnobs) -> JSON:
    """The knobs `PUT /_fake/knobs` may set, as JSON."""
    return {name: getattr(knobs, name) for name in _SETTABLE}


@dataclass
class FakeUpstream:
    """The app's state: its knobs, every request received, the uploads created so far, the
    paths of requests as their head arrives (before the body is read), and of those whose
    client left while the body or a stream was on its way."""

    knobs: FakeKnobs
    received: list[Recorded]
    uploads: dict[str, JSON] = field(default_factory=dict)
    arrived: list[str] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)


FAKE_UPSTREAM: Final[web.AppKey[FakeUpstream]] = web.AppKey("fake_upstream", FakeUpstream)
_STARTED: Final = web.RequestKey("fake_upstream_started", float)
_CONTROL: Final = "/_fake/"


# ---------------------------------------------------------------- helpers


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def _now() -> int:
    return int(time.time())


def _fake(request: web.Request) -> FakeUpstream:
    return request.app[FAKE_UPSTREAM]


def _error_body(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    body = _error_body(message, kind, code)
    return web.Response(status=status, body=body, content_type="application/json")


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _answer(request: web.Request, payload: JSON) -> web.StreamResponse:
    """A 200 JSON answer, or with `reset_mid_body` its first half followed by a connection reset."""
    body = json.dumps(payload).encode()
    if not _fake(request).knobs.reset_mid_body:
        return web.Response(body=body, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    _abort(request)
    return response


async def _json_body(request: web.Request) -> JSON:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        message = "We could not parse the JSON body of your request."
        text = _error_body(message, "invalid_request_error", None).decode()
        raise web.HTTPBadRequest(text=text, content_type="application/json") from None
    return parsed if isinstance(parsed, dict) else {}


async def _form_fields(request: web.Request) -> dict[str, bytes]:
    """The multipart/form-data fields by name (the body was already read, so parse the bytes)."""
    head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = BytesParser(EmailMessage, policy=HTTP).parsebytes(head + await request.read())
    if not message.is_multipart():
        return {}
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = payload if isinstance(payload, bytes) else b""
    return fields


def _listing(items: list[JSON]) -> JSON:
    first_id = items[0]["id"] if items else None
    last_id = items[-1]["id"] if items else None
    return {
        "object": "list",
        "data": items,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": False,
    }


# ---------------------------------------------------------------- middleware and signals


@web.middleware
async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Note a client that leaves before its answer is complete (the body half sent, say).

    The control routes (`/_fake/...`) pass untouched: faults never get in the way of ending them.
    """
    if request.path.startswith(_CONTROL):
        return await handler(request)
    try:
        return await _gated(request, handler)
    except (ConnectionError, asyncio.CancelledError):
        _fake(request).cut_off.append(request.path)
        raise


async def _gated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record, wait, enforce the key and the forced status, and turn unknown routes into 404s."""
    fake = _fake(request)
    request[_STARTED] = time.monotonic()
    record = fake.knobs.record  # off for long runs: these lists would grow for ever
    if record:
        fake.arrived.append(request.path)
    body = await request.read()
    if record:
        fake.received.append(
            Recorded(request.method, request.path, request.query_string, request.headers, body)
        )
    knobs = fake.knobs
    if knobs.latency > 0:
        await asyncio.sleep(knobs.latency)
    refusal = _refusal(request, knobs)
    if refusal is not None:
        return refusal
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        message = f"Invalid URL ({request.method} {request.path})"
        return _error(404, message, "invalid_request_error")


def _refusal(request: web.Request, knobs: FakeKnobs) -> web.Response | None:
    if knobs.expected_key is not None:
        given = request.headers.get("Authorization", "")
        if given != f"Bearer {knobs.expected_key}":
            return _bad_key(given.removeprefix("Bearer "))
    if knobs.status is not None:
        kind, code, message = _error_kind(knobs.status)
        response = _error(knobs.status, message, kind, code)
        if knobs.retry_after is not None:
            response.headers["Retry-After"] = knobs.retry_after
        return response
    if request.path in knobs.malformed:
        return web.Response(body=knobs.malformed[request.path], content_type="application/json")
    return None


def _error_kind(status: int) -> tuple[str, str | None, str]:
    if status in _ERROR_KINDS:
        return _ERROR_KINDS[status]
    if status >= 500:
        return _SERVER_ERROR
    return "invalid_request_error", None, "Request refused."


def _bad_key(given: str) -> web.Response:
    masked = f"{given[:3]}*{given[-4:]}" if len(given) > 8 else "***"
    message = (
        f"Incorrect API key provided: {masked}. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    return _error(401, message, "invalid_request_error", "invalid_api_key")


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    """Add OpenAI's per-response headers to every answer, streamed or not."""
    started = request.get(_STARTED, time.monotonic())
    response.headers["x-request-id"] = f"req_{secrets.token_hex(16)}"
    response.headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))


# ---------------------------------------------------------------- images


def _count(raw: object) -> int:
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    return min(max(raw, 1), 10) if isinstance(raw, int) else 1


def _images(n: int, response_format: object, prompt: str | None) -> JSON:
    def image() -> JSON:
        if response_format in ("b64_json", b"b64_json"):
            return {"b64_json": _TINY_PNG_B64, "revised_prompt": prompt}
        url = f"https://images.fake-upstream.invalid/{_new_id('img-')}.png"
        return {"url": url, "revised_prompt": prompt}

    return {"created": _now(), "data": [image() for _ in range(n)]}


async def _images_generate(request: web.Request) -> web.StreamResponse:
    params = await _json_body(request)
    prompt = params.get("prompt")
    images = _images(_count(params.get("n")), params.get("response_format"), prompt)
    return await _answer(request, images)


async def _images_from_form(request: web.Request) -> web.StreamResponse:
    """Edits and variations: same answer, parameters from multipart fields."""
    fields = await _form_fields(request)
    prompt = fields["prompt"].decode(errors="replace") if "prompt" in fields else None
    images = _images(_count(fields.get("n")), fields.get("response_format"), prompt)
    return await _answer(request, images)


# ---------------------------------------------------------------- models


def _model(model_id: str, created: int = 1715367049, owned_by: str = "system") -> JSON:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


async def _models_list(request: web.Request) -> web.StreamResponse:
    models = [_model(*row) for row in _MODELS]
    return await _answer(request, {"object": "list", "data": models})


async def _models_retrieve(request: web.Request) -> web.StreamResponse:
    return await _answer(request, _model(request.match_info["model"]))


async def _models_delete(request: web.Request) -> web.StreamResponse:
    deleted = {"id": request.match_info["model"], "object": "model", "deleted": True}
    return await _answer(request, deleted)


# ---------------------------------------------------------------- moderations


def _moderation_inputs(raw: object) -> list[tuple[str, set[str]]]:
    """(text, input types) per result: one per string, one for a whole multimodal list."""
    if isinstance(raw, str):
        return [(raw, {"text"})]
    if not isinstance(raw, list):
        return [("", {"text"})]
    if all(isinstance(item, str) for item in raw):
        return [(item, {"text"}) for item in raw]
    parts = [item for item in raw if isinstance(item, dict)]
    text = " ".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")
    urls = [str(part.get("image_url", {}).get("url", "")) for part in parts]
    text = " ".join([text, *urls])  # a flag can name an image too, by its data URL
    kinds = {"image" if part.get("type") == "image_url" else "text" for part in parts}
    return [(text, kinds or {"text"})]


def _moderation_result(text: str, kinds: set[str], flagged: dict[str, dict[str, float]]) -> JSON:
    scores = dict.fromkeys(_MODERATION_CATEGORIES, _BASELINE_SCORE)
    hits = [chosen for needle, chosen in flagged.items() if needle and needle in text]
    for chosen in hits:
        for category, score in chosen.items():
            scores[category] = max(score, scores.get(category, 0.0))
    applied = {
        category: [kind for kind in allowed if kind in kinds]
        for category, allowed in _MODERATION_CATEGORIES.items()
    }
    return {
        "flagged": bool(hits),
        "categories": {category: score >= _FLAG_THRESHOLD for category, score in scores.items()},
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


async def _moderations_create(request: web.Request) -> web.StreamResponse:
    params = await _json_body(request)
    flagged = _fake(request).knobs.flagged
    results = [
        _moderation_result(text, kinds, flagged)
        for text, kinds in _moderation_inputs(params.get("input"))
    ]
    model = params.get("model") or _MODERATION_MODEL
    return await _answer(request, {"id": _new_id("modr-"), "model": model, "results": results})


# ---------------------------------------------------------------- assistants


def _assistant(assistant_id: str, params: JSON) -> JSON:
    return {
        "id": assistant_id,
        "object": "assistant",
        "created_at": _now(),
        "name": params.get("name"),
        "description": params.get("description"),
        "model": params.get("model") or _DEFAULT_MODEL,
        "instructions": params.get("instructions"),
        "tools": params.get("tools") or [],
        "tool_resources": params.get("tool_resources") or {},
        "metadata": params.get("metadata") or {},
        "temperature": params.get("temperature", 1.0),
        "top_p": params.get("top_p", 1.0),
        "response_format": params.get("response_format", "auto"),
    }


async def _assistants_create(request: web.Request) -> web.StreamResponse:
    return await _answer(request, _assistant(_new_id("asst_"), await _json_body(request)))


async def _assistants_list(request: web.Request) -> web.StreamResponse:
    assistants = [_assistant(_new_id("asst_"), {"name": f"Assistant {n}"}) for n in (1, 2)]
    return await _answer(request, _listing(assistants))


async def _assistants_retrieve(request: web.Request) -> web.StreamResponse:
    return await _answer(request, _assistant(request.match_info["assistant_id"], {}))


async def _assistants_update(request: web.Request) -> web.StreamResponse:
    params = await _json_body(request)
    return await _answer(request, _assistant(request.match_info["assistant_id"], params))


async def _assistants_delete(request: web.Request) -> web.StreamResponse:
    assistant_id = request.match_info["assistant_id"]
    deleted = {"id": assistant_id, "object": "assistant.deleted", "deleted": True}
    return await _answer(request, deleted)


# ---------------------------------------------------------------- threads and messages


async def _threads_create(request: web.Request) -> web.StreamResponse:
    params = await _json_body(request)
    thread = {
        "id": _new_id("thread_"),
        "object": "thread",
        "created_at": _now(),
        "metadata": params.get("metadata") or {},
        "tool_resources": params.get("tool_resources") or {},
    }
    return await _answer(request, thread)


def _text_block(value: str) -> JSON:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def _content_blocks(raw: object) -> list[JSON]:
    """Message content as returned: a string becomes one text block, parts keep their shape."""
    if isinstance(raw, str):
        return [_text_block(raw)]
    if not isinstance(raw, list):
        return []
    return [
        _text_block(str(part.get("text", ""))) if part.get("type") == "text" else part
        for part in raw
        if isinstance(part, dict)
    ]


def _message(thread_id: str, message_id: str, params: JSON, **extra: Any) -> JSON:
    return {
        "id": message_id,
        "object": "thread.message",
        "created_at": _now(),
        "thread_id": thread_id,
        "role": params.get("role", "user"),
        "content": _content_blocks(params.get("content", "")),
        "assistant_id": None,
        "run_id": None,
        "attachments": params.get("attachments") or [],
        "metadata": params.get("metadata") or {},
        "status": "completed",
        "completed_at": None,
        "incomplete_at": None,
        "incomplete_details": None,
    } | extra


async def _messages_create(request: web.Request) -> web.StreamResponse:
    thread_id = request.match_info["thread_id"]
    message = _message(thread_id, _new_id("msg_"), await _json_body(request))
    return await _answer(request, message)


async def _messages_list(request: web.Request) -> web.StreamResponse:
    thread_id = request.match_info["thread_id"]
    reply = "".join(_REPLY_WORDS)
    messages = [
        _message(thread_id, _new_id("msg_"), {"role": "assistant", "content": reply}),
        _message(thread_id, _new_id("msg_"), {"role": "user", "content": "Hello?"}),
    ]
    return await _answer(request, _listing(messages))


# ---------------------------------------------------------------- runs


def _run(thread_id: str, run_id: str, params: JSON, status: str) -> JSON:
    now = _now()
    done = status == "completed"
    return {
        "id": run_id,
        "object": "thread.run",
        "created_at": now,
        "assistant_id": params.get("assistant_id") or _new_id("asst_"),
        "thread_id": thread_id,
        "status": status,
        "started_at": now if status != "queued" else None,
        "expires_at": None if done else now + 600,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": now if done else None,
        "required_action": None,
        "last_error": None,
        "model": params.get("model") or _DEFAULT_MODEL,
        "instructions": params.get("instructions") or "",
        "tools": params.get("tools") or [],
        "metadata": params.get("metadata") or {},
        "temperature": params.get("temperature", 1.0),
        "top_p": params.get("top_p", 1.0),
        "max_completion_tokens": params.get("max_completion_tokens"),
        "max_prompt_tokens": params.get("max_prompt_tokens"),
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "incomplete_details": None,
        "usage": _usage(12, len(_REPLY_WORDS)) if done else None,
        "response_format": params.get("response_format", "auto"),
        "tool_choice": params.get("tool_choice", "auto"),
        "parallel_tool_calls": params.get("parallel_tool_calls", True),
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _run_events(thread_id: str, params: JSON) -> Iterator[Event]:
    """The events of a run that writes one assistant message, in OpenAI's order."""
    run_id, message_id = _new_id("run_"), _new_id("msg_")
    yield "thread.run.created", _run(thread_id, run_id, params, "queued")
    yield "thread.run.queued", _run(thread_id, run_id, params, "queued")
    yield "thread.run.in_progress", _run(thread_id, run_id, params, "in_progress")
    context = {"role": "assistant", "content": []}
    links = {"assistant_id": params.get("assistant_id"), "run_id": run_id}
    draft = _message(thread_id, message_id, context, status="in_progress", **links)
    yield "thread.message.created", draft
    yield "thread.message.in_progress", draft
    for word in _REPLY_WORDS:
        block = {"index": 0, "type": "text", "text": {"value": word, "annotations": []}}
        delta = {"id": message_id, "object": "thread.message.delta", "delta": {"content": [block]}}
        yield "thread.message.delta", delta
    finished = {"role": "assistant", "content": "".join(_REPLY_WORDS)}
    yield (
        "thread.message.completed",
        _message(thread_id, message_id, finished, completed_at=_now(), **links),
    )
    yield "thread.run.completed", _run(thread_id, run_id, params, "completed")


async def _runs_create(request: web.Request) -> web.StreamResponse:
    thread_id = request.match_info["thread_id"]
    params = await _json_body(request)
    if params.get("stream") is True:
        return await _stream(request, _run_events(thread_id, params))
    return await _answer(request, _run(thread_id, _new_id("run_"), params, "queued"))


async def _stream(request: web.Request, events: Iterator[Event]) -> web.StreamResponse:
    """Answer an SSE stream; a client hanging up mid-stream just ends it."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        await _write_events(request, response, events)
    except ConnectionError:
        _fake(request).cut_off.append(request.path)
    return response


async def _write_events(
    request: web.Request, response: web.StreamResponse, events: Iterator[Event]
) -> None:
    """Write each event as its own frame, honouring `event_pause` and `reset_after_events`."""
    for sent, (name, data) in enumerate(events):
        knobs = _fake(request).knobs
        if knobs.reset_after_events is not None and sent >= knobs.reset_after_events:
            _abort(request)
            return
        if sent and knobs.event_pause > 0:
            await asyncio.sleep(knobs.event_pause)
        await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
    await response.write(b"event: done\ndata: [DONE]\n\n")


# ---------------------------------------------------------------- uploads and files


def _file(filename: str, size: int, purpose: str, created_at: int | None = None) -> JSON:
    return {
        "id": _new_id("file-"),
        "object": "file",
        "bytes": size,
        "created_at": created_at or _now(),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


async def _uploads_create(request: web.Request) -> web.StreamResponse:
    params = await _json_body(request)
    now = _now()
    upload = {
        "id": _new_id("upload_"),
        "object": "upload",
        "bytes": params.get("bytes", 0),
        "created_at": now,
        "expires_at": now + 3600,
        "filename": params.get("filename", "upload.bin"),
        "purpose": params.get("purpose", "assistants"),
        "status": "pending",
        "file": None,
    }
    _fake(request).uploads[upload["id"]] = upload
    return await _answer(request, upload)


async def _upload_parts_create(request: web.Request) -> web.StreamResponse:
    part = {
        "id": _new_id("part_"),
        "object": "upload.part",
        "created_at": _now(),
        "upload_id": request.match_info["upload_id"],
    }
    return await _answer(request, part)


async def _uploads_complete(request: web.Request) -> web.StreamResponse:
    upload_id = request.match_info["upload_id"]
    now = _now()
    known = _fake(request).uploads.get(upload_id)
    upload: JSON = (
        dict(known) if known else {"id": upload_id, "object": "upload", "created_at": now}
    )
    upload.setdefault("bytes", 0)
    upload.setdefault("filename", "upload.bin")
    upload.setdefault("purpose", "assistants")
    upload["expires_at"] = now + 3600
    upload["status"] = "completed"
    upload["file"] = _file(upload["filename"], upload["bytes"], upload["purpose"], now)
    return await _answer(request, upload)


async def _files_list(request: web.Request) -> web.StreamResponse:
    files = [_file("train.jsonl", 2048, "fine-tune"), _file("notes.pdf", 4096, "assistants")]
    return await _answer(request, _listing(files))


# ---------------------------------------------------------------- chat completions


async def _chat_completions_create(request: web.Request) -> web.StreamResponse:
    params = await _json_body(request)
    message = {"role": "assistant", "content": "".join(_REPLY_WORDS), "refusal": None}
    completion = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": _now(),
        "model": params.get("model") or _DEFAULT_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(9, len(_REPLY_WORDS)),
        "system_fingerprint": "fp_fake",
    }
    return await _answer(request, completion)


# ---------------------------------------------------------------- control


async def _knobs_show(request: web.Request) -> web.StreamResponse:
    return web.json_response(knob_values(_fake(request).knobs))


async def _knobs_change(request: web.Request) -> web.StreamResponse:
    """Set the knobs named in the JSON body, all or none; answer the knobs now in force."""
    knobs = _fake(request).knobs
    try:
        set_knobs(knobs, json.loads(await request.read()))
    except ValueError as problem:
        return _error(400, str(problem), "invalid_request_error")
    return web.json_response(knob_values(knobs))


# ---------------------------------------------------------------- app


def _routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/images/generations", _images_generate),
        web.post("/v1/images/edits", _images_from_form),
        web.post("/v1/images/variations", _images_from_form),
        web.get("/v1/models", _models_list),
        web.get("/v1/models/{model}", _models_retrieve),
        web.delete("/v1/models/{model}", _models_delete),
        web.post("/v1/moderations", _moderations_create),
        web.post("/v1/assistants", _assistants_create),
        web.get("/v1/assistants", _assistants_list),
        web.get("/v1/assistants/{assistant_id}", _assistants_retrieve),
        web.post("/v1/assistants/{assistant_id}", _assistants_update),
        web.delete("/v1/assistants/{assistant_id}", _assistants_delete),
        web.post("/v1/threads", _threads_create),
        web.post("/v1/threads/{thread_id}/messages", _messages_create),
        web.get("/v1/threads/{thread_id}/messages", _messages_list),
        web.post("/v1/threads/{thread_id}/runs", _runs_create),
        web.post("/v1/uploads", _uploads_create),
        web.post("/v1/uploads/{upload_id}/parts", _upload_parts_create),
        web.post("/v1/uploads/{upload_id}/complete", _uploads_complete),
        web.post("/v1/chat/completions", _chat_completions_create),
        web.get("/v1/files", _files_list),
    ]


def create_fake_upstream(
    knobs: FakeKnobs | None = None, *, control: bool = False
) -> web.Application:
    """A fresh fake; its state is at `app[FAKE_UPSTREAM]`; `control` serves `/_fake/knobs`."""
    app = web.Application(middlewares=[_gate], client_max_size=_MAX_BODY)
    app[FAKE_UPSTREAM] = FakeUpstream(knobs=knobs or FakeKnobs(), received=[])
    app.on_response_prepare.append(_stamp)
    app.router.add_routes(_routes())
    if control:
        app.router.add_get(f"{_CONTROL}knobs", _knobs_show)
        app.router.add_put(f"{_CONTROL}knobs", _knobs_change)
    return app


def run_fake_upstream(host: str, port: int, knobs: FakeKnobs, *, control: bool = False) -> None:
    """Serve the fake until interrupted (the `tollgate fake-upstream` command)."""
    web.run_app(create_fake_upstream(knobs, control=control), host=host, port=port)
