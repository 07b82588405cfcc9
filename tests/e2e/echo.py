"""An upstream that shows what it received: HTTP echo, a WebSocket echo and a server-sent event stream it holds open
until told to finish. It records every request's headers, so tests can check what the BFF sent (and did not)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@dataclass
class Echo:
    requests: list[dict[str, Any]] = field(default_factory=list)  # method, path, headers of every request
    release: threading.Event = field(default_factory=threading.Event)  # ends the open event stream

    def seen(self, path_prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith(path_prefix)]

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append({"method": request.method, "path": request.url.path, "headers": headers})
            return JSONResponse({"method": request.method, "path": request.url.path, "headers": headers})

        async def events(request: Request) -> Response:
            self.requests.append({"method": "GET", "path": request.url.path, "headers": dict(request.headers)})

            async def stream() -> AsyncIterator[bytes]:
                yield b"event: hello\ndata: first\n\n"
                for _ in range(200):  # held open until the test releases it (10 s at most)
                    if self.release.is_set():
                        break
                    await asyncio.sleep(0.05)
                yield b"data: last\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        async def ws_echo(websocket: WebSocket) -> None:
            headers = {k.lower(): v for k, v in websocket.headers.items()}
            self.requests.append({"method": "WS", "path": websocket.url.path, "headers": headers})
            offered = websocket.headers.get("sec-websocket-protocol")
            await websocket.accept(subprotocol=offered.split(",")[0].strip() if offered else None)
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    text = message.get("text")
                    if text is not None and text.startswith("close:"):
                        await websocket.close(int(text[6:]), "asked to")
                        return
                    if text is not None:
                        await websocket.send_text("echo:" + text)
                    else:
                        await websocket.send_bytes(b"echo:" + (message.get("bytes") or b""))
            except WebSocketDisconnect:
                return

        return Starlette(
            routes=[
                Route("/events", events),
                WebSocketRoute("/ws/{path:path}", ws_echo),
                Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ]
        )
