"""Request and response bodies of the router's API (pydantic at the edges)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from larrylab.router._errors import ApiError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class ChatMessage(BaseModel):
    """One message of a chat (OpenAI format; extra fields pass through). `content` is required
    for the system, developer and user roles; an assistant's may be left out (tool calls)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completion request; `model` names a larrylab route or model.

    The thread (unit of assignment) is `user`, else the `X-Thread-Id` header, else one random
    unit for this request. Other OpenAI parameters pass through to the upstream unchanged.
    """

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "larry",
                    "messages": [{"role": "user", "content": "What problem am I solving?"}],
                    "user": "thread-42",
                },
                {
                    "model": "larry",
                    "messages": [{"role": "user", "content": "Where do I start?"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ]
        },
    )

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(default=None, max_length=256)


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_request")


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _check_message(i: int, msg: Any) -> None:
    if not isinstance(msg, dict):
        raise _bad(f"messages[{i}] must be an object with `role` and `content`", f"messages[{i}]")
    role = msg.get("role")
    if not isinstance(role, str) or role not in ROLES:  # a dict or list is not even hashable
        shown = repr(role) if isinstance(role, str) else f"a JSON {_json_type(role)}"
        raise _bad(
            f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; got {shown}",
            f"messages[{i}].role",
        )
    content = msg.get("content")
    if content is not None and not (
        isinstance(content, str)
        or (isinstance(content, list) and all(isinstance(part, dict) for part in content))
    ):
        raise _bad(
            f"messages[{i}].content must be a string or a list of content parts (objects)",
            f"messages[{i}].content",
        )
    if content is None and role in ("system", "developer", "user"):
        raise _bad(f"messages[{i}].content is required for role {role!r}", f"messages[{i}].content")
    name = msg.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"messages[{i}].name must be a string", f"messages[{i}].name")


def parse_chat_body(raw: bytes) -> dict[str, Any]:
    """Parse and check a chat completion body; raise ApiError(400) with a clear message."""
    if not raw:
        raise _bad("request body is empty; send a JSON chat completion request")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"request body is not valid JSON (UTF-8): {exc}") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad(
            "`model` is required and must be a non-empty string naming a route or model", "model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("`messages` is required and must be a non-empty list", "messages")
    for i, msg in enumerate(messages):
        _check_message(i, msg)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("`stream` must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("`stream_options` must be an object", "stream_options")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise _bad("`user` must be a string of at most 256 characters", "user")
    return body


def _whole_number(value: Any) -> Any:
    """JSON's 4.0 is the integer 4 (JSON Schema agrees); strings and fractions stay invalid."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A string of bounded length, or `null` for "not given" (the schema shows only the string). The
# limits apply to the string alone: set on the union, they raised a TypeError for `null` (a 500).
OptionalRequestId = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=64)] | None,
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64}),
]
OptionalThreadId = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=256)] | None,
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 256}),
]


_THUMBS: dict[Any, int] = {"up": 1, "down": 0}
CATEGORY_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
MAX_CATEGORIES = 20


def _thumb(value: Any) -> Any:
    """A thumb as 1 (up) or 0 (down): from "up"/"down", true/false or 1/0."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value in _THUMBS:
        return _THUMBS[value]
    if isinstance(value, int) and value in (0, 1):
        return value
    raise ValueError('`thumb` must be "up", "down", true, false, 1 or 0')


def _categories(value: Any) -> Any:
    """Named judgements of the reply: an object of at most 20 names (1-40 characters of
    letters, digits, `_` and `-`), each true or false."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("`categories` must be an object of names to true or false")
    if len(value) > MAX_CATEGORIES:
        raise ValueError(f"`categories` has {len(value)} names; at most {MAX_CATEGORIES}")
    for name, judged in value.items():
        if not CATEGORY_NAME.fullmatch(name):
            raise ValueError(
                f"category name {name[:50]!r} must be 1-40 letters, digits, `_` or `-`"
            )
        if not isinstance(judged, bool):
            raise ValueError(f"category {name!r} must be true or false")
    return value


Thumb = Annotated[
    int | None,
    BeforeValidator(_thumb),
    WithJsonSchema(
        {
            "anyOf": [{"enum": ["up", "down"]}, {"type": "boolean"}, {"enum": [0, 1]}],
            "description": 'A thumb up ("up", true, 1) or down ("down", false, 0).',
        }
    ),
]
Categories = Annotated[
    dict[str, bool] | None,
    BeforeValidator(_categories),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_CATEGORIES,
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,40}$"},
            "additionalProperties": {"type": "boolean"},
            "description": "Named judgements of the reply, e.g. "
            '{"accuracy": true, "depth": false}.',
        }
    ),
]


class FeedbackIn(BaseModel):
    """A rating of a request (`request_id`, or the same id as `response_id`) or of a whole
    thread (`thread_id`): 1-5 stars (`score`), a thumb up or down (`thumb`), or both, with
    optional `categories` and a `comment`. Rating the same target again from the same `source`
    updates the fields the new rating gives."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "anyOf": [
                        {"required": ["request_id"]},
                        {"required": ["response_id"]},
                        {"required": ["thread_id"]},
                    ]
                },
                {"anyOf": [{"required": ["score"]}, {"required": ["thumb"]}]},
            ]
        },
    )

    request_id: OptionalRequestId = None
    response_id: OptionalRequestId = Field(
        default=None,
        description="The request id as Gemini clients see it (`responseId`); the same as "
        "`request_id`.",
    )
    thread_id: OptionalThreadId = None
    score: Annotated[int | None, BeforeValidator(_whole_number)] = Field(
        default=None, ge=1, le=5, strict=True
    )
    thumb: Thumb = None
    categories: Categories = None
    comment: str | None = Field(default=None, max_length=10_000)
    source: str = Field(default="user", min_length=1, max_length=100)

    @model_validator(mode="after")
    def _target_and_rating(self) -> FeedbackIn:
        if self.response_id is not None:
            if self.request_id is not None and self.request_id != self.response_id:
                raise ValueError(
                    "`request_id` and `response_id` name the same id: give one of them, "
                    "or both equal"
                )
            self.request_id = self.response_id
        if self.request_id is None and self.thread_id is None:
            raise ValueError("give `request_id` (or `response_id`) or `thread_id`")
        if self.score is None and self.thumb is None:
            raise ValueError("give `score` (1-5), `thumb` (up or down), or both")
        return self


class FeedbackOut(BaseModel):
    """A stored rating."""

    id: int
    request_id: str | None
    thread_id: str
    experiment: str | None
    arm: str | None
    score: int | None
    thumb: Literal["up", "down"] | None
    categories: dict[str, bool]
    comment: str | None
    source: str
    updated: bool
