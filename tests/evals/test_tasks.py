"""The inspect tasks: the record-to-sample mapper, the suite's shape, the model API's mapping."""

from __future__ import annotations

import pytest
from inspect_ai.model import (
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    GenerateConfig,
    ResponseSchema,
)
from inspect_ai.util import JSONSchema

from larrylab.evals._modelapi import model_output, request_body
from larrylab.evals._resolve import target_from_spec, target_spec
from larrylab.evals._scorer import combined_score, judge_names
from larrylab.evals.evalset import CATEGORIES, EvalItem, load_eval_items
from larrylab.evals.tasks import TASKS, pws_task, record_to_sample
from larrylab.router._routing import Target
from larrylab.router._upstream import UpstreamError


def test_record_to_sample_keeps_the_conversation_and_rubric() -> None:
    item = EvalItem(
        id="pc-99",
        category="problem_clarification",
        messages=[
            {"role": "system", "content": "You are Larry."},
            {"role": "user", "content": "We want an app."},
            {"role": "assistant", "content": "Who has the problem?"},
            {"role": "user", "content": "Nurses."},
        ],
        rubric=["Asks which nurses", "No features"],
        checks=["asks_question"],
    )
    sample = record_to_sample(item)
    assert sample.id == "pc-99"
    assert isinstance(sample.input, list)
    assert [type(m) for m in sample.input] == [
        ChatMessageSystem,
        ChatMessageUser,
        ChatMessageAssistant,
        ChatMessageUser,
    ]
    assert [m.text for m in sample.input][-1] == "Nurses."
    assert sample.target == ["Asks which nurses", "No features"]
    assert sample.metadata == {
        "category": "problem_clarification",
        "rubric": ["Asks which nurses", "No features"],
        "checks": ["asks_question"],
    }


def test_one_task_per_category_with_its_items() -> None:
    assert list(TASKS) == list(CATEGORIES)
    task = TASKS["red_team"](judge="gemini-flash")
    items = [i for i in load_eval_items() if i.category == "red_team"]
    assert task.name == "red_team"
    assert task.version == "pws_eval_v1"
    assert [s.id for s in task.dataset] == [i.id for i in items]
    with pytest.raises(ValueError, match="unknown category 'poetry'"):
        pws_task("poetry")


def test_scores_combine_judge_and_checks() -> None:
    assert combined_score(0.75, 1.0, 0.5) == 0.75
    assert combined_score(0.75, 0.5, 0.5) == pytest.approx(0.5625)
    assert combined_score(0.8, 0.0, 0.5) == pytest.approx(0.4)
    assert combined_score(0.8, 0.0, 0.0) == 0.8
    assert judge_names(" a, b ,,") == ["a", "b"]
    assert judge_names(None) == []


TARGET = Target(
    name="larry-v1",
    api="openai",
    base_url="http://127.0.0.1:9/v1",
    upstream_model="larry-v1-q4",
    api_key_env="LARRY_KEY",
    litellm_model=None,
    connect_timeout_s=1.0,
    first_token_timeout_s=2.0,
    total_timeout_s=3.0,
)


def test_target_specs_round_trip_without_secrets() -> None:
    spec = target_spec(TARGET)
    assert "name" not in spec and spec["api_key_env"] == "LARRY_KEY"
    assert target_from_spec("larry-v1", spec) == TARGET
    with pytest.raises(ValueError, match="unknown fields \\['password'\\]"):
        target_from_spec("x", {**spec, "password": "p"})


def test_request_body_maps_messages_config_and_schema() -> None:
    schema = ResponseSchema(
        name="verdict", json_schema=JSONSchema(type="object", required=["c1"]), strict=True
    )
    body = request_body(
        [ChatMessageSystem(content="sys"), ChatMessageUser(content="hi")],
        GenerateConfig(temperature=0.0, max_tokens=50, response_schema=schema),
    )
    assert body == {
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_tokens": 50,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "verdict",
                "schema": {"type": "object", "required": ["c1"]},
                "strict": True,
            },
        },
    }


def test_model_output_reads_text_stop_reason_and_usage() -> None:
    data = {
        "model": "larry-v1-q4",
        "choices": [{"message": {"content": "Who?"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    out = model_output(TARGET, data)
    assert (out.completion, out.stop_reason, out.model) == ("Who?", "max_tokens", "larry-v1-q4")
    assert out.usage is not None and (out.usage.input_tokens, out.usage.output_tokens) == (7, 2)


def test_only_failures_the_router_would_fall_back_on_are_retried() -> None:
    from larrylab.evals._modelapi import LarrylabModelAPI

    api = LarrylabModelAPI("larry-v1", target=target_spec(TARGET))
    assert api.should_retry(UpstreamError("timeout", "slow", 504))
    assert api.should_retry(UpstreamError("rate_limited", "429", 429))
    assert not api.should_retry(UpstreamError("client_error", "bad request", 400))
    assert not api.should_retry(ValueError("x"))
