"""The routes and models a client may call, as each protocol lists them: OpenAI's
(`GET /v1/models`) and Gemini's (`GET /v1beta/models`)."""

from __future__ import annotations

from typing import Any

from larrylab.router._routing import RoutingTable

GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def openai_model(table: RoutingTable, name: str) -> dict[str, Any]:
    """One route or model in OpenAI's format."""
    owner = "larrylab-route" if table.is_route(name) else "larrylab"
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def openai_model_list(table: RoutingTable) -> dict[str, Any]:
    """Every route and model in OpenAI's list format."""
    return {"object": "list", "data": [openai_model(table, name) for name in table.names()]}


def gemini_model(table: RoutingTable, name: str) -> dict[str, Any]:
    """One route or model in Gemini's format."""
    route = table.is_route(name)
    what = "a larrylab route (its experiment picks the model)" if route else "a larrylab model"
    return {
        "name": f"models/{name}",
        "version": "larrylab",
        "displayName": name,
        "description": what,
        "supportedGenerationMethods": list(GEMINI_METHODS),
    }


def gemini_model_list(table: RoutingTable) -> dict[str, Any]:
    """Every route and model in Gemini's list format."""
    return {"models": [gemini_model(table, name) for name in table.names()]}
