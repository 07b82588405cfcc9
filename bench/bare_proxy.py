"""The baseline: the thinnest pass-through proxy Python does here — raw ASGI on uvicorn, aiohttp's client.

It forwards every request to one upstream with a fixed `Authorization` header and streams the answer back. No
session, no routing table, no metrics: what the BFF does beyond this is what the BFF costs.

    python bench/bare_proxy.py --port 8100 --upstream http://127.0.0.1:9001 --token eyJ...
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"cookie",
    b"authorization",
    b"content-length",
}


def create_app(upstream: str, token: str) -> Any:
    session: aiohttp.ClientSession | None = None
    bearer = f"Bearer {token}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert session is not None
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k not in HOP_BY_HOP}
        headers["Authorization"] = bearer
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["raw_path"].decode()
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode()
        async with session.request(scope["method"], upstream + path, headers=headers, data=body or None) as resp:
            out = [
                (k.lower().encode(), v.encode())
                for k, v in resp.headers.items()
                if k.lower().encode() not in HOP_BY_HOP and k.lower() != "set-cookie"
            ]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream.rstrip("/"), args.token),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        ws="none",
    )


if __name__ == "__main__":
    main()
