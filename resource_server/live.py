"""A small live endpoint of the sample API, for the demo page's WebSocket panel (DESIGN §7).

``/ws/echo``: the handshake's token (bearer, or DPoP with its proof) is verified like any request's (the BFF sends
the route's token; a browser can never reach this directly with one). A refused token closes the handshake with
1008, which the client sees as 403. Once open, the socket greets with the token's ``sub`` and ``aud``, sends the time
every few seconds and echoes every text message.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from jwt_bff_verifier import TokenVerifier, VerifierError
from jwt_bff_verifier.errors import MissingToken
from jwt_bff_verifier.starlette import _header_token, verify_credentials

TICK = 5.0  # seconds between two time messages
MAX_ECHO = 2000  # characters echoed back at most
POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1


def live_routes(verifier: TokenVerifier) -> list[BaseRoute]:
    async def echo(websocket: WebSocket) -> None:
        try:
            found = _header_token(websocket.scope, verifier.dpop != "off")  # Bearer, or DPoP with its proof
            if found is None:
                raise MissingToken()
            claims = await verify_credentials(verifier, websocket.scope, found)
        except VerifierError:
            await websocket.close(POLICY_VIOLATION)  # before accept: the handshake is refused (403)
            return
        await websocket.accept()
        await websocket.send_json({"type": "hello", "sub": claims["sub"], "aud": claims.get("aud")})

        async def ticks() -> None:
            while True:
                await asyncio.sleep(TICK)
                await websocket.send_json({"type": "tick", "at": datetime.now(UTC).isoformat(timespec="seconds")})

        ticker = asyncio.create_task(ticks())
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:  # binary frames are ignored
                    await websocket.send_json({"type": "echo", "text": text[:MAX_ECHO]})
        except WebSocketDisconnect:
            pass
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ticker

    return [WebSocketRoute("/ws/echo", echo)]
