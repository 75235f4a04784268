"""End to end with Larry's own client: real `larrylab sim` and `larrylab serve` processes driven
by the google-genai SDK, switched to the router by its base URL alone, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import errors, types
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from larrylab.db._engine import make_engine, upgrade
from larrylab.localproc import LocalProcess, start_router
from tests.conftest import served

pytestmark = pytest.mark.e2e

LARRY = "You are Larry, a PWS coach: clarify the problem before any solution."
FILE_SEARCH = types.Tool(
    file_search=types.FileSearch(file_search_store_names=["fileSearchStores/pws"])
)


def _config(path: Path, sim: str, broken: str, capture: str | None = None) -> Path:
    capture_model = (
        f"  captured: {{api: gemini, base_url: {capture}, model: gemini-2.5-flash}}\n"
        if capture
        else ""
    )
    path.write_text(
        "models:\n"
        f"  gemini-flash: {{api: gemini, base_url: {sim}, model: gemini-2.5-flash}}\n"
        f"  larry-v1: {{api: openai, base_url: {sim}/v1, model: larry-v1}}\n"
        f"  larry-broken: {{api: openai, base_url: {broken}/v1, model: larry-v1}}\n"
        + capture_model
        + "routes:\n"
        "  larry: {model: gemini-flash}\n"
        "experiments:\n"
        "  - {name: larry-ab, route: larry, arms: [{model: gemini-flash, weight: 50, control: "
        "true}, {model: larry-v1, weight: 50}]}\n"
        "  - {name: to-candidate, route: larry-candidate, arms: [{model: gemini-flash, weight: 0, "
        "control: true}, {model: larry-v1, weight: 1}]}\n"
        "  - {name: stripping, route: larry-strip, unsupported: strip, arms: [{model: "
        "gemini-flash, weight: 0, control: true}, {model: larry-v1, weight: 1}]}\n"
        "  - {name: broken-canary, route: canary, arms: [{model: gemini-flash, weight: 0, "
        "control: true}, {model: larry-broken, weight: 1}]}\n"
    )
    return path


def _start(database_url: str, tmp_path: Path, config: Path) -> LocalProcess:
    if database_url.startswith("postgresql"):  # `serve` migrates SQLite on its own
        upgrade(database_url)
    return start_router(log_dir=tmp_path, database_url=database_url, config=config)


@pytest.fixture
def router(
    database_url: str, tmp_path: Path, fast_sim: LocalProcess, broken_sim: LocalProcess
) -> Iterator[LocalProcess]:
    config = _config(tmp_path / "larrylab.yaml", fast_sim.url, broken_sim.url)
    proc = _start(database_url, tmp_path, config)
    yield proc
    proc.stop()


def _client(router: LocalProcess, version: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=router.url, api_version=version)
    return genai.Client(api_key="larry-key", http_options=options)


def _rows(database_url: str, sql: str) -> list[Any]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def _turn(text_: str, role: str = "user") -> types.Content:
    return types.Content(role=role, parts=[types.Part(text=text_)])


def _conversation(n: int) -> list[types.Content]:
    turns = [_turn(f"Learner {n}: our bakery is losing customers.")]
    for i in range(1, 2 * n, 2):
        turns += [_turn(f"Question {i}?", "model"), _turn(f"Answer {i}.")]
    return turns


@pytest.mark.parametrize("version", [None, "v1beta", "v1"])
def test_generate_content_and_stream_through_the_router(
    router: LocalProcess, version: str | None
) -> None:
    client = _client(router, version)
    config = types.GenerateContentConfig(system_instruction=LARRY, temperature=0.3)
    contents = _conversation(2)
    reply = client.models.generate_content(model="larry", contents=contents, config=config)
    assert reply.text
    headers = reply.sdk_http_response.headers if reply.sdk_http_response else {}
    assert headers["x-larrylab-experiment"] == "larry-ab"
    assert reply.response_id == headers["x-larrylab-request-id"]
    assert reply.usage_metadata is not None and reply.usage_metadata.total_token_count

    chunks = list(
        client.models.generate_content_stream(model="larry", contents=contents, config=config)
    )
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks)
    assert {c.response_id for c in chunks} == {chunks[0].response_id}
    # the same conversation stays on its arm: its opening is the same
    arms = {
        (r.sdk_http_response.headers if r.sdk_http_response else {})["x-larrylab-arm"]
        for r in (reply, chunks[0])
    }
    assert len(arms) == 1


def test_conversations_without_ids_stay_on_one_arm_and_split_by_weight(
    router: LocalProcess, database_url: str
) -> None:
    client = _client(router)
    config = types.GenerateContentConfig(system_instruction=LARRY)
    arms_of: dict[int, set[str]] = {}
    for n in range(40):
        for turn in range(4):
            contents = _conversation(turn + 1)
            contents[0] = _turn(f"Learner {n}: our bakery is losing customers.")
            reply = client.models.generate_content(
                model="larry", contents=contents[: 2 * turn + 1], config=config
            )
            headers = reply.sdk_http_response.headers if reply.sdk_http_response else {}
            arms_of.setdefault(n, set()).add(headers["x-larrylab-arm"])
    assert all(len(arms) == 1 for arms in arms_of.values())
    split = Counter(next(iter(a)) for a in arms_of.values())
    assert set(split) == {"gemini-flash", "larry-v1"}
    assert 8 <= split["larry-v1"] <= 32  # 50/50: outside this once in ~10^4 runs
    router.stop()  # a clean stop stores every request
    sources = {r[0] for r in _rows(database_url, "SELECT DISTINCT unit_source FROM request")}
    assert sources == {"opening"}


def test_a_tools_request_goes_to_the_control_with_its_reason(
    router: LocalProcess, database_url: str
) -> None:
    client = _client(router)
    config = types.GenerateContentConfig(system_instruction=LARRY, tools=[FILE_SEARCH])
    reply = client.models.generate_content(
        model="larry-candidate", contents="What is a problem worth solving?", config=config
    )
    headers = reply.sdk_http_response.headers if reply.sdk_http_response else {}
    assert headers["x-larrylab-arm"] == "gemini-flash"
    plain = client.models.generate_content(
        model="larry-candidate", contents="What is a problem worth solving?"
    )
    assert (plain.sdk_http_response.headers if plain.sdk_http_response else {})[
        "x-larrylab-arm"
    ] == "larry-v1"
    router.stop()  # a clean stop stores every request
    rows = _rows(
        database_url,
        "SELECT arm, model, ineligible, stripped, protocol FROM request "
        "WHERE experiment = 'to-candidate' ORDER BY created_at",
    )
    assert [tuple(r) for r in rows] == [
        ("larry-v1", "gemini-flash", "tools", False, "gemini"),
        ("larry-v1", "larry-v1", None, False, "gemini"),
    ]


def test_strip_lets_the_candidate_answer_without_the_tool(
    router: LocalProcess, database_url: str
) -> None:
    client = _client(router)
    config = types.GenerateContentConfig(system_instruction=LARRY, tools=[FILE_SEARCH])
    reply = client.models.generate_content(
        model="larry-strip", contents="What is a problem worth solving?", config=config
    )
    assert reply.text
    headers = reply.sdk_http_response.headers if reply.sdk_http_response else {}
    assert headers["x-larrylab-arm"] == "larry-v1"
    router.stop()
    rows = _rows(database_url, "SELECT ineligible, stripped FROM request")
    assert [tuple(r) for r in rows] == [("tools", True)]


def test_a_failing_candidate_is_invisible_to_the_sdk(
    router: LocalProcess, database_url: str
) -> None:
    client = _client(router)
    reply = client.models.generate_content(model="canary", contents="Help me frame my problem.")
    assert reply.text
    headers = reply.sdk_http_response.headers if reply.sdk_http_response else {}
    assert headers["x-larrylab-arm"] == "gemini-flash"
    stream = list(client.models.generate_content_stream(model="canary", contents="And now?"))
    assert "".join(c.text or "" for c in stream)
    router.stop()
    rows = _rows(database_url, "SELECT fallback_from, status FROM request")
    assert [tuple(r) for r in rows] == [("larry-broken", "ok")] * 2


def test_a_rating_by_response_id_lands(router: LocalProcess, database_url: str) -> None:
    client = _client(router)
    reply = client.models.generate_content(model="larry", contents="Where do I start?")
    r = httpx.post(
        f"{router.url}/v1/feedback",
        json={
            "response_id": reply.response_id,
            "score": 5,
            "thumb": "up",
            "categories": {"accuracy": True, "depth": False},
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    rows = _rows(database_url, "SELECT request_id, score, thumb FROM feedback")
    assert [tuple(r) for r in rows] == [(reply.response_id, 5, 1)]


def test_malformed_native_bodies_are_client_errors_with_the_routers_message(
    router: LocalProcess,
) -> None:
    client = _client(router)
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="no-such-route", contents="hi")
    assert info.value.code == 404 and "unknown model or route 'no-such-route'" in str(
        info.value.message
    )
    r = httpx.post(
        f"{router.url}/v1beta/models/larry:generateContent",
        headers={"x-goog-api-key": "k"},
        json={"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]},
        timeout=30,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "role" in error["message"]
    r = httpx.post(
        f"{router.url}/v1beta/models/larry:generateContent?key=k", content=b"{", timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    r = httpx.post(f"{router.url}/v1beta/models/larry:explode", json={}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


def test_models_and_count_tokens(router: LocalProcess) -> None:
    client = _client(router)
    names = {m.name for m in client.models.list()}
    assert {"models/larry", "models/gemini-flash"} <= names
    text_ = "Our bakery is losing customers."
    counted = client.models.count_tokens(model="larry", contents=text_)  # Gemini counts
    assert counted.total_tokens and counted.total_tokens > 0
    estimated = client.models.count_tokens(model="larry-v1", contents=text_)  # estimated
    assert estimated.total_tokens and 3 < estimated.total_tokens < 30


def test_an_openai_client_is_served_by_a_gemini_model(router: LocalProcess) -> None:
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="k", max_retries=0)
    messages: list[Any] = [
        {"role": "system", "content": LARRY},
        {"role": "user", "content": "Our bakery is losing customers."},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-flash", messages=messages, temperature=0.2, max_tokens=60
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.id == raw.headers["x-larrylab-request-id"]
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="gemini-flash",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


class _Capture:
    """An upstream speaking Gemini's API that keeps what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []

    async def handle(self, request: Request) -> JSONResponse:
        self.bodies.append(await request.body())
        self.paths.append(request.url.path)
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "captured"}]},
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
            }
        )


@pytest.fixture
def capture() -> Iterator[tuple[str, _Capture]]:
    cap = _Capture()
    app = Starlette(routes=[Route("/{path:path}", cap.handle, methods=["POST"])])
    with served(app) as url:
        yield url, cap


def test_a_gemini_arm_receives_larrys_native_fields_byte_for_byte(
    database_url: str,
    tmp_path: Path,
    fast_sim: LocalProcess,
    broken_sim: LocalProcess,
    capture: tuple[str, _Capture],
) -> None:
    url, cap = capture
    config = _config(tmp_path / "larrylab.yaml", fast_sim.url, broken_sim.url, capture=url)
    router = _start(database_url, tmp_path, config)
    try:
        config_ = types.GenerateContentConfig(
            system_instruction=LARRY,
            tools=[FILE_SEARCH],
            cached_content="cachedContents/larry-rag",
            temperature=0.4,
            thinking_config=types.ThinkingConfig(thinking_budget=128),
            safety_settings=[
                types.SafetySetting(
                    category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                    threshold=types.HarmBlockThreshold.BLOCK_ONLY_HIGH,
                )
            ],
        )
        contents = [
            types.Content(
                role="user",
                parts=[
                    types.Part(text="What is in this sketch?"),
                    types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n0000", mime_type="image/png"),
                ],
            )
        ]
        direct = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url))
        direct.models.generate_content(model="gemini-2.5-flash", contents=contents, config=config_)
        routed = _client(router)
        reply = routed.models.generate_content(model="captured", contents=contents, config=config_)
        assert reply.text == "captured"
        assert cap.bodies[1] == cap.bodies[0]
        # the API version the client used, the model's upstream name
        assert cap.paths[1] == cap.paths[0]
        assert cap.paths[0].endswith("/models/gemini-2.5-flash:generateContent")
    finally:
        router.stop()


def test_the_client_key_comes_in_gemini_s_header_or_query(
    database_url: str, tmp_path: Path, fast_sim: LocalProcess, broken_sim: LocalProcess
) -> None:
    if database_url.startswith("postgresql"):
        upgrade(database_url)
    config = _config(tmp_path / "larrylab.yaml", fast_sim.url, broken_sim.url)
    router = start_router(
        log_dir=tmp_path,
        database_url=database_url,
        config=config,
        env={"LARRYLAB_API_KEYS": "larry-key"},
    )
    try:
        assert _client(router).models.generate_content(model="larry", contents="Hi").text
        wrong = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=router.url))
        with pytest.raises(errors.ClientError) as info:
            wrong.models.generate_content(model="larry", contents="Hi")
        assert info.value.code == 401 and "invalid API key" in str(info.value.message)
        url = f"{router.url}/v1beta/models/larry:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
        assert httpx.post(f"{url}?key=larry-key", json=body, timeout=30).status_code == 200
        missing = httpx.post(url, json=body, timeout=30)
        assert missing.status_code == 401
        assert "x-goog-api-key" in missing.json()["error"]["message"]
    finally:
        router.stop()
