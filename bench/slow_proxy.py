"""A reverse proxy that slows the auth server's refresh grant, for the refresh-storm benchmark.

python bench/slow_proxy.py --port 9100 --upstream http://127.0.0.1:9000 --delay 8
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

SKIP = {"host", "content-length", "transfer-encoding", "connection"}


def create_app(upstream: str, delay: float) -> web.Application:
    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/oauth/token" and b"grant_type=refresh_token" in body:
            await asyncio.sleep(delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SKIP}
        async with request.app["session"].request(
            request.method, upstream + request.path_qs, headers=headers, data=body or None, allow_redirects=False
        ) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in SKIP | {"content-encoding"}}
            return web.Response(status=resp.status, body=data, headers=out)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay", type=float, default=8.0)
    args = parser.parse_args()
    web.run_app(create_app(args.upstream.rstrip("/"), args.delay), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
