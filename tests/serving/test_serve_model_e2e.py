"""End to end: a model folder served by `transformers serve`, behind a real `larrylab serve`
router, called with the official `openai` client; the request log has its numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from larrylab.db._engine import make_engine, upgrade
from larrylab.localproc import LocalProcess, free_port, start_router
from larrylab.serving import ModelServer

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Who has this problem?"}]
MAX_TOKENS = 6


@pytest.fixture
def router(database_url: str, tmp_path: Path, model_server: ModelServer) -> Iterator[LocalProcess]:
    config = tmp_path / "larrylab.yaml"
    config.write_text(
        "models:\n"
        f"  {model_server.config_yaml('tiny-local')}\n"
        "routes:\n"
        "  larry: {model: tiny-local}\n"
    )
    if database_url.startswith("postgresql"):
        upgrade(database_url)
    proc = start_router(log_dir=tmp_path, database_url=database_url, config=config)
    yield proc
    proc.stop()


def _direct_reply(server: ModelServer) -> str:
    """The server's own greedy reply, asked directly (no router)."""
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0}
    url = f"{server.url}/v1/chat/completions"
    data = httpx.post(url, json=body, timeout=60).json()
    return str(data["choices"][0]["message"]["content"])


def _request_rows(database_url: str) -> list[Any]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT model, upstream_model, stream, status, latency_ms, ttft_ms,"
                " prompt_tokens, completion_tokens FROM request ORDER BY created_at"
            )
        ).all()
    engine.dispose()
    return list(rows)


def test_real_tokens_through_the_router_are_logged_like_any_arm(
    router: LocalProcess, model_server: ModelServer, database_url: str
) -> None:
    expected = _direct_reply(model_server)
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)

    completion = client.chat.completions.create(
        model="larry", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, user="t-json"
    )  # type: ignore[arg-type]
    assert completion.choices[0].message.content == expected
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= MAX_TOKENS

    assert router.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # flushes the request log
    [row] = _request_rows(database_url)
    assert row.model == "tiny-local" and row.upstream_model == model_server.model
    assert row.status == "ok" and not row.stream and row.latency_ms > 0
    assert row.prompt_tokens == completion.usage.prompt_tokens
    assert row.completion_tokens == completion.usage.completion_tokens


def _stream_events(url: str, model: str | None = None) -> list[str]:
    body: dict[str, Any] = {
        "messages": MESSAGES,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model is not None:
        body["model"] = model
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as resp:
        return [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]


def _text(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_the_router_ends_the_stream_transformers_serve_leaves_without_done(
    router: LocalProcess, model_server: ModelServer
) -> None:
    direct = _stream_events(model_server.url)
    assert direct and direct[-1] != "[DONE]"  # what the router accepts after a finish chunk
    routed = _stream_events(router.url, model="larry")
    assert routed[-1] == "[DONE]" and routed.count("[DONE]") == 1
    assert _text(routed[:-1]) == _text(direct)  # greedy: the same reply, passed on as is
    usage = json.loads(routed[-2])["usage"]
    assert 0 < usage["completion_tokens"] <= MAX_TOKENS and usage["prompt_tokens"] > 0


def test_streaming_through_the_router_records_ttft_and_tokens(
    router: LocalProcess, model_server: ModelServer, database_url: str
) -> None:
    expected = _direct_reply(model_server)
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    parts, usage = [], None
    stream = client.chat.completions.create(
        model="larry",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=MAX_TOKENS,
        temperature=0,
        user="t-stream",
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == expected
    assert usage is not None and 0 < usage.completion_tokens <= MAX_TOKENS
    assert router.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    [row] = _request_rows(database_url)
    assert row.stream and row.status == "ok"
    assert row.ttft_ms is not None and 0 < row.ttft_ms <= row.latency_ms
    assert row.completion_tokens == usage.completion_tokens


def test_serve_model_prints_the_config_entry_and_stops_on_sigterm(
    tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "larrylab",
            "serve-model",
            str(tiny_model),
            "--port",
            str(port),
            "--name",
            "larry-tiny",
            "--log-file",
            str(tmp_path / "serve.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.strip().startswith("larry-tiny:"):
                break
        entry = (
            f"larry-tiny: {{api: openai, base_url: http://127.0.0.1:{port}/v1, "
            f"model: {tiny_model.resolve()}}}"
        )
        assert lines[-1].strip() == entry, lines
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert [m["id"] for m in models["data"]] == [str(tiny_model.resolve())]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
