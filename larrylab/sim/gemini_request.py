"""Reading Gemini `generateContent` and `countTokens` request bodies for the simulator."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from larrylab.sim.engine import BadRequest

_JSON = "application/json"
_ROLES = {"user": "user", "model": "assistant", "function": "tool"}
# Schema keywords Gemini sends as int64, which its JSON encoding writes as strings.
_INT64_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """The parts of a `generateContent` request that the simulator looks at."""

    messages: list[dict[str, Any]]
    max_tokens: int | None
    schema: dict[str, Any] | None
    json_object: bool


def _get(body: Mapping[str, Any], name: str) -> Any:
    """`body[name]`, also under its snake_case spelling (Gemini's JSON parser accepts both)."""
    if name in body:
        return body[name]
    return body.get(re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())


def _object(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = _get(body, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid JSON payload received: '{name}' must be an object.")
    return value


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON payload received: the body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("Invalid JSON payload received: the body must be a JSON object.")
    return body


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    parts = _get(content, "parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise BadRequest(f"'{where}' must be a Content object with a non-empty 'parts' array.")
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or not part:
            raise BadRequest(f"'{where}.parts[{index}]' must be a non-empty Part object.")
        if "text" in part and not isinstance(part["text"], str):
            raise BadRequest(f"'{where}.parts[{index}].text' must be a string.")
    return parts


def request_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`systemInstruction` and `contents` as the engine's chat messages; BadRequest if invalid."""
    contents = _get(body, "contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("'contents' must be a non-empty array of Content objects.")
    messages: list[dict[str, Any]] = []
    system = _get(body, "systemInstruction")
    if system is not None:
        messages.append({"role": "system", "content": _parts(system, "systemInstruction")})
    for index, content in enumerate(contents):
        parts = _parts(content, f"contents[{index}]")
        role = content.get("role") or "user"
        if role not in _ROLES:
            raise BadRequest(f"'contents[{index}].role': please use a valid role: user, model.")
        messages.append({"role": _ROLES[role], "content": parts})
    return messages


def parse_generate_request(raw: bytes) -> GenerateRequest:
    """Read a `generateContent` body; BadRequest with a message if it is invalid."""
    body = _body(raw)
    messages = request_messages(body)
    config = _object(body, "generationConfig")
    for name in ("temperature", "topP", "topK"):
        value = _get(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(f"'generationConfig.{name}' must be a number.")
    _positive_int(config, "candidateCount")
    stops = _get(config, "stopSequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise BadRequest("'generationConfig.stopSequences' must be an array of strings.")
    schema, json_object = _response_format(config)
    return GenerateRequest(
        messages=messages,
        max_tokens=_positive_int(config, "maxOutputTokens"),
        schema=schema,
        json_object=json_object,
    )


def _positive_int(config: Mapping[str, Any], name: str) -> int | None:
    value = _get(config, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'generationConfig.{name}' must be a positive integer.")
    return value


def _response_format(config: Mapping[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """`(schema, json_object)` from `responseMimeType` and `responseJsonSchema`/`responseSchema`."""
    mime = _get(config, "responseMimeType") or "text/plain"
    schema = _get(config, "responseJsonSchema")
    if schema is None and _get(config, "responseSchema") is not None:
        schema = json_schema(_get(config, "responseSchema"))
    if schema is not None and not isinstance(schema, dict):
        raise BadRequest("'generationConfig.responseJsonSchema' must be an object.")
    if mime not in ("text/plain", _JSON):
        raise BadRequest(
            f"'generationConfig.responseMimeType' {mime!r} is not supported by the simulator; "
            "use 'text/plain' or 'application/json'."
        )
    if mime != _JSON:
        if schema is not None:
            raise BadRequest("A response schema needs responseMimeType 'application/json'.")
        return None, False
    return schema, schema is None


def json_schema(schema: Any) -> Any:
    """A Gemini `Schema` (OpenAPI subset: `OBJECT`, `nullable`, int64 strings) as JSON Schema."""
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), raw_key)
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = json_schema(value)
        elif key == "type" and isinstance(value, str):
            if value.upper() != "TYPE_UNSPECIFIED":
                out[key] = value.lower()
        elif key in _INT64_KEYS and isinstance(value, str) and value.isdigit():
            out[key] = int(value)
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def parse_count_tokens(raw: bytes) -> list[dict[str, Any]]:
    """The messages of a `countTokens` body: its `contents` or its `generateContentRequest`."""
    body = _body(raw)
    return request_messages(_object(body, "generateContentRequest") or body)
