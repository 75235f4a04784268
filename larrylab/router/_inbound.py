"""One request as it arrived, in its protocol, and how each kind of model is called for it.

A request comes in OpenAI's protocol (`/v1/chat/completions`) or Gemini's (`:generateContent`),
and goes to a model of OpenAI's API (or litellm) or of Gemini's (`api: gemini`). Same protocol
on both sides: the request goes as it came (a Gemini body byte for byte; the model's name is in
the path). Otherwise it is translated (`_gemini_wire`), and so is the reply, so the client
always gets its own protocol.

What a model cannot be sent faithfully (tools to an OpenAI-compatible model, say) are the
request's *features* for that model (`Inbound.features_for`): the router decides before calling
it whether another model serves the request or the features are dropped (`Inbound.stripped`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from larrylab.router._errors import ApiError
from larrylab.router._gemini_wire import (
    GeminiToOpenAIStream,
    OpenAIToGeminiStream,
    gemini_messages,
    gemini_opening,
    gemini_to_openai_request,
    gemini_to_openai_response,
    openai_to_gemini_request,
    openai_to_gemini_response,
    opening_text,
    strip_unsupported,
    unsupported_features,
)
from larrylab.router._routing import Target
from larrylab.router._upstream import (
    ChunkStream,
    Completion,
    StreamEnd,
    UpstreamClient,
    complete,
    gemini_complete,
    gemini_stream,
    open_stream,
)

OPENAI, GEMINI = "openai", "gemini"
MAX_THREAD_ID = 256


@dataclass(slots=True)
class Inbound:
    """A request as its client sent it: OpenAI's chat body, or Gemini's (camelCase) body with
    its raw bytes, the API version of its path and whether it streams."""

    protocol: str
    model: str
    body: dict[str, Any]
    raw: bytes
    stream: bool
    version: str = "v1beta"
    stripped: bool = False
    _messages: list[dict[str, Any]] | None = None
    _as_gemini: tuple[dict[str, Any], list[str]] | None = None

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as OpenAI-style messages (for the request log and stickiness)."""
        if self._messages is None:
            if self.protocol == GEMINI:
                self._messages = gemini_messages(self.body)
            else:
                self._messages = self.body["messages"]
        return self._messages

    def as_gemini(self) -> tuple[dict[str, Any], list[str]]:
        """An OpenAI request as Gemini's body, and what does not translate (computed once)."""
        if self._as_gemini is None:
            self._as_gemini = openai_to_gemini_request(self.body)
        return self._as_gemini

    def features_for(self, target: Target) -> list[str]:
        """What `target` cannot be sent faithfully (empty: everything translates)."""
        if self.protocol == GEMINI:
            return [] if target.api == GEMINI else unsupported_features(self.body)
        if target.api == GEMINI:
            return self.as_gemini()[1]
        return []

    def without_features(self) -> Inbound:
        """This request without what a model of the other protocol cannot serve (Gemini's
        tools, cached content, non-text parts...: `strip_unsupported`). An OpenAI request
        keeps its body: what does not translate is left out in translation."""
        if self.protocol == GEMINI:
            return replace(self, body=strip_unsupported(self.body), stripped=True, _messages=None)
        return replace(self, stripped=True)


def thread_unit(inbound: Inbound, headers: Mapping[str, str]) -> tuple[str, str]:
    """The unit an experiment assigns (its thread) and where it came from: the `X-Thread-Id`
    header, else OpenAI's `user`, else a fingerprint of the conversation's opening (the system
    instruction and the first user turn, which every later turn sends again), else random."""
    header = headers.get("x-thread-id", "").strip()
    if header:
        if len(header) > MAX_THREAD_ID:
            raise ApiError(400, "X-Thread-Id must be at most 256 characters", param="X-Thread-Id")
        return header, "header"
    user = inbound.body.get("user") if inbound.protocol == OPENAI else None
    if isinstance(user, str) and user:
        return user, "user"
    if inbound.protocol == GEMINI:
        opening = gemini_opening(inbound.body)
    else:
        opening = opening_text(inbound.messages())
    if opening is not None:
        digest = hashlib.blake2b(opening.encode(), digest_size=12).hexdigest()
        return f"open-{digest}", "opening"
    return f"rnd-{uuid.uuid4().hex}", "random"


async def complete_for(
    client: UpstreamClient, target: Target, inbound: Inbound, start: float
) -> Completion:
    """A whole reply of `target` to `inbound`, in the client's protocol (ids left to set)."""
    if inbound.protocol == OPENAI:
        if target.api != GEMINI:
            return await complete(client, target, inbound.body, start)
        native, _ = inbound.as_gemini()
        done = await gemini_complete(client, target, orjson.dumps(native), start)
        data = gemini_to_openai_response(
            done.data, completion_id="", model=inbound.model, created=int(time.time())
        )
        return Completion(data)
    if target.api == GEMINI:
        payload = orjson.dumps(inbound.body) if inbound.stripped else inbound.raw
        return await gemini_complete(client, target, payload, start, version=inbound.version)
    body = gemini_to_openai_request(inbound.body, target.upstream_model, stream=False)
    done = await complete(client, target, body, start)
    return Completion(
        openai_to_gemini_response(done.data, response_id="", model_version=target.upstream_model)
    )


async def complete_chat(
    client: UpstreamClient, target: Target, body: dict[str, Any], start: float | None = None
) -> Completion:
    """A whole chat completion, in OpenAI's shape, from a model of any API (an `api: gemini`
    model's reply translated): `body` is an OpenAI chat completion body."""
    inbound = Inbound(OPENAI, str(body.get("model") or target.name), body, b"", stream=False)
    return await complete_for(client, target, inbound, start or asyncio.get_running_loop().time())


async def stream_for(
    client: UpstreamClient, target: Target, inbound: Inbound, start: float
) -> ChunkStream:
    """A streamed reply of `target` to `inbound`, its chunks in the client's protocol."""
    if inbound.protocol == OPENAI:
        if target.api != GEMINI:
            return await open_stream(client, target, inbound.body, start)
        native, _ = inbound.as_gemini()
        upstream = await gemini_stream(client, target, orjson.dumps(native), start)
        to_openai = GeminiToOpenAIStream(
            completion_id="", model=inbound.model, created=int(time.time())
        )
        return _converted(upstream, to_openai.feed, to_openai.finish)
    if target.api == GEMINI:
        payload = orjson.dumps(inbound.body) if inbound.stripped else inbound.raw
        return await gemini_stream(client, target, payload, start, version=inbound.version)
    body = gemini_to_openai_request(inbound.body, target.upstream_model, stream=True)
    upstream = await open_stream(client, target, body, start)
    to_gemini = OpenAIToGeminiStream(response_id="", model_version=target.upstream_model)
    return _converted(upstream, to_gemini.feed, to_gemini.finish)


Chunk = dict[str, Any]


def _converted(
    stream: ChunkStream,
    feed: Callable[[Chunk], list[Chunk]],
    finish: Callable[[], list[Chunk]],
) -> ChunkStream:
    """`stream` with each chunk converted by `feed` (and what `finish` holds back at the end,
    sent with the source's last batch when its end is known then)."""
    end = StreamEnd()

    def convert(batch: list[Chunk]) -> list[Chunk]:
        out = [converted for chunk in batch for converted in feed(chunk)]
        if stream.end.seen and not end.seen:
            end.seen = True
            out += finish()
        return out

    async def rest() -> AsyncIterator[list[Chunk]]:
        async for batch in stream.rest:
            converted = convert(batch)
            if converted:
                yield converted
        if not end.seen:
            end.seen = True
            last = finish()
            if last:
                yield last

    return ChunkStream(convert(stream.first), rest(), stream.first_at, stream.closer, end)
