"""The WebSocket protocol every service serves with: uvicorn's sans-I/O ``websockets`` one, minus a false alarm.

A handshake refused with an HTTP answer (the ASGI ``websocket.http.response`` extension: the BFF's 403 for a
foreign Origin, 401, 404, 503) is a complete exchange, but uvicorn 0.54's sans-I/O protocol never marks it so, and
logs ``ERROR: ASGI callable returned without completing handshake.`` for each one — an ERROR line anyone can cause
by opening a WebSocket with the wrong Origin (found attacking the stack). wsproto's protocol marks it; so does this
one, as uvicorn's open pull request #3138 does.
"""

from __future__ import annotations

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True  # the refusal is on the wire: the handshake is over
