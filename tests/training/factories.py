"""Small PWS-style datasets in the data pipeline's format, and a CLI app for the train tests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import typer

SYSTEM = "You are Larry, a coach for the PWS (Problems Worth Solving) methodology."
TOPICS = ("clinic waiting rooms", "school lunches", "bike commuting", "small-shop pricing")
REPLIES = (
    "Before any solution: who has the {t} problem, how often, and what does it cost them?",
    "Let's trend {t} to the absurd. What breaks first when it grows ten times?",
    "What job is someone hiring a fix for {t} to do? Name the progress they want.",
)


# mistralai/Mistral-7B-Instruct-v0.1 and v0.2 (tokenizer_config.json)
MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)

# mistralai/Mistral-7B-Instruct-v0.3 (tokenizer_config.json), the parts that matter here
MISTRAL_V03 = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if (message == user_messages[-1]) and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {{- tool_call.function|tojson }}
        {%- endfor %}
        {{- "]" + eos_token }}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported!") }}
    {%- endif %}
{%- endfor %}"""


def conversations(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` short coaching conversations with metadata columns like the dataset stage's."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        reply = rng.choice(REPLIES).format(t=topic)
        rows.append(
            {
                "id": f"conv-{i}",
                "category": "problem_clarification",
                "origin": "generated",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"We want to build an app for {topic}."},
                    {"role": "assistant", "content": reply},
                ],
            }
        )
    return rows


def write_dataset(path: Path, *, n: int = 40, fmt: str = "disk", manifest: bool = True) -> Path:
    """Write a dataset folder (save_to_disk DatasetDict or JSONL) with a manifest.json."""
    from datasets import Dataset, DatasetDict

    rows = conversations(n)
    cut = n - max(2, n // 8)
    path.mkdir(parents=True, exist_ok=True)
    if fmt == "disk":
        DatasetDict(
            train=Dataset.from_list(rows[:cut]), validation=Dataset.from_list(rows[cut:])
        ).save_to_disk(str(path))
    else:
        for name, part in (("train", rows[:cut]), ("validation", rows[cut:])):
            (path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    if manifest:
        (path / "manifest.json").write_text(
            json.dumps({"stage": "dataset", "status": "done", "fingerprint": "abc123"})
        )
    return path


def pipeline_app() -> typer.Typer:
    """A Typer app with the train and package commands, as the pipeline sub-app has them."""
    from larrylab.cli._training import add_commands

    app = typer.Typer(pretty_exceptions_enable=False)
    add_commands(app)
    return app
