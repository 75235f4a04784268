"""The simulated upstream as an ASGI app (`create_app`) and as a server (`serve`)."""

from __future__ import annotations

import logging
import socket

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from larrylab.sim.config import SimConfig
from larrylab.sim.engine import SIM_HEADER, Simulator
from larrylab.sim.gemini_api import gemini_error, gemini_model_list, gemini_routes, speaks_gemini
from larrylab.sim.ollama_api import ollama_error, ollama_routes
from larrylab.sim.openai_api import openai_error, openai_model_list, openai_routes

ENDPOINTS: tuple[str, ...] = (
    "POST /v1/chat/completions                      OpenAI, JSON or SSE streaming",
    "POST /api/chat                                 Ollama, JSON or NDJSON streaming",
    "POST /v1beta/models/{m}:generateContent        Gemini, JSON (also under /v1)",
    "POST /v1beta/models/{m}:streamGenerateContent  Gemini, SSE (alt=sse) or a JSON array",
    "POST /v1beta/models/{m}:countTokens            Gemini token count",
    "GET  /v1/models                                OpenAI list; Gemini list to a Gemini client",
    "GET  /v1beta/models                            Gemini model list; models/{m}: one model",
    "GET  /api/tags                                 Ollama model list",
    "GET  /healthz                                  health, says simulated: true",
)

# Uvicorn logs this for every stream the simulator drops on purpose.
_DROP_LOG_MESSAGE = "ASGI callable returned without completing response."
# Seconds `serve` waits for running requests at shutdown before cancelling them (hangs).
_GRACEFUL_SHUTDOWN_S = 1


def create_app(config: SimConfig) -> Starlette:
    """A Starlette app that simulates an LLM upstream as `config` says.

    The app's `state.simulator` holds its random generators; two apps with the same seed
    answer the same sequence of requests with the same replies.
    """
    sim = Simulator(config)
    headers = sim.headers
    health = orjson.dumps({"status": "ok", "simulated": True, "label": config.label})

    async def healthz(request: Request) -> Response:
        return Response(health, headers=headers, media_type="application/json")

    async def root(request: Request) -> Response:
        text = f"larrylab sim: SIMULATED LLM upstream '{config.label}', not a real model.\n"
        return PlainTextResponse(text, headers=headers)

    openai_models, gemini_models = openai_model_list(sim), gemini_model_list(sim)

    async def v1_models(request: Request) -> Response:
        """`GET /v1/models` is both OpenAI's and Gemini's: a Gemini client gets Gemini's list."""
        endpoint = gemini_models if speaks_gemini(request) else openai_models
        return await endpoint(request)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if request.url.path.startswith("/api/"):
            return ollama_error(status, detail, headers=headers)
        if speaks_gemini(request):
            return gemini_error(status, detail, headers=headers)
        kind = "invalid_request_error" if status < 500 else "server_error"
        return openai_error(status, detail, headers=headers, error_type=kind)

    app = Starlette(
        routes=[
            *openai_routes(sim),
            *ollama_routes(sim),
            *gemini_routes(sim),
            Route("/v1/models", v1_models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/", root, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, 500: http_error},
    )
    app.state.simulator = sim
    app.state.sim_config = config
    return app


def banner(config: SimConfig, *, host: str, port: int) -> str:
    """The text `serve` prints: it says plainly that this upstream is simulated."""
    rule = "=" * 72
    lines = [
        rule,
        f"  larrylab sim: SIMULATED LLM upstream '{config.label}' (no real model behind it)",
        f"  listening on http://{host}:{port}   fingerprint {config.fingerprint}",
        f"  every response carries the header '{SIM_HEADER}: {config.label}'",
        "",
        *(f"  {endpoint}" for endpoint in ENDPOINTS),
        "",
        f"  models: {', '.join(config.models)} (any model name is accepted)",
        f"  timing: latency {config.latency_ms:g} ms, ttft {config.ttft_ms:g} ms "
        f"(lognormal sigma {config.latency_sigma:g}), "
        + (f"{config.tokens_per_s:g} tokens/s" if config.tokens_per_s > 0 else "instant decode"),
        f"  faults: errors {config.error_rate:.1%} (status {config.error_status}), "
        f"hangs {config.hang_rate:.1%} ({config.hang_s:g} s), "
        f"stream drops {config.drop_rate:.1%}",
        f"  seed: {config.seed if config.seed is not None else 'none (fresh randomness)'}",
        rule,
    ]
    return "\n".join(lines)


class _DropLogFilter(logging.Filter):
    """Hides uvicorn's complaint about streams the simulator cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DROP_LOG_MESSAGE


class _SimServer(uvicorn.Server):
    """A uvicorn server that ends the simulator's hangs as soon as it starts shutting down."""

    def __init__(self, config: uvicorn.Config, simulator: Simulator) -> None:
        super().__init__(config)
        self.simulator = simulator

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.simulator.stop()
        await super().shutdown(sockets)


def build_server(config: SimConfig, *, host: str = "127.0.0.1", port: int = 8500) -> uvicorn.Server:
    """A uvicorn server for the simulated upstream (port 0 picks a free port); not started."""
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    server = _SimServer(uv_config, app.state.simulator)
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropLogFilter) for f in logger.filters):
        logger.addFilter(_DropLogFilter())
    return server


def serve(config: SimConfig, *, host: str = "127.0.0.1", port: int = 8500) -> None:
    """Print the banner and serve the simulated upstream on `host:port` until stopped."""
    print(banner(config, host=host, port=port), flush=True)
    build_server(config, host=host, port=port).run()
