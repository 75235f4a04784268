"""The dashboard's Host and Origin check, an ASGI middleware in front of Streamlit (`asgi.py`).

Streamlit's own checks (`server.allowedHosts`, `server.enableCORS`) guard only its websocket,
ignore ports and admit the machine's other addresses as origins. This check guards every request:

- the Host header must name one of `server.allowedHosts` (exact names, ports ignored; the
  loopback names when the list is empty): a DNS-rebound name is refused;
- an `Origin` header, when present (browsers send it on websocket handshakes), must be the
  dashboard's own origin (same scheme and host:port as the request) or one listed in
  `server.corsAllowedOrigins`: a page on any other origin is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from streamlit import config

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HTTP_SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}


def hostname(host: str) -> str | None:
    """The name in a Host header ("[::1]:8501" -> "::1"), lower-case; None if malformed."""
    try:
        parts = urlsplit(f"//{host}")
        _ = parts.port  # raises on a bad port
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None or parts.path or parts.query:
        return None
    return (parts.hostname or "").rstrip(".") or None


def host_allowed(host: str | None, allowed: Collection[str]) -> bool:
    """True if the Host header names one of `allowed` (the loopback names if empty)."""
    name = hostname(host) if host else None
    names = {a.strip().lower().rstrip(".").strip("[]") for a in allowed} or set(LOOPBACK_NAMES)
    return name is not None and name in names


def origin_allowed(origin: str | None, *, host: str, scheme: str, extra: Collection[str]) -> bool:
    """True if there is no Origin, or it is this request's own origin, or one of `extra`."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in {e.strip().rstrip("/").lower() for e in extra}:
        return True
    own = f"{HTTP_SCHEMES.get(scheme, scheme)}://{host.lower()}"
    return origin == own


def refusal(scope: Scope) -> str | None:
    """Why this request is refused (a sentence), or None if it may go on."""
    headers: dict[str, list[str]] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    hosts, origins = headers.get("host", []), headers.get("origin", [])
    if len(hosts) != 1 or len(origins) > 1:
        return "one Host header and at most one Origin header, please"
    host = hosts[0]
    if not host_allowed(host, config.get_option("server.allowedHosts") or ()):
        return (
            f"this dashboard does not answer to the host {host!r}: open it by its own address, "
            "or start it with --public-url"
        )
    origin = origins[0] if origins else None
    extra = config.get_option("server.corsAllowedOrigins") or ()
    if not origin_allowed(origin, host=host, scheme=str(scope.get("scheme", "http")), extra=extra):
        return f"requests from the origin {origin!r} are not allowed"
    return None


class HostOriginGuard:
    """ASGI middleware: refuses (403) HTTP requests and websocket handshakes that `refusal`
    names a reason for; everything else goes on to Streamlit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on or refuse it."""
        why = refusal(scope) if scope["type"] in ("http", "websocket") else None
        if why is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why})  # HTTP 403
        else:
            body = f"Forbidden: {why}.\n".encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
