"""The floor of larrylab's serving stack, for `router_overhead.py`: uvicorn (httptools, uvloop)
and one aiohttp session, as `larrylab serve` runs them, forwarding each POST to the upstream as
it came (path, query, body, content type and key headers) and relaying the reply (a stream
chunk by chunk as it arrives). No larrylab code: no gate, parsing, routing, experiment, log or
metrics. What it adds over calling the upstream directly is what any Python proxy on these
parts adds; what `larrylab serve` adds beyond it is larrylab's own work.

    python bench/stack_floor.py --port 8600 --upstream http://127.0.0.1:8500
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn
from starlette.types import Receive, Scope, Send

FORWARDED = (b"content-type", b"authorization", b"x-goog-api-key")


class Forwarder:
    """An ASGI app forwarding every HTTP request to `upstream`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = scope["query_string"].decode("latin-1")
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in FORWARDED}  # fmt: skip
        assert self.session is not None
        async with self.session.post(url, data=body, headers=headers) as resp:
            kind = resp.headers.get("content-type", "application/json").encode("latin-1")
            start: dict[str, Any] = {"type": "http.response.start", "status": resp.status}
            if kind.startswith(b"text/event-stream"):
                await send({**start, "headers": [(b"content-type", kind)]})
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await resp.read()
        length = str(len(data)).encode()
        await send({**start, "headers": [(b"content-type", kind), (b"content-length", length)]})
        await send({"type": "http.response.body", "body": data})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Open the session at startup; close it at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
                self.session = aiohttp.ClientSession(connector=connector)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="the upstream's root URL")
    args = ap.parse_args()
    uvicorn.run(
        Forwarder(args.upstream),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
