"""Structured-output calls through litellm: bounded concurrency, retries, an on-disk cache.

Every request is keyed by a hash of what decides its answer: the model, the endpoint it is
served from (`api_base`, without any credentials), the sampling settings, the messages, the
schema and the temperature; never an API key. A validated answer is written to the cache
before the call returns, so a run that crashes or is interrupted resumes without paying twice
for any request. Malformed answers are never cached: they are retried, and reported if they
stay malformed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import urllib.parse
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from larrylab.pipeline.records import json_sha256

DEFAULT_MODEL = "gemini/gemini-2.5-flash"
DEFAULT_CONCURRENCY = 32

T = TypeVar("T")
R = TypeVar("R")
Completer = Callable[..., Awaitable[Any]]

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_SECRET_PARAM = re.compile(r"key|token|secret|passw|sig|auth|credential", re.IGNORECASE)
_CLIENT_LIBRARIES = ("openai", "httpx", "jsonschema")


class LLMError(Exception):
    """A model call that cannot succeed (credentials, unknown model, bad request)."""


class MalformedReply(ValueError):
    """A model answer that is not JSON or does not match the requested schema."""


class ReplyError(Exception):
    """A request whose answer stayed malformed or unavailable after every retry."""

    def __init__(self, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


@dataclass(frozen=True)
class LLMOptions:
    """Which model to call and how.

    Attributes:
        model: A litellm model name, e.g. `gemini/gemini-2.5-flash` or `openai/<name>`.
        api_base: Base URL of an OpenAI-compatible endpoint (None: the provider's default).
        api_key_env: Environment variable holding the API key (None: the provider's usual one).
        concurrency: Requests in flight at once.
        retries: Extra attempts after a failed or malformed answer.
        timeout_s: Timeout of one attempt.
        backoff_s: First retry delay; it doubles per attempt (with jitter), up to 30 s.
        top_p: Nucleus sampling mass sent with every request (None: the provider's default).
        max_tokens: Most tokens in an answer (None: the provider's default).
        seed: Sampling seed sent with every request (None: none).
    """

    model: str = DEFAULT_MODEL
    api_base: str | None = None
    api_key_env: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    retries: int = 3
    timeout_s: float = 120.0
    backoff_s: float = 0.5
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("the model name must not be empty")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.retries < 0:
            raise ValueError(f"retries must not be negative, got {self.retries}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    @property
    def endpoint(self) -> str | None:
        """`api_base` without credentials (user, password, key-like query parameters)."""
        return public_url(self.api_base) if self.api_base else None

    def sampling(self) -> dict[str, Any]:
        """The sampling settings that are set, as request arguments."""
        values = {"top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}
        return {k: v for k, v in values.items() if v is not None}

    def settings(self) -> dict[str, Any]:
        """What shapes every answer besides the prompt: model, endpoint, sampling (no secrets).

        Part of each request's cache key, of the fingerprints of the stages that call the
        model, and of their manifests.
        """
        return {"model": self.model, "api_base": self.endpoint, **self.sampling()}


def public_url(url: str) -> str:
    """`url` without user, password or key-like query parameters, and no trailing slash."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<unparseable URL>"
    netloc = host or ""
    if host and ":" in host:
        netloc = f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    query = urllib.parse.urlencode(
        [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if not _SECRET_PARAM.search(k)
        ]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), query, ""))


def client_libraries(*, litellm: bool) -> tuple[str, ...]:
    """The modules an LLM client imports to make its calls (litellm only when it is used)."""
    return (("litellm",) if litellm else ()) + _CLIENT_LIBRARIES


@dataclass
class LLMStats:
    """What one client did: calls paid for, answers from the cache, retries and failures."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    malformed: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_counts(self, prefix: str) -> dict[str, int]:
        """The numbers as `{prefix}_{name}` counts for a manifest."""
        return {f"{prefix}_{k}": int(v) for k, v in self.__dict__.items()}


class RequestCache:
    """Validated answers on disk, one JSON file per request hash (sharded by prefix)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The cached answer for `key`, or None."""
        path = self._path(key)
        try:
            return orjson.loads(path.read_bytes())["value"]
        except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
            return None

    def put(
        self, key: str, value: Any, *, model: str, name: str, endpoint: str | None = None
    ) -> None:
        """Store an answer atomically (a crash never leaves a half-written entry)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per call: the same request may be answered twice at once (equal prompts).
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        entry = {"key": key, "model": model, "endpoint": endpoint, "name": name, "value": value}
        entry["stored_at"] = datetime.now(UTC).isoformat()
        tmp.write_bytes(orjson.dumps(entry))
        os.replace(tmp, path)


def _fatal_errors() -> tuple[type[BaseException], ...]:
    import openai

    return (
        openai.AuthenticationError,
        openai.PermissionDeniedError,
        openai.NotFoundError,
        openai.BadRequestError,
    )


def _retryable_errors() -> tuple[type[BaseException], ...]:
    import httpx
    import openai

    return (openai.APIError, httpx.HTTPError, asyncio.TimeoutError, ConnectionError)


def _litellm_completer() -> Completer:
    import litellm

    litellm.suppress_debug_info = True
    completer: Completer = litellm.acompletion
    return completer


def parse_json_reply(text: str | None) -> Any:
    """The JSON value in a model's reply (code fences allowed); MalformedReply if none."""
    if not text or not text.strip():
        raise MalformedReply("the reply is empty")
    stripped = text.strip()
    match = _FENCE.match(stripped)
    if match:
        stripped = match.group(1)
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise MalformedReply(f"the reply is not JSON ({exc.msg} at character {exc.pos})") from None


class LLMClient:
    """Structured-output requests to one model, cached, bounded and retried."""

    def __init__(
        self, options: LLMOptions, cache: RequestCache, completer: Completer | None = None
    ) -> None:
        self.options = options
        self.cache = cache
        self.stats = LLMStats()
        self._completer = completer
        self._semaphore = asyncio.Semaphore(options.concurrency)
        self._validators: dict[str, Any] = {}
        self._api_key: str | None = None
        self._missing: str | None = None
        if options.api_key_env:
            self._api_key = os.environ.get(options.api_key_env)
            if not self._api_key:
                raise LLMError(f"environment variable {options.api_key_env} is not set")

    def key(
        self,
        *,
        name: str,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        temperature: float,
    ) -> str:
        """The cache key of a request: the prompt and every setting that shapes its answer."""
        payload = {
            **self.options.settings(),
            "name": name,
            "messages": messages,
            "schema": schema,
            "temperature": temperature,
        }
        return json_sha256(payload)

    async def structured(
        self,
        *,
        name: str,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        temperature: float = 0.0,
    ) -> Any:
        """The model's answer to `messages`, valid against `schema` (from the cache if known).

        Raises:
            LLMError: The call can never succeed (credentials, model, request).
            ReplyError: The answer stayed malformed or unavailable after every retry.
        """
        key = self.key(name=name, messages=messages, schema=schema, temperature=temperature)
        cached = await asyncio.to_thread(self.cache.get, key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        value = await self._call_with_retries(name, messages, schema, temperature)
        await asyncio.to_thread(
            self.cache.put,
            key,
            value,
            model=self.options.model,
            name=name,
            endpoint=self.options.endpoint,
        )
        return value

    async def _call_with_retries(
        self, name: str, messages: list[dict[str, Any]], schema: dict[str, Any], temp: float
    ) -> Any:
        fatal, retryable = _fatal_errors(), _retryable_errors()
        last = "no attempt made"
        malformed = False
        for attempt in range(self.options.retries + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempt))
            try:
                async with self._semaphore:
                    self.stats.requests += 1
                    response = await self._complete(name, messages, schema, temp)
                return self._validated(name, schema, response)
            except fatal as exc:
                raise LLMError(f"{self.options.model}: {_first_line(exc)}") from None
            except MalformedReply as exc:
                self.stats.malformed += 1
                last, malformed = f"malformed answer: {exc}", True
            except retryable as exc:
                last, malformed = f"{type(exc).__name__}: {_first_line(exc)}", False
        self.stats.failures += 1
        tries = self.options.retries + 1
        raise ReplyError(f"{last} (after {tries} attempts)", malformed=malformed)

    async def _complete(
        self, name: str, messages: list[dict[str, Any]], schema: dict[str, Any], temp: float
    ) -> Any:
        if self._completer is None:
            self._completer = _litellm_completer()
            self._missing = self._missing_credentials()
        if self._missing:
            raise LLMError(self._missing)
        kwargs: dict[str, Any] = {
            "model": self.options.model,
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            },
            "temperature": temp,
            "timeout": self.options.timeout_s,
            "num_retries": 0,
            **self.options.sampling(),
        }
        if self.options.api_base:
            kwargs["api_base"] = self.options.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        return await self._completer(**kwargs)

    def _missing_credentials(self) -> str | None:
        """What to set when litellm finds no credentials for the model (None if all is set)."""
        import litellm

        found = litellm.validate_environment(
            model=self.options.model, api_key=self._api_key, api_base=self.options.api_base
        )
        if found.get("keys_in_environment", True):
            return None
        missing = " or ".join(found.get("missing_keys") or ["credentials"])
        return f"{self.options.model}: set {missing} (or name a variable with --api-key-env)"

    def _validated(self, name: str, schema: dict[str, Any], response: Any) -> Any:
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise MalformedReply("the response has no message") from None
        usage = getattr(response, "usage", None)
        self.stats.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.stats.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        value = parse_json_reply(text)
        from jsonschema import Draft202012Validator, ValidationError

        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = Draft202012Validator(schema)
        try:
            validator.validate(value)
        except ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise MalformedReply(f"{exc.message} at {where}") from None
        return value

    def _backoff(self, attempt: int) -> float:
        delay = min(30.0, self.options.backoff_s * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


async def map_ordered(
    items: Iterable[T], fn: Callable[[T], Awaitable[R]], *, window: int
) -> AsyncIterator[R]:
    """`fn` over `items` with at most `window` calls started ahead, results in input order.

    Memory stays bounded however many items there are; an exception cancels the calls still
    running and propagates.
    """
    pending: deque[asyncio.Task[R]] = deque()
    try:
        for item in items:
            pending.append(asyncio.ensure_future(fn(item)))
            if len(pending) >= window:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
