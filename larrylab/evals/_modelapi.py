"""The `larrylab` inspect model API: evaluate a registry model the way the router serves it.

`--model larrylab/<name>` resolves `<name>` in the model registry (through the routing table
the router reads) and calls it with `larrylab.router._upstream.complete`, the router's own
provider layer: the direct HTTP path for OpenAI-compatible upstreams, litellm otherwise.
So what is evaluated is what is served.

Model arguments (`-M` on the command line, `model_args` in Python):
    database_url: Where the registry lives (default `LARRYLAB_DATABASE_URL`).
    target: A resolved target spec (see `_resolve.target_spec`); the runner passes it so the
        log records exactly which endpoint was evaluated and no database URL is logged.
"""

from __future__ import annotations

import time
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    ChatMessageTool,
    GenerateConfig,
    ModelAPI,
    ModelCall,
    ModelOutput,
    ModelUsage,
    RetryDecision,
    modelapi,
)
from inspect_ai.model._model_output import as_stop_reason
from inspect_ai.tool import ToolChoice, ToolInfo

from larrylab.evals._resolve import model_target, routing_table, target_from_spec
from larrylab.router import Target, UpstreamError, complete_chat, new_client

# Connections one eval opens to one upstream; inspect's own max_connections caps concurrency.
_CLIENT_CONNECTIONS = 32


def request_body(input: list[ChatMessage], config: GenerateConfig) -> dict[str, Any]:
    """The OpenAI chat completion body for `input` under `config` (text content only)."""
    messages = []
    for message in input:
        if isinstance(message, ChatMessageTool):
            raise ValueError("the larrylab model API does not support tool messages")
        messages.append({"role": message.role, "content": message.text})
    body: dict[str, Any] = {"messages": messages}
    options = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "stop": config.stop_seqs,
        "seed": config.seed,
        "frequency_penalty": config.frequency_penalty,
        "presence_penalty": config.presence_penalty,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    schema = config.response_schema
    if schema is not None:
        spec: dict[str, Any] = {
            "name": schema.name,
            "schema": schema.json_schema.model_dump(exclude_none=True, by_alias=True),
        }
        if schema.description:
            spec["description"] = schema.description
        if schema.strict is not None:
            spec["strict"] = schema.strict
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    return body


def model_output(target: Target, data: dict[str, Any]) -> ModelOutput:
    """An inspect ModelOutput from an OpenAI-shaped completion."""
    choice = data["choices"][0] if data["choices"] else {}
    message = choice.get("message") or {}
    content = message.get("content") or ""
    output = ModelOutput.from_content(
        model=str(data.get("model") or target.upstream_model),
        content=content if isinstance(content, str) else str(content),
        stop_reason=as_stop_reason(choice.get("finish_reason")),
    )
    usage = data.get("usage")
    if isinstance(usage, dict):
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        output.usage = ModelUsage(
            input_tokens=prompt,
            output_tokens=completion,
            total_tokens=int(usage.get("total_tokens") or prompt + completion),
        )
    return output


@modelapi(name="larrylab")
class LarrylabModelAPI(ModelAPI):
    """Calls a larrylab registry model through the router's provider layer."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        database_url: str | None = None,
        target: dict[str, Any] | None = None,
    ) -> None:
        """Resolve `model_name` in the registry (or take the given `target` spec)."""
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        if target is not None:
            self.target = target_from_spec(model_name, target)
        else:
            self.target = model_target(routing_table(database_url), model_name)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> tuple[ModelOutput, ModelCall]:
        """One whole (non-streaming) reply from the target, with the call for the log."""
        if tools:
            raise ValueError("the larrylab model API does not support tools")
        body = request_body(input, config)
        started = time.perf_counter()
        # One client per call: inspect runs each eval on its own event loop and does not
        # close model APIs afterwards, so a shared HTTP client would outlive its loop.
        async with new_client(max_connections=_CLIENT_CONNECTIONS) as client:
            completion = await complete_chat(client, self.target, body)  # raises UpstreamError
        call = ModelCall.create(body, completion.data, time=_since(started))
        return model_output(self.target, completion.data), call

    def should_retry(self, ex: Exception) -> bool | RetryDecision:
        """Retry the failures the router would fall back on (connect, timeout, 5xx, 429)."""
        cause = ex if isinstance(ex, UpstreamError) else ex.__cause__
        return isinstance(cause, UpstreamError) and cause.fallback_ok

    def connection_key(self) -> str:
        """Concurrency is limited per registry model."""
        return self.target.name

    def service_model_name(self) -> str:
        """The model name the upstream is called with."""
        return self.target.upstream_model


def _since(started: float) -> float:
    return time.perf_counter() - started
