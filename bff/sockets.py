"""WebSockets through the BFF (DESIGN §7): ``GET /api/{route}/{path}`` with ``Upgrade: websocket`` on a route with
``websocket: true``, relayed to the upstream over aiohttp's WebSocket client.

The handshake is checked before anything is opened upstream, each refusal a plain HTTP answer (the ASGI
``websocket.http.response`` extension, JSON like every BFF error):

* ``Origin`` must be the BFF's own public origin: a browser cannot add ``X-CSRF`` to a WebSocket handshake, but it
  always sends ``Origin`` (RFC 6455 §4.1), so a foreign or missing one is 403 ``csrf`` (cross-site WebSocket
  hijacking);
* the route's token policy, as for any ``/api`` call: no session on a ``user`` route is 401 ``login_required``;
* at most ``BFF_MAX_WEBSOCKETS`` sockets per process, 503 beyond;
* at most ``BFF_MAX_SOCKETS_PER_SESSION`` sockets and streams of one session per process, 429 beyond
  (``bff.session_slots``): one user cannot take every socket of a process.

The upstream handshake carries the route's token as ``Authorization: Bearer`` and never the browser's cookie. Text
and binary messages flow both ways; a close code on one side is passed to the other. When the session ends — on any
replica, in any way — :class:`~bff.session_watch.SessionWatch` signals it and the socket is closed with 1008
(policy violation, RFC 6455 §7.4.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from bff.credentials import Credential, Credentials
from bff.dpop import credential_headers
from bff.endpoints import cookie
from bff.errors import (
    BFFError,
    CSRFError,
    NotFound,
    TemporarilyUnavailable,
    TooManySockets,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bff.proxy import Proxy, new_ids, upstream_failed
from bff.routes import Route, RouteTable
from bff.session_slots import SessionSlots
from bff.session_watch import SessionWatch
from servicekit.logs import outbound_headers

log = logging.getLogger(__name__)

Upstream = aiohttp.ClientWebSocketResponse

POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1: the session behind this socket ended
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
# RFC 6455 §7.4.1: codes that name a state, never sent in a close frame; the relay sends a normal closure instead.
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})


def _sendable(code: int | None) -> int:
    if code is None or code in _UNSENDABLE or not (1000 <= code <= 4999):
        return 1000
    return code


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class SocketProxy:
    """The ASGI app for WebSocket scopes under ``/api/``."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        origin: str,
        cookie_name: str,
        credentials: Credentials,
        proxy: Proxy,
        watch: SessionWatch,
        max_sockets: int,
        slots: SessionSlots | None = None,
        on_event: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.routes = routes
        self.origin = origin.lower()
        self.cookie_name = cookie_name
        self.credentials = credentials
        self.proxy = proxy
        self.watch = watch
        self.max_sockets = max_sockets
        self.slots = slots or SessionSlots(1 << 30)
        self.on_event = on_event  # "opened", the status of a refusal, "session_ended" (metrics)
        self.open = 0
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """A client of its own: an upstream WebSocket holds its connection for its whole life, so sharing the HTTP
        proxy's pool (512 connections) would cap sockets there and starve plain requests (the cap here is
        ``BFF_MAX_WEBSOCKETS``)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        self.open += 1  # counted from the start: sockets still handshaking count against the cap too
        try:
            try:
                upstream, ref_key = await self._open_upstream(websocket)
            except BFFError as exc:
                self.on_event(str(exc.status_code))
                await self._deny(websocket, exc)
                return
            self.on_event("opened")
            try:
                await self._relay(websocket, upstream, ref_key)
            finally:
                if ref_key is not None:
                    self.slots.give(ref_key)
                await upstream.close()
        finally:
            self.open -= 1

    async def _deny(self, websocket: WebSocket, exc: BFFError) -> None:
        response = JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=exc.status_code,
            headers={"Cache-Control": "no-store", **exc.headers},
        )
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:  # a server without the extension: the handshake fails with 403, whatever the reason
            await websocket.close(POLICY_VIOLATION)

    async def _open_upstream(self, websocket: WebSocket) -> tuple[Upstream, str | None]:
        scope = websocket.scope
        route = self.routes.lookup(scope["path"])
        if not route.websocket:
            raise NotFound(f"The route {route.name!r} takes no WebSockets.")
        origin = _header(scope, b"origin")
        if origin is None or origin.lower() != self.origin:
            raise CSRFError("A WebSocket handshake needs this site's Origin.")
        if self.open > self.max_sockets:
            raise TemporarilyUnavailable("Too many open WebSockets on this server; try again shortly.")
        credential = await self.credentials.for_route(route, cookie(websocket, self.cookie_name))
        ref_key = credential.ref.key if credential.ref is not None else None
        user = credential.session.sub if credential.session is not None else None
        if ref_key is not None and (refused := self.slots.take(ref_key, "websocket", user)) is not None:
            raise TooManySockets(TooManySockets.by_user if refused == "user" else None)
        try:
            return await self._connect(scope, route, credential), ref_key
        except BaseException:
            if ref_key is not None:
                self.slots.give(ref_key)
            raise

    async def _connect(self, scope: Scope, route: Route, credential: Credential) -> Upstream:
        url = self.proxy.target(scope, route)
        headers = outbound_headers() or new_ids()  # the request's id and trace context (DESIGN §12)
        if credential.token is not None:  # a DPoP proof names the handshake as the HTTP GET it is
            headers.update(credential_headers(self.proxy.dpop, credential.token, "GET", str(url)))
        url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        client = self.proxy.forwarded_for(scope)
        if client:
            headers["X-Forwarded-For"] = client
        protocols = [p.strip() for p in (_header(scope, b"sec-websocket-protocol") or "").split(",") if p.strip()]
        assert self.session is not None, "SocketProxy.start() runs in the lifespan"
        timeout = self.proxy.timeouts[route.name].sock_connect or 30.0
        try:
            async with asyncio.timeout(timeout):
                upstream = await self.session.ws_connect(
                    url, headers=headers, protocols=protocols, autoclose=False, autoping=True
                )
        except TimeoutError as exc:
            upstream_failed(route.name, url, exc, "WebSocket handshake")
            raise UpstreamTimeout() from exc
        except aiohttp.WSServerHandshakeError as exc:
            upstream_failed(route.name, url, exc, "WebSocket handshake")
            raise UpstreamUnavailable(f"The upstream refused the WebSocket ({exc.status}).") from exc
        except aiohttp.ClientError as exc:
            upstream_failed(route.name, url, exc, "WebSocket handshake")
            raise UpstreamUnavailable() from exc
        return upstream

    async def _relay(self, websocket: WebSocket, upstream: Upstream, ref_key: str | None) -> None:
        await websocket.accept(subprotocol=upstream.protocol)
        ended = self.watch.watch(ref_key) if ref_key is not None else None
        pumps = [
            asyncio.create_task(self._browser_to_upstream(websocket, upstream)),
            asyncio.create_task(self._upstream_to_browser(websocket, upstream)),
        ]
        waiting = asyncio.create_task(ended.wait()) if ended is not None else None
        try:
            await asyncio.wait([*pumps, *([waiting] if waiting else [])], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*pumps, *([waiting] if waiting else [])]:
                task.cancel()
            for task in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if ref_key is not None and ended is not None:
                self.watch.unwatch(ref_key, ended)
        if ended is not None and ended.is_set():
            # The session ended: neither side may go on speaking for it.
            self.on_event("session_ended")
            await upstream.close(code=POLICY_VIOLATION)
            await self._close_browser(websocket, POLICY_VIOLATION, "session ended")

    @staticmethod
    async def _close_browser(websocket: WebSocket, code: int, reason: str = "") -> None:
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):  # the browser may be gone already
                await websocket.close(code, reason)

    async def _browser_to_upstream(self, websocket: WebSocket, upstream: Upstream) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await upstream.send_str(message["text"])
                else:
                    await upstream.send_bytes(message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                await upstream.close(code=_sendable(message.get("code")))
                return

    async def _upstream_to_browser(self, websocket: WebSocket, upstream: Upstream) -> None:
        while True:
            message = await upstream.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                await websocket.send_text(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await websocket.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.CLOSE:
                await upstream.close()  # answer the upstream's close (autoclose is off to read its code)
                await self._close_browser(websocket, _sendable(message.data), message.extra or "")
                return
            else:  # CLOSED, ERROR: the upstream connection is gone without a close frame
                await self._close_browser(websocket, INTERNAL_ERROR, "upstream connection lost")
                return
