"""Translation between Gemini's native generateContent protocol and OpenAI's chat completions.

Pure functions on parsed JSON (no I/O): normalize and check a Gemini request, list what an
OpenAI-compatible model cannot serve of it, and map requests, responses and streams both ways.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

# Top-level request fields the OpenAI translation carries, and those that change nothing a
# model answers (`labels` is billing metadata; `model` repeats the URL's model).
_TRANSLATED_TOP = frozenset({"contents", "systemInstruction", "generationConfig"})
_HARMLESS_TOP = frozenset({"labels", "model"})
_TOP_REASONS = {
    "tools": "tools",
    "toolConfig": "tool_config",
    "cachedContent": "cached_content",
    "safetySettings": "safety_settings",
}
# generationConfig fields the OpenAI translation carries, or checks itself below.
_TRANSLATED_CONFIG = frozenset(
    {
        "temperature",
        "topP",
        "maxOutputTokens",
        "stopSequences",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "candidateCount",
        "responseModalities",
    }
)
_CONFIG_REASONS = {
    "thinkingConfig": "thinking",
    "responseLogprobs": "logprobs",
    "logprobs": "logprobs",
}
_FLOAT_FIELDS = frozenset({"temperature", "topP", "presencePenalty", "frequencyPenalty"})
_INT_FIELDS = frozenset({"topK", "maxOutputTokens", "candidateCount", "seed", "logprobs"})
_JSON_MIME = "application/json"
_TEXT_MIMES = frozenset({"text/plain", _JSON_MIME})
_SCHEMA_FIELDS = ("responseSchema", "responseJsonSchema")

# The data fields of a Part (exactly one of them carries its content).
_DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
# Part fields whose values are objects with known (camelCase) keys, and their free-form keys.
_PART_OBJECTS = {
    "inlineData": frozenset(),
    "fileData": frozenset(),
    "functionCall": frozenset({"args"}),
    "functionResponse": frozenset({"response"}),
    "executableCode": frozenset(),
    "codeExecutionResult": frozenset(),
    "videoMetadata": frozenset(),
}

_FINISH_TO_GEMINI = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "tool_calls": "STOP",
    "function_call": "STOP",
}
_FINISH_TO_OPENAI = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# OpenAI request fields that change nothing the model answers.
_OPENAI_PLUMBING = frozenset({"model", "messages", "stream", "stream_options", "user"})
_OPENAI_REASONS = {
    "tools": "tools",
    "functions": "tools",
    "parallel_tool_calls": "tools",
    "tool_choice": "tool_choice",
    "function_call": "tool_choice",
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "reasoning_effort": "thinking",
    "modalities": "response_modalities",
}
_OPENAI_TRANSLATED = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "n",
    }
)


class WireError(ValueError):
    """A request body this protocol cannot accept: the message says what and where (a 400)."""


# --- normalization -------------------------------------------------------------------------


def _camel(name: str) -> str:
    """`snake_case` -> `snakeCase`; names without an inner underscore stay as they are."""
    head, *rest = name.split("_")
    if not rest or not head:
        return name
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _camel_keys(obj: Any, keep: frozenset[str] = frozenset(), deep: bool = False) -> Any:
    """A copy of an object with camelCase keys; the values of `keep` keys untouched, nested
    objects and lists converted too when `deep`. A camelCase key wins over its snake_case twin.
    Anything other than an object is returned as it is (the checks report it)."""
    if not isinstance(obj, dict):
        return obj
    if not deep and "_" not in "".join(obj):  # no snake_case key (as the SDK sends most)
        return dict(obj)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _camel(key)
        if name in out and name != key:
            continue
        if deep and name not in keep:
            value = _deep_camel(value)
        out[name] = value
    return out


def _deep_camel(value: Any) -> Any:
    if isinstance(value, dict):
        return _camel_keys(value, deep=True)
    if isinstance(value, list):
        return [_deep_camel(v) for v in value]
    return value


def _plain_text(part: Any) -> bool:
    """A part that is only `{"text": "..."}`, as nearly every part of a chat is."""
    return type(part) is dict and len(part) == 1 and type(part.get("text")) is str


def _normalize_part(part: Any) -> Any:
    if _plain_text(part):
        return {"text": part["text"]}
    part = _camel_keys(part)
    if not isinstance(part, dict):
        return part
    for field, keep in _PART_OBJECTS.items():
        if field in part:
            part[field] = _camel_keys(part[field], keep)
    return part


def _normalize_content(content: Any) -> Any:
    content = _camel_keys(content)
    if isinstance(content, dict) and isinstance(content.get("parts"), list):
        content["parts"] = [_normalize_part(p) for p in content["parts"]]
    return content


def _normalize_config(config: Any) -> Any:
    config = _camel_keys(config)
    if not isinstance(config, dict):
        return config
    for field in ("thinkingConfig", "speechConfig", "imageConfig"):
        if field in config:
            config[field] = _deep_camel(config[field])
    return config


def _normalize_tool(tool: Any) -> Any:
    tool = _camel_keys(tool)
    if not isinstance(tool, dict):
        return tool
    for name, value in tool.items():
        if name == "functionDeclarations" and isinstance(value, list):
            free = frozenset(
                {"parameters", "parametersJsonSchema", "response", "responseJsonSchema"}
            )
            tool[name] = [_camel_keys(decl, free) for decl in value]
        elif isinstance(value, dict):
            tool[name] = _camel_keys(value)
    return tool


def _plain_turns(contents: list[Any], *, check_role: bool = True) -> list[dict[str, Any]] | None:
    """A copy of `contents` when every turn is a chat's plain text turn: role "user" or
    "model" (any role unless `check_role`, as for the system instruction) or none, and parts
    that each hold only a text. Nothing in it is renamed and nothing else needs checking. None
    for anything else (the general path takes it)."""
    turns = []
    for content in contents:
        if type(content) is not dict:
            return None
        parts = content.get("parts")
        if type(parts) is not list or not parts:
            return None
        if "role" in content:
            role = content["role"]
            if (check_role and role != "user" and role != "model") or len(content) != 2:
                return None
        elif len(content) != 1:
            return None
        texts = []
        for part in parts:
            if not _plain_text(part):
                return None
            texts.append({"text": part["text"]})
        turn = dict(content)
        turn["parts"] = texts
        turns.append(turn)
    return turns


def normalize(
    body: dict[str, Any],
    contents: list[dict[str, Any]] | None = None,
    system: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of a Gemini request body with the camelCase names of its known fields (Gemini
    accepts both spellings); free-form values (schemas, function args, labels) untouched.
    `contents` and `system`: the body's contents and system instruction, already normalized
    (by `_plain_turns`)."""
    out: dict[str, Any] = _camel_keys(body)
    if contents is not None:
        out["contents"] = contents
    elif isinstance(out.get("contents"), list):
        out["contents"] = [_normalize_content(c) for c in out["contents"]]
    if system is not None:
        out["systemInstruction"] = system
    elif "systemInstruction" in out:
        out["systemInstruction"] = _normalize_content(out["systemInstruction"])
    if "generationConfig" in out:
        out["generationConfig"] = _normalize_config(out["generationConfig"])
    if isinstance(out.get("tools"), list):
        out["tools"] = [_normalize_tool(t) for t in out["tools"]]
    if "toolConfig" in out:
        out["toolConfig"] = _deep_camel(out["toolConfig"])
    if isinstance(out.get("safetySettings"), list):
        out["safetySettings"] = [_camel_keys(s) for s in out["safetySettings"]]
    return out


# --- checks ----------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def _check_part(where: str, part: Any) -> None:
    if not isinstance(part, dict):
        raise WireError(f"{where} must be an object, not {_json_type(part)}")
    if not any(field in part for field in _DATA_FIELDS):
        raise WireError(f"{where} has no data field; give one of {', '.join(_DATA_FIELDS)}")
    if "text" in part and not isinstance(part["text"], str):
        raise WireError(f"{where}.text must be a string, not {_json_type(part['text'])}")
    for field in ("inlineData", "fileData"):
        if field in part and not isinstance(part[field], dict):
            raise WireError(f"{where}.{field} must be an object, not {_json_type(part[field])}")
    inline = part.get("inlineData")
    if inline is not None and not isinstance(inline.get("mimeType"), str):
        raise WireError(f"{where}.inlineData.mimeType must be a string")
    file_data = part.get("fileData")
    if file_data is not None and not isinstance(file_data.get("fileUri"), str):
        raise WireError(f"{where}.fileData.fileUri must be a string")


def _check_content(where: str, content: Any, *, check_role: bool) -> None:
    if not isinstance(content, dict):
        raise WireError(f"{where} must be an object with `role` and `parts`")
    if check_role and "role" in content and content["role"] not in ("user", "model"):
        role = content["role"]
        shown = repr(role) if isinstance(role, str) else _json_type(role)
        raise WireError(f"{where}.role must be 'user' or 'model', not {shown}")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise WireError(f"{where}.parts is required and must be a non-empty list")
    for j, part in enumerate(parts):
        if not _plain_text(part):
            _check_part(f"{where}.parts[{j}]", part)


def _check_number(config: dict[str, Any], field: str, *, whole: bool) -> None:
    if field not in config or config[field] is None:
        return
    value = config[field]
    if isinstance(value, float) and whole and value.is_integer():
        config[field] = int(value)
        return
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if whole else "a number"
        raise WireError(f"generationConfig.{field} must be {kind}, not {_json_type(value)}")


def _check_config(config: Any) -> None:
    if not isinstance(config, dict):
        raise WireError(f"generationConfig must be an object, not {_json_type(config)}")
    for field in config:
        if field in _FLOAT_FIELDS:
            _check_number(config, field, whole=False)
        elif field in _INT_FIELDS:
            _check_number(config, field, whole=True)
    stops = config.get("stopSequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise WireError("generationConfig.stopSequences must be a list of strings")
    mime = config.get("responseMimeType")
    if mime is not None and not isinstance(mime, str):
        raise WireError("generationConfig.responseMimeType must be a string")
    modalities = config.get("responseModalities")
    if modalities is not None and not (
        isinstance(modalities, list) and all(isinstance(m, str) for m in modalities)
    ):
        raise WireError("generationConfig.responseModalities must be a list of strings")


def parse_gemini_body(raw: bytes) -> dict[str, Any]:
    """The normalized (camelCase) body of a generateContent request. Raises WireError for
    invalid JSON, a non-object, `contents` missing/empty/not a list, a content without `parts`
    list, a role other than user/model, a part that is not an object or has no known data
    field, text not a string, `generationConfig` not an object or a numeric field of the wrong
    type. Messages name the field, e.g. "contents[2].role must be 'user' or 'model', not
    'assistant'"."""
    if not raw:
        raise WireError("request body is empty; send a JSON generateContent request")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"request body is not valid JSON (UTF-8): {exc}") from None
    if not isinstance(parsed, dict):
        raise WireError(f"request body must be a JSON object, not {_json_type(parsed)}")
    turns = parsed.get("contents")
    plain = _plain_turns(turns) if type(turns) is list else None
    system = parsed.get("systemInstruction")
    plain_system = _plain_turns([system], check_role=False) if type(system) is dict else None
    body = normalize(parsed, plain, plain_system[0] if plain_system else None)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise WireError("`contents` is required and must be a non-empty list")
    if plain is None:
        for i, content in enumerate(contents):
            _check_content(f"contents[{i}]", content, check_role=True)
    if plain_system is None and body.get("systemInstruction") is not None:
        _check_content("systemInstruction", body["systemInstruction"], check_role=False)
    if body.get("generationConfig") is not None:
        _check_config(body["generationConfig"])
    for field in ("tools", "safetySettings"):
        if field in body and not isinstance(body[field], list):
            raise WireError(f"`{field}` must be a list, not {_json_type(body[field])}")
    cached = body.get("cachedContent")
    if cached is not None and not isinstance(cached, str):
        raise WireError("`cachedContent` must be a string naming a cached content")
    return body


# --- what an OpenAI-compatible model cannot serve ----------------------------------------


def _is_text(part: dict[str, Any]) -> bool:
    """A plain text part (not a thought)."""
    return "text" in part and not part.get("thought")


def _all_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    contents = list(body.get("contents") or [])
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        contents.append(system)
    return [p for c in contents for p in c.get("parts") or [] if isinstance(p, dict)]


def _text_only(modalities: Any) -> bool:
    return not modalities or all(str(m).upper() == "TEXT" for m in modalities)


def _config_features(config: dict[str, Any]) -> set[str]:
    reasons: set[str] = set()
    for name, value in config.items():
        if value is None:
            continue
        if name in _CONFIG_REASONS:
            if name != "responseLogprobs" or value:
                reasons.add(_CONFIG_REASONS[name])
        elif name not in _TRANSLATED_CONFIG:
            reasons.add(f"field:{name}")
    count = config.get("candidateCount")
    if isinstance(count, int) and count > 1:
        reasons.add("candidate_count")
    if not _text_only(config.get("responseModalities")):
        reasons.add("response_modalities")
    mime = config.get("responseMimeType")
    if mime is not None and mime not in _TEXT_MIMES:
        reasons.add("field:responseMimeType")
    if mime != _JSON_MIME:
        reasons.update(f"field:{f}" for f in _SCHEMA_FIELDS if config.get(f) is not None)
    return reasons


def unsupported_features(body: dict[str, Any]) -> list[str]:
    """The features of a normalized Gemini request an OpenAI-compatible model cannot serve
    faithfully, as reason names, sorted, without duplicates: "tools", "tool_config",
    "cached_content", "non_text_parts" (any part other than plain text, thoughts included),
    "safety_settings", "thinking", "candidate_count" (more than one), "response_modalities"
    (other than TEXT), "logprobs", and "field:<name>" for any other top-level or
    generationConfig field the translation does not carry. Empty: it translates faithfully."""
    reasons: set[str] = set()
    for name, value in body.items():
        if value is None or name in _TRANSLATED_TOP or name in _HARMLESS_TOP:
            continue
        reasons.add(_TOP_REASONS.get(name, f"field:{name}"))
    if any(not _is_text(part) for part in _all_parts(body)):
        reasons.add("non_text_parts")
    config = body.get("generationConfig")
    if isinstance(config, dict):
        reasons |= _config_features(config)
    return sorted(reasons)


def _placeholder(part: dict[str, Any]) -> str:
    """The text that stands for a non-text part in a stripped request."""
    for field in ("inlineData", "fileData"):
        data = part.get(field)
        if isinstance(data, dict):
            mime = data.get("mimeType")
            return f"[{mime} omitted]" if isinstance(mime, str) and mime else "[file omitted]"
    names = {
        "functionCall": "function call",
        "functionResponse": "function response",
        "executableCode": "code",
        "codeExecutionResult": "code execution result",
    }
    kind = next((label for field, label in names.items() if field in part), "part")
    return f"[{kind} omitted]"


def _strip_content(content: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in content.get("parts") or []:
        if part.get("thought"):
            continue  # the model's private reasoning, not the conversation
        parts.append({"text": part["text"]} if "text" in part else {"text": _placeholder(part)})
    out = {k: v for k, v in content.items() if k != "parts"}
    out["parts"] = parts or [{"text": ""}]
    return out


def strip_unsupported(body: dict[str, Any]) -> dict[str, Any]:
    """A copy without what `unsupported_features` names, so an OpenAI-compatible model answers
    from the conversation: tools, toolConfig, cachedContent, safetySettings, thinkingConfig and
    other unknown fields dropped; each non-text part replaced by a text placeholder such as
    "[image/png omitted]", "[file omitted]" or "[function call omitted]"; thought parts
    dropped; candidateCount, non-text responseModalities and logprobs dropped."""
    out = {k: copy.deepcopy(v) for k, v in body.items() if k in _TRANSLATED_TOP | _HARMLESS_TOP}
    out["contents"] = [_strip_content(c) for c in out.get("contents") or []]
    if isinstance(out.get("systemInstruction"), dict):
        out["systemInstruction"] = _strip_content(out["systemInstruction"])
    config = out.get("generationConfig")
    if isinstance(config, dict):
        kept = {k: v for k, v in config.items() if k in _TRANSLATED_CONFIG and v is not None}
        kept.pop("candidateCount", None)
        if not _text_only(kept.get("responseModalities")):
            kept.pop("responseModalities")
        mime = kept.get("responseMimeType")
        if mime is not None and mime not in _TEXT_MIMES:
            kept.pop("responseMimeType")
        if kept.get("responseMimeType") != _JSON_MIME:
            for field in _SCHEMA_FIELDS:
                kept.pop(field, None)
        out["generationConfig"] = kept
    return out


# --- Gemini request -> OpenAI request ------------------------------------------------------

_SCHEMA_RENAMES = {"ref": "$ref", "defs": "$defs"}


def gemini_schema_to_json_schema(schema: Any) -> Any:
    """JSON Schema for a schema in Gemini's OpenAPI subset: lower-case types ("OBJECT" ->
    "object"), `nullable: true` -> a type list with "null", `propertyOrdering` dropped,
    `example` -> `examples`; nested properties, items and alternatives converted too."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        name = _SCHEMA_RENAMES.get(key, _camel(key))
        if name in ("propertyOrdering", "nullable"):
            continue
        if name == "type":
            value = _schema_type(value)
            if value is None:
                continue
        elif name in ("properties", "$defs") and isinstance(value, dict):
            value = {k: gemini_schema_to_json_schema(v) for k, v in value.items()}
        elif name in ("items", "additionalProperties", "not"):
            value = gemini_schema_to_json_schema(value)
        elif name in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            value = [gemini_schema_to_json_schema(v) for v in value]
        elif name == "example":
            name, value = "examples", [value]
        out[name] = value
    if schema.get("nullable") is True:
        _allow_null(out)
    return out


def _schema_type(value: Any) -> Any:
    if isinstance(value, str):
        return None if value.upper() == "TYPE_UNSPECIFIED" else value.lower()
    if isinstance(value, list):
        return [v.lower() if isinstance(v, str) else v for v in value]
    return value


def _allow_null(schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if isinstance(kind, str) and kind != "null":
        schema["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        schema["type"] = [*kind, "null"]
    elif kind is None and "anyOf" in schema:
        schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    enum = schema.get("enum")
    if isinstance(enum, list) and None not in enum:
        schema["enum"] = [*enum, None]


def _texts(content: Any, sep: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return sep.join(p["text"] for p in parts or [] if isinstance(p, dict) and _is_text(p))


def _response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    if config.get("responseMimeType") != _JSON_MIME:
        return None
    if config.get("responseJsonSchema") is not None:
        schema = config["responseJsonSchema"]
    elif config.get("responseSchema") is not None:
        schema = gemini_schema_to_json_schema(config["responseSchema"])
    else:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


_CONFIG_TO_OPENAI = {
    "temperature": "temperature",
    "topP": "top_p",
    "maxOutputTokens": "max_tokens",
    "stopSequences": "stop",
    "seed": "seed",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
}


def gemini_to_openai_request(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """An OpenAI chat completion body for a (stripped or faithful) normalized Gemini request:
    the system instruction's text parts joined with "\\n" as a first system message; user ->
    user and model -> assistant, a content's text parts joined with "" (as Gemini joins them);
    temperature, topP, maxOutputTokens, stopSequences, seed and the penalties as their OpenAI
    parameters; a JSON responseMimeType as `response_format` (json_schema with the schema
    converted to JSON Schema, or json_object); `stream` with usage in the stream."""
    messages: list[dict[str, Any]] = []
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        messages.append({"role": "system", "content": _texts(system, "\n")})
    for content in body.get("contents") or []:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": _texts(content, "")})
    out: dict[str, Any] = {"model": model, "messages": messages}
    config = body.get("generationConfig")
    if isinstance(config, dict):
        for field, param in _CONFIG_TO_OPENAI.items():
            if config.get(field) is not None:
                out[param] = config[field]
        response_format = _response_format(config)
        if response_format is not None:
            out["response_format"] = response_format
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# --- the request log and stickiness ------------------------------------------------------


def _part_kind(part: dict[str, Any]) -> tuple[str, str | None]:
    """A non-text part's kind (a noun) and detail (mime type or name) for the request log."""
    if part.get("thought"):
        return "thought", None
    for field in ("inlineData", "fileData"):
        data = part.get(field)
        if isinstance(data, dict):
            mime = data.get("mimeType")
            mime = mime if isinstance(mime, str) and mime else None
            family = (mime or "").split("/", 1)[0]
            return (family if family in ("image", "audio", "video") else "file"), mime
    for field, noun in (
        ("functionCall", "function call"),
        ("functionResponse", "function response"),
    ):
        data = part.get(field)
        if isinstance(data, dict):
            name = data.get("name")
            return noun, name if isinstance(name, str) else None
    if "executableCode" in part:
        return "code", None
    if "codeExecutionResult" in part:
        return "code execution result", None
    return "part", None


def _summary(parts: list[dict[str, Any]]) -> str:
    """Placeholders for a content's non-text parts, grouped by kind: "[image (image/png)
    omitted]", "[2 images (image/png, image/jpeg) omitted]"."""
    groups: dict[str, list[str | None]] = {}
    for part in parts:
        noun, detail = _part_kind(part)
        groups.setdefault(noun, []).append(detail)
    out = []
    for noun, details in groups.items():
        named = list(dict.fromkeys(d for d in details if d))
        shown = f" ({', '.join(named)})" if named else ""
        count = f"{len(details)} {noun}s" if len(details) > 1 else noun
        out.append(f"[{count}{shown} omitted]")
    return " ".join(out)


def _log_text(content: dict[str, Any], sep: str) -> str:
    texts: list[str] = []
    others: list[dict[str, Any]] = []
    for part in content.get("parts") or []:
        if not isinstance(part, dict):
            continue
        if _is_text(part):
            if isinstance(part["text"], str):
                texts.append(part["text"])
        else:
            others.append(part)
    text = sep.join(texts)
    if not others:
        return text
    summary = _summary(others)
    return f"{text}\n{summary}" if text else summary


def gemini_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation of a normalized Gemini request as OpenAI-style messages for the
    request log: system instruction -> system, user -> user, model -> assistant; text parts
    joined; non-text parts as placeholders naming their kind and mime type, counted when a
    content has several, e.g. "[2 images (image/png) omitted]"."""
    messages: list[dict[str, Any]] = []
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        messages.append({"role": "system", "content": _log_text(system, "\n")})
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            role = "assistant" if content.get("role") == "model" else "user"
            messages.append({"role": role, "content": _log_text(content, "")})
    return messages


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def opening_text(messages: list[dict[str, Any]]) -> str | None:
    """The conversation's opening for stickiness: the system messages' texts and the first
    user message's text (content a string or a list of {"type": "text"} parts), encoded as a
    JSON array so that no text can be mistaken for a boundary; None without a user message."""
    systems = [_message_text(m) for m in messages if m.get("role") in ("system", "developer")]
    first_user = next((m for m in messages if m.get("role") == "user"), None)
    if first_user is None:
        return None
    return orjson.dumps([systems, _message_text(first_user)]).decode()


def gemini_opening(body: dict[str, Any]) -> str | None:
    """`opening_text(gemini_messages(body))`, reading only the system instruction and the
    first user turn of a normalized Gemini request (not the whole conversation)."""
    system = body.get("systemInstruction")
    systems = [_log_text(system, "\n")] if isinstance(system, dict) else []
    for content in body.get("contents") or []:
        if isinstance(content, dict) and content.get("role") != "model":
            return orjson.dumps([systems, _log_text(content, "")]).decode()
    return None


# --- OpenAI request -> Gemini request ------------------------------------------------------


def _openai_part(part: dict[str, Any], reasons: set[str]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return {"text": part["text"]}
    reasons.add("non_text_parts")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
            mime, data = url[5:].split(";base64,", 1)
            return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}
        if isinstance(url, str):
            return {"fileData": {"fileUri": url}}
    return None


def _openai_parts(content: Any, reasons: set[str]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, list):
        parts = (_openai_part(p, reasons) for p in content if isinstance(p, dict))
        return [p for p in parts if p is not None]
    return []


def _openai_config(body: dict[str, Any], reasons: set[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for field, param in _CONFIG_TO_OPENAI.items():
        if body.get(param) is not None:
            config[field] = body[param]
    if body.get("max_completion_tokens") is not None:
        config["maxOutputTokens"] = body["max_completion_tokens"]
    if isinstance(config.get("stopSequences"), str):
        config["stopSequences"] = [config["stopSequences"]]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = _JSON_MIME
        spec = fmt.get("json_schema")
        if fmt["type"] == "json_schema" and isinstance(spec, dict) and "schema" in spec:
            config["responseJsonSchema"] = spec["schema"]
    elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        reasons.add("field:response_format")
    n = body.get("n")
    if n is not None and n != 1:
        reasons.add("n")
    return config


def openai_to_gemini_request(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A Gemini generateContent body for a (validated) OpenAI chat completion body, and the
    features that do not translate, as sorted reason names: "tools", "tool_choice", "n",
    "logprobs", "thinking", "non_text_parts" (image and other non-text parts), "late_system"
    (a system message after the conversation began; it joins the system instruction),
    "field:<name>" for other parameters. Leading system messages -> systemInstruction, user ->
    user, assistant -> model; tool messages and tool calls are left out."""
    reasons: set[str] = set()
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            if contents:
                reasons.add("late_system")
            system.append({"text": _message_text(message)})
        elif role in ("user", "assistant"):
            if message.get("tool_calls") or message.get("function_call"):
                reasons.add("tools")
            parts = _openai_parts(message.get("content"), reasons)
            if parts:
                contents.append({"role": "user" if role == "user" else "model", "parts": parts})
        else:
            reasons.add("tools")
    for name, value in body.items():
        if value is None or name in _OPENAI_PLUMBING or name in _OPENAI_TRANSLATED:
            continue
        if name in ("logprobs", "parallel_tool_calls") and value is False:
            continue
        reasons.add(_OPENAI_REASONS.get(name, f"field:{name}"))
    out: dict[str, Any] = {}
    if not contents and system:  # Gemini needs a content: the instruction becomes the turn
        contents, system = [{"role": "user", "parts": system}], []
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}
    config = _openai_config(body, reasons)
    if config:
        out["generationConfig"] = config
    return out, sorted(reasons)


# --- responses -------------------------------------------------------------------------------


def _usage_metadata(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    out: dict[str, int] = {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int):
        out["promptTokenCount"] = prompt
    if isinstance(completion, int):
        out["candidatesTokenCount"] = completion
    total = usage.get("total_tokens")
    if isinstance(total, int):
        out["totalTokenCount"] = total
    elif isinstance(prompt, int) and isinstance(completion, int):
        out["totalTokenCount"] = prompt + completion
    return out


def _gemini_finish(reason: Any) -> str:
    return _FINISH_TO_GEMINI.get(reason, "OTHER") if isinstance(reason, str) else "OTHER"


def openai_to_gemini_response(
    data: dict[str, Any], *, response_id: str, model_version: str
) -> dict[str, Any]:
    """A GenerateContentResponse for an OpenAI chat completion: each choice -> a candidate with
    one text part and its finishReason (stop -> STOP, length -> MAX_TOKENS, content_filter ->
    SAFETY, tool_calls -> STOP, other -> OTHER); usage -> usageMetadata."""
    candidates = []
    for i, choice in enumerate(data.get("choices") or []):
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message.get("content"), str) else ""
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "index": choice.get("index", i),
        }
        if choice.get("finish_reason") is not None:
            candidate["finishReason"] = _gemini_finish(choice["finish_reason"])
        candidates.append(candidate)
    out: dict[str, Any] = {"candidates": candidates}
    usage = _usage_metadata(data.get("usage"))
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = model_version
    out["responseId"] = response_id
    return out


def _candidate_text(candidate: Any) -> str:
    if not isinstance(candidate, dict):
        return ""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return "".join(
        p["text"]
        for p in parts or []
        if isinstance(p, dict) and _is_text(p) and isinstance(p["text"], str)
    )


def _openai_finish(reason: Any) -> str:
    return _FINISH_TO_OPENAI.get(reason, "stop") if isinstance(reason, str) else "stop"


def gemini_usage(data: dict[str, Any]) -> dict[str, int]:
    """usageMetadata as {"prompt_tokens", "completion_tokens"}; completion counts the answer
    and the thoughts (both billed as output); a count Gemini left out is absent."""
    meta = data.get("usageMetadata")
    if not isinstance(meta, dict):
        return {}
    out: dict[str, int] = {}
    prompt = meta.get("promptTokenCount")
    if isinstance(prompt, int):
        out["prompt_tokens"] = prompt
    counts = [meta.get(k) for k in ("candidatesTokenCount", "thoughtsTokenCount")]
    if any(isinstance(c, int) for c in counts):
        out["completion_tokens"] = sum(c for c in counts if isinstance(c, int))
    return out


def _openai_usage(data: dict[str, Any]) -> dict[str, Any] | None:
    meta = data.get("usageMetadata")
    if not isinstance(meta, dict):
        return None
    tokens = gemini_usage(data)
    prompt, completion = tokens.get("prompt_tokens", 0), tokens.get("completion_tokens", 0)
    total = meta.get("totalTokenCount")
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if isinstance(total, int) else prompt + completion,
    }
    thoughts = meta.get("thoughtsTokenCount")
    if isinstance(thoughts, int):
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def gemini_to_openai_response(
    data: dict[str, Any], *, completion_id: str, model: str, created: int
) -> dict[str, Any]:
    """A chat.completion for a GenerateContentResponse: each candidate's text parts joined
    (thoughts left out); STOP -> stop, MAX_TOKENS -> length, SAFETY, RECITATION, BLOCKLIST,
    PROHIBITED_CONTENT, SPII -> content_filter, other -> stop. A response without candidates
    (a blocked prompt) -> one choice with empty content and finish_reason content_filter."""
    choices = []
    for i, candidate in enumerate(data.get("candidates") or []):
        choices.append(
            {
                "index": candidate.get("index", i) if isinstance(candidate, dict) else i,
                "message": {"role": "assistant", "content": _candidate_text(candidate)},
                "finish_reason": _openai_finish(
                    candidate.get("finishReason") if isinstance(candidate, dict) else None
                ),
                "logprobs": None,
            }
        )
    if not choices:
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "content_filter",
                "logprobs": None,
            }
        )
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    usage = _openai_usage(data)
    if usage is not None:
        out["usage"] = usage
    return out


def gemini_reply_text(chunks_or_response: dict[str, Any]) -> str:
    """The text of a GenerateContentResponse's first candidate (parts joined, thoughts left
    out); "" when it has none. For a stream, pass `merge_gemini_chunks(chunks)`."""
    candidates = chunks_or_response.get("candidates") or []
    return _candidate_text(candidates[0]) if candidates else ""


def merge_gemini_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """One GenerateContentResponse for a stream of chunks: each candidate's text concatenated
    in one part, its last finishReason, and the last usageMetadata, modelVersion, responseId
    and promptFeedback seen."""
    texts: dict[int, list[str]] = {}
    finishes: dict[int, str] = {}
    out: dict[str, Any] = {}
    for chunk in chunks:
        for i, candidate in enumerate(chunk.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", i)
            texts.setdefault(index, []).append(_candidate_text(candidate))
            if candidate.get("finishReason") is not None:
                finishes[index] = candidate["finishReason"]
        for field in ("usageMetadata", "modelVersion", "responseId", "promptFeedback"):
            if chunk.get(field) is not None:
                out[field] = chunk[field]
    candidates: list[dict[str, Any]] = []
    for index, parts in sorted(texts.items()):
        merged: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": "".join(parts)}]},
            "index": index,
        }
        if index in finishes:
            merged["finishReason"] = finishes[index]
        candidates.append(merged)
    return {"candidates": candidates, **out}


def gemini_error(status: int, message: str) -> dict[str, Any]:
    """An error body in Gemini's shape: {"error": {"code", "message", "status"}}."""
    names = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
        413: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
        501: "UNIMPLEMENTED",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
    fallback = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    return {"error": {"code": status, "message": message, "status": names.get(status, fallback)}}


# --- streams ---------------------------------------------------------------------------------


class OpenAIToGeminiStream:
    """Turns OpenAI chat.completion.chunk dicts into GenerateContentResponse chunk dicts: one
    per input chunk that carries text, a finish reason or usage, with responseId and
    modelVersion on each. The chunk with the finish reason is held back until usage arrives
    (the usage is attached to it) or the stream ends (`finish`); usage with nothing held back
    is a chunk of its own."""

    def __init__(self, *, response_id: str, model_version: str) -> None:
        self._response_id = response_id
        self._model_version = model_version
        self._held: dict[str, Any] | None = None

    def _chunk(self, candidates: list[dict[str, Any]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if candidates is not None:
            out["candidates"] = candidates
        out["modelVersion"] = self._model_version
        out["responseId"] = self._response_id
        return out

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The Gemini chunks to send now for one OpenAI chunk."""
        candidates = []
        finished = False
        for i, choice in enumerate(chunk.get("choices") or []):
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta.get("content"), str) else ""
            reason = choice.get("finish_reason")
            if not text and reason is None:
                continue
            candidate: dict[str, Any] = {
                "content": {"role": "model", "parts": [{"text": text}]},
                "index": choice.get("index", i),
            }
            if reason is not None:
                candidate["finishReason"] = _gemini_finish(reason)
                finished = True
            candidates.append(candidate)
        usage = _usage_metadata(chunk.get("usage"))
        out: list[dict[str, Any]] = []
        if candidates:
            out.extend(self.finish())  # anything after a held chunk follows it
            self._held = self._chunk(candidates)
        if usage is not None:
            held, self._held = self._held, None
            target = held if held is not None else self._chunk(None)
            target["usageMetadata"] = usage
            out.append(target)
        elif candidates and not finished:
            out.extend(self.finish())
        return out

    def finish(self) -> list[dict[str, Any]]:
        """What is still held back: the final chunk when no usage followed it."""
        held, self._held = self._held, None
        return [held] if held is not None else []


class GeminiToOpenAIStream:
    """Turns GenerateContentResponse chunks into chat.completion.chunk dicts: the first with
    delta role assistant, then text deltas, the finish reason on the last; at the end
    (`finish`) a usage chunk with empty choices when usageMetadata was seen."""

    def __init__(self, *, completion_id: str, model: str, created: int) -> None:
        self._id = completion_id
        self._model = model
        self._created = created
        self._started = False
        self._usage: dict[str, Any] | None = None

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def _choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        delta: dict[str, Any] = {"content": text}
        if not self._started:
            delta = {"role": "assistant", **delta}
            self._started = True
        return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunks to send now for one Gemini chunk."""
        usage = _openai_usage(chunk)
        if usage is not None:
            self._usage = usage
        candidates = chunk.get("candidates")
        if not candidates and isinstance(chunk.get("promptFeedback"), dict):
            blocked = chunk["promptFeedback"].get("blockReason") is not None
            return [self._chunk([self._choice(0, "", "content_filter")])] if blocked else []
        choices = []
        for i, candidate in enumerate(candidates or []):
            if not isinstance(candidate, dict):
                continue
            text = _candidate_text(candidate)
            finish = candidate.get("finishReason")
            reason = _openai_finish(finish) if finish is not None else None
            if text or reason is not None:
                choices.append(self._choice(candidate.get("index", i), text, reason))
        return [self._chunk(choices)] if choices else []

    def finish(self) -> list[dict[str, Any]]:
        """The usage chunk (empty choices), when the stream reported usage."""
        if self._usage is None:
            return []
        chunk = self._chunk([])
        chunk["usage"] = self._usage
        self._usage = None
        return [chunk]
