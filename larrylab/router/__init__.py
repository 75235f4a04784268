"""The router: OpenAI's and Gemini's APIs in front of the models, upstream calls and
translation, routing and assignment, circuit breakers, metrics, and the feedback and admin
APIs."""

from larrylab.router._app import create_app
from larrylab.router._inbound import complete_chat
from larrylab.router._routing import RoutingTable, Target, load_routing_table
from larrylab.router._upstream import UpstreamClient, UpstreamError, new_client

__all__ = [
    "RoutingTable",
    "Target",
    "UpstreamClient",
    "UpstreamError",
    "complete_chat",
    "create_app",
    "load_routing_table",
    "new_client",
]
