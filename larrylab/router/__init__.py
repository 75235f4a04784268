"""The router: OpenAI-compatible chat ingress, upstream calls, routing and assignment, circuit
breakers, metrics, and the feedback and admin APIs."""

from larrylab.router._app import create_app
from larrylab.router._routing import RoutingTable, Target, load_routing_table
from larrylab.router._upstream import UpstreamClient, UpstreamError, complete, new_client

__all__ = [
    "RoutingTable",
    "Target",
    "UpstreamClient",
    "UpstreamError",
    "complete",
    "create_app",
    "load_routing_table",
    "new_client",
]
