"""Translation between Gemini's native protocol and OpenAI's chat completions, both ways."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google import genai
from google.genai import _common, models, types

from larrylab.router._gemini_wire import (
    GeminiToOpenAIStream,
    OpenAIToGeminiStream,
    WireError,
    gemini_error,
    gemini_messages,
    gemini_opening,
    gemini_reply_text,
    gemini_to_openai_request,
    gemini_to_openai_response,
    gemini_usage,
    merge_gemini_chunks,
    normalize,
    openai_to_gemini_request,
    openai_to_gemini_response,
    opening_text,
    parse_gemini_body,
    strip_unsupported,
    unsupported_features,
)

LARRY_SYSTEM = "You are Larry, a coach who asks one question at a time."
PNG = b"\x89PNG\r\n\x1a\nfake"


def sdk_body(contents: Any, config: types.GenerateContentConfig | None = None) -> bytes:
    """The JSON body google-genai sends to generateContent for these arguments."""
    client = genai.Client(api_key="test-key")
    params = types._GenerateContentParameters(
        model="gemini-2.5-flash", contents=contents, config=config
    )
    body = models._GenerateContentParameters_to_mldev(client._api_client, params)
    body.pop("_url", None)
    body.pop("config", None)
    return orjson.dumps(_common.encode_unserializable_types(_common.convert_to_dict(body)))


def larry_turns() -> list[types.Content]:
    return [
        types.Content(role="user", parts=[types.Part(text="I keep procrastinating.")]),
        types.Content(role="model", parts=[types.Part(text="What do you put off most?")]),
        types.Content(role="user", parts=[types.Part(text="Writing my thesis.")]),
    ]


def larry_body(**config: Any) -> dict[str, Any]:
    """Larry's usual request: a system instruction and a multi-turn text conversation."""
    cfg = types.GenerateContentConfig(system_instruction=LARRY_SYSTEM, **config)
    return parse_gemini_body(sdk_body(larry_turns(), cfg))


# --- parsing and normalization ---------------------------------------------------------------


def test_larrys_sdk_request_parses_to_camel_case_and_translates_faithfully() -> None:
    body = larry_body(temperature=0.7, top_p=0.9, max_output_tokens=512, seed=7)

    assert body["systemInstruction"]["parts"] == [{"text": LARRY_SYSTEM}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["generationConfig"] == {
        "temperature": 0.7,
        "topP": 0.9,
        "maxOutputTokens": 512,
        "seed": 7,
    }
    assert unsupported_features(body) == []


def test_snake_case_names_become_camel_case_and_free_form_values_stay() -> None:
    raw = {
        "system_instruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"inline_data": {"mime_type": "image/png", "data": "iVBO"}},
                    {"file_data": {"file_uri": "gs://b/f.pdf", "mime_type": "application/pdf"}},
                ],
            },
            {
                "role": "model",
                "parts": [{"function_call": {"name": "f", "args": {"snake_arg": 1}}}],
            },
        ],
        "generation_config": {
            "max_output_tokens": 10,
            "response_mime_type": "application/json",
            "response_schema": {"type": "OBJECT", "properties": {"first_name": {}}},
            "thinking_config": {"thinking_budget": 0},
        },
        "tool_config": {"function_calling_config": {"allowed_function_names": ["f"]}},
        "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        "cached_content": "cachedContents/abc",
        "labels": {"team_name": "larry"},
    }
    body = normalize(raw)

    parts = body["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    assert parts[1] == {"fileData": {"fileUri": "gs://b/f.pdf", "mimeType": "application/pdf"}}
    assert body["contents"][1]["parts"][0]["functionCall"]["args"] == {"snake_arg": 1}
    config = body["generationConfig"]
    assert config["maxOutputTokens"] == 10
    assert config["responseSchema"]["properties"] == {"first_name": {}}
    assert config["thinkingConfig"] == {"thinkingBudget": 0}
    assert body["toolConfig"] == {"functionCallingConfig": {"allowedFunctionNames": ["f"]}}
    assert body["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    assert body["cachedContent"] == "cachedContents/abc"
    assert body["labels"] == {"team_name": "larry"}
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}


def test_a_whole_number_written_as_a_float_is_an_integer() -> None:
    raw = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 64.0}}
    assert parse_gemini_body(orjson.dumps(raw))["generationConfig"]["maxOutputTokens"] == 64


def test_a_content_without_a_role_is_the_users_and_camel_case_wins_over_snake_case() -> None:
    raw = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generation_config": {"temperature": 0.1},
        "generationConfig": {"temperature": 0.9},
    }
    body = parse_gemini_body(orjson.dumps(raw))
    assert body["generationConfig"] == {"temperature": 0.9}
    assert gemini_messages(body) == [{"role": "user", "content": "hi"}]
    assert gemini_to_openai_request(body, "m", stream=False)["messages"] == [
        {"role": "user", "content": "hi"}
    ]


def _contents(*parts: Any, role: Any = "user") -> dict[str, Any]:
    return {"contents": [{"role": role, "parts": list(parts)}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is empty"),
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object, not an array"),
        (b"{}", "`contents` is required and must be a non-empty list"),
        (orjson.dumps({"contents": []}), "`contents` is required and must be a non-empty list"),
        (orjson.dumps({"contents": "hi"}), "`contents` is required and must be a non-empty list"),
        (orjson.dumps({"contents": ["hi"]}), "contents[0] must be an object"),
        (
            orjson.dumps({"contents": [{"role": "user"}]}),
            "contents[0].parts is required and must be a non-empty list",
        ),
        (
            orjson.dumps({"contents": [{"role": "user", "parts": "hi"}]}),
            "contents[0].parts is required and must be a non-empty list",
        ),
        (
            orjson.dumps(
                {
                    "contents": [
                        {"role": "user", "parts": [{"text": "a"}]},
                        {"role": "model", "parts": [{"text": "b"}]},
                        {"role": "assistant", "parts": [{"text": "c"}]},
                    ]
                }
            ),
            "contents[2].role must be 'user' or 'model', not 'assistant'",
        ),
        (orjson.dumps(_contents("hi")), "contents[0].parts[0] must be an object, not a string"),
        (
            orjson.dumps(_contents({"thought": True})),
            "contents[0].parts[0] has no data field; give one of text, inlineData",
        ),
        (
            orjson.dumps(_contents({"text": 5})),
            "contents[0].parts[0].text must be a string, not a number",
        ),
        (
            orjson.dumps(_contents({"inlineData": {"data": "AAAA"}})),
            "contents[0].parts[0].inlineData.mimeType must be a string",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "generationConfig": [1]}),
            "generationConfig must be an object, not an array",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "generationConfig": {"temperature": "1"}}),
            "generationConfig.temperature must be a number, not a string",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "generationConfig": {"topK": 2.5}}),
            "generationConfig.topK must be an integer, not a number",
        ),
        (
            orjson.dumps(
                {**_contents({"text": "hi"}), "generationConfig": {"maxOutputTokens": True}}
            ),
            "generationConfig.maxOutputTokens must be an integer, not a boolean",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "generationConfig": {"stopSequences": "x"}}),
            "generationConfig.stopSequences must be a list of strings",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "tools": {"fileSearch": {}}}),
            "`tools` must be a list, not an object",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "cachedContent": 3}),
            "`cachedContent` must be a string",
        ),
        (
            orjson.dumps({**_contents({"text": "hi"}), "systemInstruction": {"parts": []}}),
            "systemInstruction.parts is required and must be a non-empty list",
        ),
    ],
)
def test_an_invalid_body_is_refused_with_a_message_naming_the_field(
    raw: bytes, message: str
) -> None:
    with pytest.raises(WireError) as err:
        parse_gemini_body(raw)
    assert message in str(err.value)


# --- unsupported features and stripping -----------------------------------------------------


def test_larrys_file_search_tool_cached_content_and_thinking_are_unsupported() -> None:
    cfg = types.GenerateContentConfig(
        system_instruction=LARRY_SYSTEM,
        tools=[types.Tool(file_search=types.FileSearch(file_search_store_names=["stores/x"]))],
        thinking_config=types.ThinkingConfig(thinking_budget=0),
        safety_settings=[
            types.SafetySetting(category="HARM_CATEGORY_HATE_SPEECH", threshold="BLOCK_NONE")
        ],
        candidate_count=2,
        top_k=40,
    )
    raw = orjson.loads(sdk_body(larry_turns(), cfg))
    raw["cachedContent"] = "cachedContents/larry-notes"
    raw["toolConfig"] = {"functionCallingConfig": {"mode": "AUTO"}}
    body = parse_gemini_body(orjson.dumps(raw))

    assert body["tools"] == [{"fileSearch": {"fileSearchStoreNames": ["stores/x"]}}]
    assert unsupported_features(body) == [
        "cached_content",
        "candidate_count",
        "field:topK",
        "safety_settings",
        "thinking",
        "tool_config",
        "tools",
    ]
    stripped = strip_unsupported(body)
    assert unsupported_features(stripped) == []
    assert stripped["systemInstruction"] == body["systemInstruction"]
    assert stripped["contents"] == body["contents"]
    assert "tools" in body  # the original is left as it was


def test_an_inline_image_is_unsupported_and_stripped_to_a_placeholder() -> None:
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part(text="What do you see? "),
                types.Part.from_bytes(data=PNG, mime_type="image/png"),
                types.Part.from_uri(file_uri="https://x/y.pdf", mime_type="application/pdf"),
            ],
        )
    ]
    body = parse_gemini_body(sdk_body(contents))

    assert unsupported_features(body) == ["non_text_parts"]
    parts = strip_unsupported(body)["contents"][0]["parts"]
    assert parts == [
        {"text": "What do you see? "},
        {"text": "[image/png omitted]"},
        {"text": "[application/pdf omitted]"},
    ]


def test_function_parts_and_thoughts_are_non_text() -> None:
    body = parse_gemini_body(
        orjson.dumps(
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "weather?"}]},
                    {
                        "role": "model",
                        "parts": [
                            {"text": "thinking about it", "thought": True},
                            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
                        ],
                    },
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "weather", "response": {}}}],
                    },
                ]
            }
        )
    )
    assert unsupported_features(body) == ["non_text_parts"]
    stripped = strip_unsupported(body)
    assert stripped["contents"][1]["parts"] == [{"text": "[function call omitted]"}]
    assert stripped["contents"][2]["parts"] == [{"text": "[function response omitted]"}]


def test_a_thought_only_text_part_counts_as_non_text() -> None:
    body = parse_gemini_body(orjson.dumps(_contents({"text": "hmm", "thought": True})))
    assert unsupported_features(body) == ["non_text_parts"]


@pytest.mark.parametrize(
    ("config", "reasons"),
    [
        ({"responseModalities": ["TEXT"]}, []),
        ({"responseModalities": ["TEXT", "IMAGE"]}, ["response_modalities"]),
        ({"candidateCount": 1}, []),
        ({"responseLogprobs": True, "logprobs": 3}, ["logprobs"]),
        ({"responseLogprobs": False}, []),
        ({"mediaResolution": "MEDIA_RESOLUTION_LOW"}, ["field:mediaResolution"]),
        ({"responseMimeType": "text/x.enum"}, ["field:responseMimeType"]),
        ({"responseSchema": {"type": "STRING"}}, ["field:responseSchema"]),
    ],
)
def test_generation_config_features(config: dict[str, Any], reasons: list[str]) -> None:
    body = parse_gemini_body(
        orjson.dumps({**_contents({"text": "hi"}), "generationConfig": config})
    )
    assert unsupported_features(body) == reasons
    assert unsupported_features(strip_unsupported(body)) == []


def test_an_unknown_top_level_field_is_named() -> None:
    body = parse_gemini_body(orjson.dumps({**_contents({"text": "hi"}), "futureThing": 1}))
    assert unsupported_features(body) == ["field:futureThing"]
    assert "futureThing" not in strip_unsupported(body)


# --- Gemini request -> OpenAI request -------------------------------------------------------


def test_larrys_conversation_becomes_openai_messages_and_parameters() -> None:
    body = larry_body(
        temperature=0.4,
        top_p=0.95,
        max_output_tokens=300,
        stop_sequences=["END"],
        seed=3,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    )
    out = gemini_to_openai_request(body, "larry-ft-v2", stream=False)

    assert out == {
        "model": "larry-ft-v2",
        "messages": [
            {"role": "system", "content": LARRY_SYSTEM},
            {"role": "user", "content": "I keep procrastinating."},
            {"role": "assistant", "content": "What do you put off most?"},
            {"role": "user", "content": "Writing my thesis."},
        ],
        "temperature": 0.4,
        "top_p": 0.95,
        "max_tokens": 300,
        "stop": ["END"],
        "seed": 3,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
    }


def test_text_parts_are_joined_as_gemini_joins_them_and_streaming_asks_for_usage() -> None:
    body = parse_gemini_body(
        orjson.dumps(
            {
                "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
                "contents": [{"role": "user", "parts": [{"text": "Hel"}, {"text": "lo"}]}],
            }
        )
    )
    out = gemini_to_openai_request(body, "m", stream=True)
    assert out["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Hello"},
    ]
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_a_gemini_style_schema_becomes_json_schema() -> None:
    schema = types.Schema(
        type="OBJECT",
        properties={
            "next_step": types.Schema(type="STRING", description="one small action"),
            "mood": types.Schema(type="STRING", enum=["low", "ok", "high"], nullable=True),
            "steps": types.Schema(type="ARRAY", items=types.Schema(type="INTEGER"), max_items=3),
        },
        required=["next_step"],
        property_ordering=["next_step", "mood", "steps"],
    )
    body = larry_body(response_mime_type="application/json", response_schema=schema)
    assert unsupported_features(body) == []
    out = gemini_to_openai_request(body, "m", stream=False)

    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {
                "type": "object",
                "properties": {
                    "next_step": {"type": "string", "description": "one small action"},
                    "mood": {"type": ["string", "null"], "enum": ["low", "ok", "high", None]},
                    "steps": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                },
                "required": ["next_step"],
            },
        },
    }


def test_a_json_schema_passes_through_and_json_without_schema_is_json_object() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    with_schema = larry_body(response_mime_type="application/json", response_json_schema=schema)
    assert gemini_to_openai_request(with_schema, "m", stream=False)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    plain = larry_body(response_mime_type="application/json")
    assert gemini_to_openai_request(plain, "m", stream=False)["response_format"] == {
        "type": "json_object"
    }


def test_a_stripped_image_request_translates_with_its_placeholder() -> None:
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part(text="Look: "),
                types.Part.from_bytes(data=PNG, mime_type="image/png"),
            ],
        )
    ]
    body = strip_unsupported(parse_gemini_body(sdk_body(contents)))
    out = gemini_to_openai_request(body, "m", stream=False)
    assert out["messages"] == [{"role": "user", "content": "Look: [image/png omitted]"}]


# --- request log and stickiness ---------------------------------------------------------------


def test_gemini_messages_for_the_log_name_and_count_non_text_parts() -> None:
    body = parse_gemini_body(
        orjson.dumps(
            {
                "systemInstruction": {"parts": [{"text": LARRY_SYSTEM}]},
                "contents": [
                    {
                        "role": "user",
                        "parts": [
                            {"text": "Compare these"},
                            {"inlineData": {"mimeType": "image/png", "data": "AA"}},
                            {"inlineData": {"mimeType": "image/png", "data": "BB"}},
                            {"fileData": {"fileUri": "gs://b/notes.pdf"}},
                        ],
                    },
                    {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
                ],
            }
        )
    )
    assert gemini_messages(body) == [
        {"role": "system", "content": LARRY_SYSTEM},
        {
            "role": "user",
            "content": "Compare these\n[2 images (image/png) omitted] [file omitted]",
        },
        {"role": "assistant", "content": "[function call (lookup) omitted]"},
    ]


def test_the_opening_is_the_same_for_both_protocols_and_unambiguous() -> None:
    body = larry_body()
    from_gemini = opening_text(gemini_messages(body))
    from_openai = opening_text(
        [
            {"role": "system", "content": [{"type": "text", "text": LARRY_SYSTEM}]},
            {"role": "user", "content": "I keep procrastinating."},
            {"role": "assistant", "content": "Something else"},
            {"role": "user", "content": "A later turn"},
        ]
    )
    assert from_gemini is not None
    assert from_gemini == from_openai
    later_turn = opening_text(
        [{"role": "system", "content": LARRY_SYSTEM}, {"role": "user", "content": "Other"}]
    )
    assert later_turn != from_gemini
    # Moving text across the system/user boundary changes the opening.
    assert opening_text(
        [{"role": "system", "content": "ab"}, {"role": "user", "content": "c"}]
    ) != opening_text([{"role": "system", "content": "a"}, {"role": "user", "content": "bc"}])
    assert opening_text([{"role": "system", "content": "only"}]) is None


_TURN = [{"role": "user", "parts": [{"text": "hi"}]}]


@pytest.mark.parametrize(
    "raw",
    [
        {"contents": [{"parts": [{"text": "hi"}], "role": "user"}]},
        {"contents": [{"parts": [{"text": "a"}, {"text": "b"}]}, {"role": "model", "parts": []}]},
        {"contents": [{"role": "user", "parts": [{"text": "a", "thought": True}]}]},
        {"contents": [{"role": "user", "parts": [{"text": "a"}], "extra": 1}]},
        {"contents": [{"role": "model", "parts": [{"text": "a"}]}], "generation_config": {}},
        {"systemInstruction": {"parts": [{"text": "s"}], "role": "system"}, "contents": _TURN},
        {"systemInstruction": {"parts": [{"text": "s"}], "extra": 1}, "contents": _TURN},
        {"systemInstruction": {"parts": [{"text": "s", "thought": True}]}, "contents": _TURN},
        {"systemInstruction": {"parts": []}, "contents": _TURN},
        {"system_instruction": {"parts": [{"text": "snake"}]}, "contents": _TURN},
    ],
)
def test_plain_text_turns_parse_as_the_general_path_normalizes_them(raw: dict[str, Any]) -> None:
    general = normalize(orjson.loads(orjson.dumps(raw)))
    try:
        parsed = parse_gemini_body(orjson.dumps(raw))
    except WireError as exc:  # the general path's checks refuse it too
        assert "parts is required" in str(exc)
        return
    assert parsed == general
    assert [list(turn) for turn in parsed["contents"]] == [list(t) for t in raw["contents"]]
    if "systemInstruction" in raw:
        assert list(parsed["systemInstruction"]) == list(raw["systemInstruction"])


@pytest.mark.parametrize(
    "raw",
    [
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        {"contents": [{"parts": [{"text": "no role"}, {"text": " two parts"}]}]},
        {
            "systemInstruction": {"parts": [{"text": "sys a"}, {"text": "sys b"}]},
            "contents": [
                {"role": "model", "parts": [{"text": "a model turn first"}]},
                {
                    "role": "user",
                    "parts": [
                        {"text": "look"},
                        {"inlineData": {"mimeType": "image/png", "data": "AA"}},
                    ],
                },
                {"role": "user", "parts": [{"text": "later"}]},
            ],
        },
        {
            "systemInstruction": {"parts": [{"text": "only"}]},
            "contents": [{"role": "model", "parts": [{"text": "no user turn"}]}],
        },
    ],
)
def test_the_gemini_opening_reads_only_what_the_whole_conversation_gives(
    raw: dict[str, Any],
) -> None:
    body = parse_gemini_body(orjson.dumps(raw))
    assert gemini_opening(body) == opening_text(gemini_messages(body))
    assert gemini_opening(larry_body()) == opening_text(gemini_messages(larry_body()))


# --- OpenAI request -> Gemini request -------------------------------------------------------


def test_an_openai_request_becomes_a_gemini_request() -> None:
    body = {
        "model": "larry",
        "messages": [
            {"role": "system", "content": LARRY_SYSTEM},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "I keep procrastinating."},
            {"role": "assistant", "content": "What do you put off most?"},
            {"role": "user", "content": [{"type": "text", "text": "Writing my thesis."}]},
        ],
        "temperature": 0.5,
        "top_p": 0.8,
        "max_completion_tokens": 200,
        "stop": "END",
        "seed": 11,
        "presence_penalty": 0.3,
        "frequency_penalty": 0.4,
        "response_format": {"type": "json_object"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "thread-1",
    }
    out, reasons = openai_to_gemini_request(body)

    assert reasons == []
    assert out == {
        "systemInstruction": {"parts": [{"text": LARRY_SYSTEM}, {"text": "Answer in English."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "I keep procrastinating."}]},
            {"role": "model", "parts": [{"text": "What do you put off most?"}]},
            {"role": "user", "parts": [{"text": "Writing my thesis."}]},
        ],
        "generationConfig": {
            "temperature": 0.5,
            "topP": 0.8,
            "maxOutputTokens": 200,
            "stopSequences": ["END"],
            "seed": 11,
            "presencePenalty": 0.3,
            "frequencyPenalty": 0.4,
            "responseMimeType": "application/json",
        },
    }
    assert parse_gemini_body(orjson.dumps(out)) == out  # a body Gemini's checks accept


def test_openai_features_that_do_not_translate_are_named() -> None:
    body = {
        "model": "larry",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "late"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "auto",
        "n": 2,
        "logprobs": True,
        "logit_bias": {"1": 2},
        "max_tokens": None,
    }
    out, reasons = openai_to_gemini_request(body)

    assert reasons == [
        "field:logit_bias",
        "late_system",
        "logprobs",
        "n",
        "non_text_parts",
        "tool_choice",
        "tools",
    ]
    assert out["systemInstruction"] == {"parts": [{"text": "late"}]}
    assert out["contents"][1]["parts"] == [
        {"text": "see"},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
    ]
    assert len(out["contents"]) == 2  # the tool call and the tool result are left out
    assert "generationConfig" not in out


def test_an_openai_json_schema_becomes_gemini_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"step": {"type": "string"}}}
    body = {
        "model": "larry",
        "messages": [{"role": "user", "content": "plan"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    }
    out, reasons = openai_to_gemini_request(body)
    assert reasons == []
    assert out["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


def test_openai_to_gemini_to_openai_keeps_the_text_features() -> None:
    schema = {"type": "object", "properties": {"step": {"type": "string"}}, "required": ["step"]}
    body = {
        "model": "larry-ft",
        "messages": [
            {"role": "system", "content": LARRY_SYSTEM},
            {"role": "user", "content": "I keep procrastinating."},
            {"role": "assistant", "content": "What do you put off most?"},
            {"role": "user", "content": "Writing my thesis."},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 128,
        "stop": ["\n\n"],
        "seed": 5,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.5,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema},
        },
    }
    gemini, reasons = openai_to_gemini_request(body)
    assert reasons == []
    parsed = parse_gemini_body(orjson.dumps(gemini))
    assert unsupported_features(parsed) == []
    assert gemini_to_openai_request(parsed, "larry-ft", stream=False) == body


# --- responses --------------------------------------------------------------------------------

OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "larry-ft",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "What is one page you could write?"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
}

GEMINI_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me think about procrastination.", "thought": True},
                    {"text": "What is one page "},
                    {"text": "you could write?"},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 42,
        "candidatesTokenCount": 9,
        "thoughtsTokenCount": 20,
        "totalTokenCount": 71,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-1",
}


def test_an_openai_completion_becomes_a_gemini_response_the_sdk_reads() -> None:
    out = openai_to_gemini_response(
        OPENAI_COMPLETION, response_id="resp-9", model_version="larry-ft"
    )
    assert out == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "What is one page you could write?"}],
                },
                "index": 0,
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 42, "candidatesTokenCount": 9, "totalTokenCount": 51},
        "modelVersion": "larry-ft",
        "responseId": "resp-9",
    }
    sdk = types.GenerateContentResponse.model_validate(out)
    assert sdk.text == "What is one page you could write?"
    assert sdk.usage_metadata is not None and sdk.usage_metadata.prompt_token_count == 42


@pytest.mark.parametrize(
    ("openai_reason", "gemini_reason"),
    [
        ("stop", "STOP"),
        ("length", "MAX_TOKENS"),
        ("content_filter", "SAFETY"),
        ("tool_calls", "STOP"),
        ("weird", "OTHER"),
    ],
)
def test_finish_reasons_to_gemini(openai_reason: str, gemini_reason: str) -> None:
    data = {**OPENAI_COMPLETION, "choices": [{**OPENAI_COMPLETION["choices"][0]}]}
    data["choices"][0]["finish_reason"] = openai_reason
    out = openai_to_gemini_response(data, response_id="r", model_version="m")
    assert out["candidates"][0]["finishReason"] == gemini_reason


def test_a_gemini_response_becomes_an_openai_completion_without_thoughts() -> None:
    out = gemini_to_openai_response(
        GEMINI_RESPONSE, completion_id="chatcmpl-9", model="larry", created=1_700_000_001
    )
    assert out == {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1_700_000_001,
        "model": "larry",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "What is one page you could write?"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 42,
            "completion_tokens": 29,
            "total_tokens": 71,
            "completion_tokens_details": {"reasoning_tokens": 20},
        },
    }


@pytest.mark.parametrize(
    ("gemini_reason", "openai_reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons_to_openai(gemini_reason: str, openai_reason: str) -> None:
    data = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini_reason}]}
    out = gemini_to_openai_response(data, completion_id="c", model="m", created=0)
    assert out["choices"][0]["finish_reason"] == openai_reason


def test_a_blocked_prompt_is_an_empty_content_filter_answer() -> None:
    data = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}}
    out = gemini_to_openai_response(data, completion_id="c", model="m", created=0)
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    assert gemini_usage(data) == {"prompt_tokens": 8}


def test_reply_text_and_usage_of_a_gemini_response() -> None:
    assert gemini_reply_text(GEMINI_RESPONSE) == "What is one page you could write?"
    assert gemini_reply_text({"promptFeedback": {"blockReason": "OTHER"}}) == ""
    assert gemini_usage(GEMINI_RESPONSE) == {"prompt_tokens": 42, "completion_tokens": 29}
    assert gemini_usage({"candidates": []}) == {}


def test_a_gemini_completion_round_trips_through_openai() -> None:
    gemini = openai_to_gemini_response(OPENAI_COMPLETION, response_id="r", model_version="m")
    back = gemini_to_openai_response(
        gemini, completion_id="chatcmpl-1", model="larry-ft", created=1_700_000_000
    )
    assert back["choices"][0]["message"] == OPENAI_COMPLETION["choices"][0]["message"]
    assert back["choices"][0]["finish_reason"] == "stop"
    assert back["usage"] == OPENAI_COMPLETION["usage"]


# --- streams ----------------------------------------------------------------------------------


def _openai_chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "larry-ft",
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def test_an_openai_stream_with_a_final_usage_chunk_becomes_gemini_chunks() -> None:
    stream = OpenAIToGeminiStream(response_id="resp-1", model_version="larry-ft")
    inputs = [
        _openai_chunk({"role": "assistant", "content": ""}),
        _openai_chunk({"content": "What is "}),
        _openai_chunk({"content": "one page?"}),
        _openai_chunk({}, finish="stop"),
        _openai_chunk(usage={"prompt_tokens": 42, "completion_tokens": 4, "total_tokens": 46}),
    ]
    per_input = [stream.feed(chunk) for chunk in inputs]
    rest = stream.finish()

    assert [len(out) for out in per_input] == [0, 1, 1, 0, 1]
    assert rest == []
    chunks = [c for out in per_input for c in out]
    assert all(c["responseId"] == "resp-1" and c["modelVersion"] == "larry-ft" for c in chunks)
    assert [gemini_reply_text(c) for c in chunks] == ["What is ", "one page?", ""]
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == {
        "promptTokenCount": 42,
        "candidatesTokenCount": 4,
        "totalTokenCount": 46,
    }
    merged = merge_gemini_chunks(chunks)
    assert gemini_reply_text(merged) == "What is one page?"
    assert gemini_usage(merged) == {"prompt_tokens": 42, "completion_tokens": 4}
    for chunk in chunks:  # each is a response the SDK reads
        types.GenerateContentResponse.model_validate(chunk)


def test_an_openai_stream_without_usage_releases_its_final_chunk_at_the_end() -> None:
    stream = OpenAIToGeminiStream(response_id="r", model_version="m")
    assert len(stream.feed(_openai_chunk({"content": "Hi"}))) == 1
    assert stream.feed(_openai_chunk({"content": "!"}, finish="length")) == []
    rest = stream.finish()
    assert len(rest) == 1
    assert rest[0]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert gemini_reply_text(rest[0]) == "!"
    assert "usageMetadata" not in rest[0]
    assert stream.finish() == []


def test_usage_with_nothing_held_back_is_a_chunk_of_its_own() -> None:
    stream = OpenAIToGeminiStream(response_id="r", model_version="m")
    stream.feed(_openai_chunk({"content": "Hi"}))
    out = stream.feed(_openai_chunk(usage={"prompt_tokens": 3, "completion_tokens": 1}))
    assert out == [
        {
            "modelVersion": "m",
            "responseId": "r",
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 1,
                "totalTokenCount": 4,
            },
        }
    ]


def test_a_gemini_stream_becomes_openai_chunks_with_usage_at_the_end() -> None:
    usage = {"promptTokenCount": 42, "candidatesTokenCount": 2, "totalTokenCount": 44}
    gemini_chunks = [
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}
            ],
            "usageMetadata": {"promptTokenCount": 42, "totalTokenCount": 42},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "What is "}]}}],
            "usageMetadata": {"promptTokenCount": 42, "candidatesTokenCount": 1},
        },
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "one page?"}]},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": usage,
        },
    ]
    stream = GeminiToOpenAIStream(completion_id="chatcmpl-7", model="larry", created=5)
    chunks = [c for g in gemini_chunks for c in stream.feed(g)] + stream.finish()

    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": "What is "},
        {"content": "one page?"},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "stop"]
    assert all(c["id"] == "chatcmpl-7" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 42, "completion_tokens": 2, "total_tokens": 44}
    assert stream.finish() == []


def test_a_blocked_gemini_stream_ends_with_content_filter() -> None:
    stream = GeminiToOpenAIStream(completion_id="c", model="m", created=0)
    out = stream.feed({"promptFeedback": {"blockReason": "SAFETY"}})
    assert len(out) == 1
    assert out[0]["choices"][0]["finish_reason"] == "content_filter"
    assert out[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stream.finish() == []


def test_streams_round_trip_the_text_and_usage() -> None:
    to_gemini = OpenAIToGeminiStream(response_id="r", model_version="m")
    to_openai = GeminiToOpenAIStream(completion_id="c", model="m", created=0)
    inputs = [
        _openai_chunk({"role": "assistant", "content": ""}),
        _openai_chunk({"content": "Start "}),
        _openai_chunk({"content": "small."}, finish="stop"),
        _openai_chunk(usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}),
    ]
    gemini = [g for c in inputs for g in to_gemini.feed(c)] + to_gemini.finish()
    back = [o for g in gemini for o in to_openai.feed(g)] + to_openai.finish()

    text = "".join(c["choices"][0]["delta"].get("content", "") for c in back if c["choices"])
    assert text == "Start small."
    assert [c["choices"][0]["finish_reason"] for c in back if c["choices"]][-1] == "stop"
    assert back[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def test_errors_in_gemini_shape_carry_googles_status_names() -> None:
    assert gemini_error(400, "contents[0].parts is required") == {
        "error": {
            "code": 400,
            "message": "contents[0].parts is required",
            "status": "INVALID_ARGUMENT",
        }
    }
    assert gemini_error(429, "slow down")["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert gemini_error(502, "upstream failed")["error"]["status"] == "INTERNAL"
