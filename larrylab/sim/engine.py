"""What both wire protocols share: per-request draws, replies, waits and streaming.

A `Simulator` belongs to one app. It holds two random generators so that the replies a seed
gives do not depend on the timing and fault settings: one draws replies and structured
values, the other draws faults and delays.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Send

from larrylab.sim.config import SimConfig
from larrylab.sim.replies import latest_user_text, pick_reply, prompt_tokens, split_tokens
from larrylab.sim.schema_instance import instance_for_schema

SIM_HEADER = "x-larrylab-sim"
Endpoint = Callable[[Request], Awaitable[Response]]
_STOP_POLL_S = 0.25  # how often a long wait checks whether the server is stopping


class BadRequest(Exception):
    """A request the simulator refuses with 400; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Plan:
    """What happens to one request, drawn when it arrives.

    Attributes:
        hang_s: Silence before anything else (0 unless the request hangs).
        latency_s: Latency before the response starts.
        ttft_s: Time from the response start to the first token.
        interval_s: Time between later tokens (0 = instant).
        fail: Whether the request fails with the configured error status.
        drop_after: For a dropped stream, how many tokens are sent before the connection
            is cut; None when the reply completes.
    """

    hang_s: float
    latency_s: float
    ttft_s: float
    interval_s: float
    fail: bool
    drop_after: int | None

    @property
    def wait_s(self) -> float:
        """Silence before the response starts: hang plus latency."""
        return self.hang_s + self.latency_s

    def generation_s(self, tokens: int) -> float:
        """Time from the response start to the last of `tokens` tokens."""
        return self.ttft_s + max(tokens - 1, 0) * self.interval_s


@dataclass(frozen=True, slots=True)
class Reply:
    """The assistant message of one request, already split into word tokens."""

    category: str
    tokens: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int

    @property
    def text(self) -> str:
        """The whole message text."""
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        """Number of tokens in the message (its word count)."""
        return len(self.tokens)


class Simulator:
    """The state of one simulated upstream: its config and its random generators."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.headers: Mapping[str, str] = {SIM_HEADER: config.label}
        self._content_rng = random.Random(config.seed)
        fault_seed = None if config.seed is None else f"larrylab-sim-faults:{config.seed}"
        self._fault_rng = random.Random(fault_seed)
        self._interval_s = 1.0 / config.tokens_per_s if config.tokens_per_s > 0 else 0.0
        self.stopping = False

    def stop(self) -> None:
        """Tell waiting requests that the server is shutting down, so hangs end now."""
        self.stopping = True

    async def wait(self, receive: Receive, seconds: float) -> bool:
        """Sleep `seconds` after the request body was read; True if it was cut short.

        The wait ends early when the client disconnects or `stop` is called, so a hanging
        request never holds up a server's shutdown.
        """
        if seconds <= 0:
            return False
        deadline = time.monotonic() + seconds
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            while (left := deadline - time.monotonic()) > 0:
                done, _ = await asyncio.wait({watcher}, timeout=min(left, _STOP_POLL_S))
                if done or self.stopping:
                    return True
            return False
        finally:
            watcher.cancel()

    def reply(
        self,
        messages: list[dict[str, Any]],
        *,
        schema: dict[str, Any] | None = None,
        json_object: bool = False,
        max_tokens: int | None = None,
    ) -> Reply:
        """Choose the reply to `messages`, shaped as JSON when a format asks for it.

        Raises:
            BadRequest: `schema` cannot be satisfied or refers outside itself.
        """
        category, text = pick_reply(latest_user_text(messages), self._content_rng)
        if schema is not None:
            try:
                value = instance_for_schema(
                    schema, self._content_rng, top_bias=self.config.structured_bias
                )
                text = json.dumps(value)
            except (ValueError, TypeError, RecursionError) as exc:
                raise BadRequest(f"Invalid JSON schema: {exc}", "response_format") from None
        elif json_object:
            text = json.dumps({"category": category, "reply": text})
        tokens = split_tokens(text)
        finish_reason = "stop"
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens, finish_reason = tokens[:max_tokens], "length"
        return Reply(category, tuple(tokens), finish_reason, prompt_tokens(messages))

    def plan(self, *, stream: bool, tokens: int) -> Plan:
        """Draw the faults and delays of one request whose reply has `tokens` tokens."""
        config, rng = self.config, self._fault_rng
        hang = config.hang_rate > 0 and rng.random() < config.hang_rate
        fail = config.error_rate > 0 and rng.random() < config.error_rate
        drop = stream and config.drop_rate > 0 and rng.random() < config.drop_rate
        return Plan(
            hang_s=config.hang_s if hang else 0.0,
            latency_s=self._lognormal_s(config.latency_ms),
            ttft_s=self._lognormal_s(config.ttft_ms),
            interval_s=self._interval_s,
            fail=fail,
            drop_after=rng.randint(1, max(tokens - 1, 1)) if drop else None,
        )

    def _lognormal_s(self, median_ms: float) -> float:
        sigma = self.config.latency_sigma
        if median_ms <= 0 or sigma <= 0:
            return median_ms / 1000.0
        return median_ms * math.exp(sigma * self._fault_rng.gauss(0.0, 1.0)) / 1000.0


def check_messages(value: Any) -> list[dict[str, Any]]:
    """`value` as a list of chat messages; BadRequest unless it is a non-empty list of them."""
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' must be a non-empty array of messages.", "messages")
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(
                f"'messages[{index}]' must be an object with a string 'role'.", "messages"
            )
    return value


def optional_bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    """`body[key]` if it is a boolean, `default` if absent; BadRequest otherwise."""
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be a boolean.", key)
    return value


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def pace(start: float, index: int, interval_s: float) -> None:
    """Sleep until token `index` is due, `index * interval_s` after `start` (monotonic)."""
    if interval_s > 0:
        delay = start + index * interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class SimStream(StreamingResponse):
    """A streaming response that, when `complete` is False, ends by dropping the connection.

    A dropped stream sends its chunks and then returns without the final ASGI body message.
    Uvicorn answers that by closing the socket while the chunked body is still open, so the
    client sees a truncated body (httpx: `RemoteProtocolError`), as when an upstream dies.
    """

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        media_type: str,
        headers: Mapping[str, str],
        complete: bool,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.complete = complete

    async def stream_response(self, send: Send) -> None:
        if self.complete:
            await super().stream_response(send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
