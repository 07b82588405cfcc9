"""Forwarding ``/api/{route}/{path}`` to the configured upstreams over one pooled aiohttp ClientSession.

Only upstreams named in BFF_ROUTES are reachable (no open proxy). The browser's Cookie, Authorization and hop-by-hop
headers never leave; the BFF sets ``Authorization: Bearer`` (or ``DPoP`` and a proof, ``dpop.py``). Upstream
Set-Cookie never reaches the browser. Bodies stream both ways; small request bodies are buffered so that a request
refused for an expired token can be replayed once after a refresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from yarl import URL

from bff.dpop import DPoPSigner, credential_headers, nonce_challenge
from bff.errors import BadRequest, TooManySockets, UpstreamTimeout, UpstreamUnavailable
from bff.paths import climbs
from bff.routes import Route
from bff.session_slots import SessionSlots
from bff.session_watch import SessionWatch
from bff.upstream import LeanUpstream
from servicekit.logs import outbound_headers
from servicekit.proxies import TrustedProxies, peer

# RFC 9110 §7.6.1 hop-by-hop headers, plus what the BFF owns: credentials and the upstream's Host.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)
# What the browser must not tell an upstream: where the request "really" went (X-Original-URL and friends make some
# frameworks route by header, past the path the BFF checked), who forwarded it (the BFF sets X-Forwarded-For itself),
# and which method it "really" is (X-HTTP-Method-Override turns an allowed POST into a DELETE behind the BFF).
SPOOFABLE = frozenset(
    {
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
        b"x-forwarded-uri",
        b"x-forwarded-host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-method",
        b"x-original-method",
        b"forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        # who the user is, as forward auth tells an upstream behind nginx (DESIGN §11): never the browser's word
        b"x-auth-request-sub",
        b"x-auth-request-user",
        b"x-auth-request-email",
        b"x-auth-request-groups",
        # the browser's trace vendor state and baggage (W3C Trace Context §3.4, Baggage §5): what internal services
        # would take for their own; the BFF sends its own traceparent (DESIGN §12), with nothing of the caller's
        b"tracestate",
        b"baggage",
    }
)
# The credential headers are the BFF's (RFC 9449 §7.1: Authorization and DPoP go together): a browser's own DPoP
# header would reach the upstream beside the BFF's proof (two proofs are refused) or beside a bearer token.
DROP_REQUEST = HOP_BY_HOP | SPOOFABLE | {b"cookie", b"authorization", b"dpop", b"host", b"x-csrf", b"expect"}
# An upstream never sets cookies on the BFF's site, nor clears them (Clear-Site-Data "cookies" would drop the session
# cookie and orphan the session: the user looks logged out, the session lives on until it expires).
# Date and Server are the BFF's own server's (uvicorn writes both on every answer, RFC 9110 §6.6.1, §10.2.4): the
# upstream's beside them made two of each.
DROP_RESPONSE = HOP_BY_HOP | {b"set-cookie", b"set-cookie2", b"clear-site-data", b"date", b"server"}
REPLAY_LIMIT = 64 * 1024  # request bodies up to this size are buffered, hence replayable after a refresh
CHUNK = 64 * 1024
UPSTREAM_POOL = 512  # pooled connections to all upstreams together
BUFFER_LIMIT = 64 * 1024  # upstream bodies up to this size (with a Content-Length) are sent in one piece

log = logging.getLogger(__name__)


def new_ids() -> dict[str, str]:
    """Ids for a call made outside any request context (a test calling the proxy directly)."""
    return {"X-Request-ID": os.urandom(8).hex(), "traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"}


def _filter(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes], *, underscored: bool = True
) -> list[tuple[bytes, bytes]]:
    """The headers minus ``drop`` and, RFC 9110 §7.6.1, minus any that Connection names; names lower-cased.
    ``underscored=False`` (a browser's request): minus any whose name holds an underscore, as nginx drops them
    (underscores_in_headers off): a CGI-style upstream (PHP, WSGI) reads X_Auth_Request_Sub as X-Auth-Request-Sub,
    X_Forwarded_For as X-Forwarded-For, past the names in ``drop``."""
    kept = []
    listed: set[bytes] | None = None
    for name, value in headers:
        name = name.lower()
        if name == b"connection":
            listed = (listed or set()) | {token.strip().lower() for token in value.split(b",")}
        elif name not in drop and (underscored or b"_" not in name):
            kept.append((name, value))
    return [(n, v) for n, v in kept if n not in listed] if listed else kept


@dataclass
class Outbound:
    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | AsyncIterator[bytes] | None
    timeout: aiohttp.ClientTimeout
    route: str = ""  # the route's name: the metrics label and the log's word for the upstream

    @property
    def replayable(self) -> bool:
        return not isinstance(self.body, AsyncIterator)


def cause(exc: BaseException) -> str:
    """Why a call to an upstream failed, in words an operator can act on (never a header or a body)."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"refused: {exc.os_error.strerror or exc.os_error}" if exc.os_error else "refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "reset: the upstream closed the connection"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionResetError):
        return f"reset: {exc}"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"WebSocket handshake refused: {exc.status}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "broken body: the upstream's answer ended before its length"
    return f"{type(exc).__name__}: {exc}"


UPSTREAM_FAILURES = {
    "request": "upstream call of route %s to %s failed: %s",
    "answer": "upstream broke off its answer: route %s, %s: %s",
    "streamed answer": "upstream broke off a streamed answer: route %s, %s: %s",
    "WebSocket handshake": "upstream WebSocket handshake of route %s to %s failed: %s",
}


def upstream_failed(route: str, url: URL, exc: BaseException, what: str = "request") -> None:
    """DESIGN §12: every failed call to an upstream is a WARNING naming the route, the upstream origin and the
    cause (the origin only: the path and query of the call may carry what is not ours to log)."""
    origin = f"{url.scheme}://{url.raw_authority}"
    why = cause(exc)
    log.warning(
        UPSTREAM_FAILURES[what],
        route,
        origin,
        why,
        extra={"fields": {"route": route, "upstream": origin, "cause": why}},
    )


def client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    # No total: a stream (SSE, a download) may last as long as the upstream keeps sending; a silent one is cut.
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


class Proxy:
    def __init__(self, routes: Mapping[str, Route], timeout: float) -> None:
        # name -> the upstream's origin and path prefix, as text: one URL is built per request
        self.routes = {name: str(URL(route.url)).rstrip("/") for name, route in routes.items()}
        self.timeouts = {name: client_timeout(route.timeout or timeout) for name, route in routes.items()}
        self.session: aiohttp.ClientSession | None = None
        self.lean: LeanUpstream | None = None  # bodiless requests to http:// upstreams (bff.upstream)
        self.dpop: DPoPSigner | None = None  # BFF_DPOP_KEY_FILE: tokens go out as DPoP, each with a fresh proof
        self.watch: SessionWatch | None = None  # the end of a session stops the streams sent for it
        self.slots: SessionSlots | None = None  # BFF_MAX_SOCKETS_PER_SESSION: a session's streams count there
        # bff_upstream_requests_total{route,status} and bff_upstream_request_duration_seconds{route} (DESIGN §12):
        # their children, looked up once (labels() costs a measurable share of a proxied request)
        self.requests: Any = None
        self.latency: Any = None
        self._counted: dict[tuple[str, int], tuple[Any, Any]] = {}  # (route, status) -> (counter inc, observe)
        # BFF_TRUSTED_PROXIES: whose X-Forwarded-For names the client (an edge in front, its Unix socket's included)
        self.proxies: TrustedProxies | None = None

    def forwarded_for(self, scope: Scope) -> str:
        """The client the upstream's X-Forwarded-For names: the peer, or the address a trusted proxy in front says
        it forwards for (so the browser's, not the edge's; and behind `bff serve --uds`, not none). "" for none."""
        if self.proxies is None:
            client = scope.get("client")
            return client[0] if client else ""
        return self.proxies.client_address(peer(scope), scope["headers"])

    async def open(self) -> None:
        """One pooled client for every upstream; made inside the running loop (the app's lifespan)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=UPSTREAM_POOL, limit_per_host=0, ttl_dns_cache=60),
            auto_decompress=False,  # bodies pass through as the upstream encoded them
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies are never kept, let alone forwarded
            skip_auto_headers=("User-Agent",),
        )
        self.lean = LeanUpstream(UPSTREAM_POOL)

    async def close(self) -> None:
        if self.lean is not None:
            await self.lean.close()
            self.lean = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    def target(self, scope: Scope, route: Route) -> URL:
        """The upstream URL of ``/api/{route}/{path}?{query}``; raises for a path that climbs out of the route."""
        base = self.routes[route.name]
        raw_path: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        # The path after the route segment, cut at the slash (the raw route segment may be percent-encoded, so its
        # length is not the decoded name's). It starts with "/", so it can never extend the upstream's authority.
        slash = raw_path.find(b"/", len(b"/api/"))
        rest = raw_path[slash:] if slash >= 0 else b""
        if climbs(rest):
            raise BadRequest("Dot segments, control characters and broken encodings are not allowed in API paths.")
        target = base + (rest.decode("latin-1") or "/")
        query = scope.get("query_string", b"")
        return URL(target + "?" + query.decode("latin-1") if query else target, encoded=True)

    async def outbound(self, request: Request, route: Route) -> Outbound:
        """The request to send upstream; raises for a path that climbs out of the route."""
        url = self.target(request.scope, route)
        kept = _filter(request.scope["headers"], DROP_REQUEST, underscored=False)
        headers: CIMultiDict[str] = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in kept)
        # The request's id and its W3C trace context (the browser's traceparent as the parent, DESIGN §12): the
        # same ids as this request's log lines
        headers.update(outbound_headers() or new_ids())
        client = self.forwarded_for(request.scope)
        if client:
            headers.add("X-Forwarded-For", client)

        body: bytes | AsyncIterator[bytes] | None = None
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise BadRequest("Content-Length is not a number.")
            size = int(length)
            if size > REPLAY_LIMIT:
                body = request.stream()
            elif size:
                body = await request.body()
        elif any(name == b"transfer-encoding" for name, _ in request.scope["headers"]):
            body = request.stream()
        return Outbound(request.method, url, headers, body, self.timeouts[route.name], route.name)

    async def send(self, out: Outbound, access_token: str | None) -> aiohttp.ClientResponse:
        """Send ``out`` with ``access_token`` (a bearer token, or with ``self.dpop`` a DPoP-bound token and a fresh
        proof), or with no Authorization at all (``None``). An upstream's DPoP nonce challenge is answered here,
        once, when the request can be replayed (RFC 9449 §9)."""
        assert self.session is not None, "Proxy.open() runs in the lifespan"
        if access_token is None:
            return await self._request(out, out.headers)
        if self.dpop is None:
            headers = out.headers.copy()
            headers["Authorization"] = f"Bearer {access_token}"
            return await self._request(out, headers)
        url = str(out.url)
        for _ in range(2):
            headers = out.headers.copy()
            headers.extend(credential_headers(self.dpop, access_token, out.method, url))
            upstream = await self._request(out, headers)
            nonce = upstream.headers.get("DPoP-Nonce")
            if nonce is None or not self.dpop.remember_nonce(url, nonce) or not out.replayable:
                return upstream
            if not nonce_challenge(upstream.status, upstream.headers.get("WWW-Authenticate", ""), nonce):
                return upstream
            upstream.release()
        return upstream

    async def _request(self, out: Outbound, headers: CIMultiDict[str]) -> aiohttp.ClientResponse:
        assert self.session is not None, "Proxy.open() runs in the lifespan"
        start = time.perf_counter()
        try:
            upstream: Any = None
            if self.lean is not None and LeanUpstream.takes(out.method, out.url, out.body):
                # read as aiohttp's ClientResponse (bff.upstream); None: not taken now, aiohttp sends it
                upstream = await self.lean.request(out.method, out.url, headers, out.timeout)
            if upstream is None:
                upstream = await self.session.request(
                    out.method, out.url, headers=headers, data=out.body, allow_redirects=False, timeout=out.timeout
                )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            self.count(out.route, UpstreamTimeout.status_code, time.perf_counter() - start)
            upstream_failed(out.route, out.url, exc)
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            self.count(out.route, UpstreamUnavailable.status_code, time.perf_counter() - start)
            upstream_failed(out.route, out.url, exc)
            raise UpstreamUnavailable() from exc
        self.count(out.route, upstream.status, time.perf_counter() - start)
        return upstream

    def count(self, route: str, status: int, seconds: float) -> None:
        """One upstream call of ``route``: its status (the upstream's, or the BFF's 502/504 when there was none) and
        its time to the upstream's response headers."""
        if self.requests is None:
            return
        children = self._counted.get((route, status))
        if children is None:
            children = self._counted[(route, status)] = (
                self.requests.labels(route, str(status)).inc,
                self.latency.labels(route).observe,
            )
        inc, observe = children
        inc()
        observe(seconds)

    def response(
        self,
        upstream: aiohttp.ClientResponse,
        request_id: str,
        session: str | None = None,
        route: str = "",
        user: str | None = None,
    ) -> Response:
        """The browser's answer; ``session``: the record key of the session the request was sent for, whose end
        (logout, back-channel logout, expiry) stops a stream still running for it, as it closes a WebSocket."""
        kept = _filter(upstream.raw_headers, DROP_RESPONSE)
        if not any(name == b"x-request-id" for name, _ in kept):
            kept.append((b"x-request-id", request_id.encode("latin-1")))

        length = upstream.headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and int(length) <= BUFFER_LIMIT:
            # Small bodies of known length go out in one message: less work per request than a stream.
            buffered = _Buffered(upstream, kept)
            buffered.route = route
            return buffered

        streamed = _Streamed(upstream, kept)
        streamed.route = route
        if session is not None and self.watch is not None:
            streamed.follow(self.watch, session, self.slots, user)
        return streamed


class _Buffered(Response):
    """An upstream answer of known small length, read when the response is sent (inside the ASGI call)."""

    route = ""  # the route's name, for the log line of a failure

    def __init__(self, upstream: aiohttp.ClientResponse, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.upstream = upstream
        self.status_code = upstream.status
        self.background = None
        self.raw_headers = raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self.upstream.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            upstream_failed(self.route, self.upstream.url, exc, "answer")
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:  # a body shorter than its Content-Length, a reset: nothing sent yet
            upstream_failed(self.route, self.upstream.url, exc, "answer")
            raise UpstreamUnavailable("The upstream service broke off its answer.") from exc
        finally:
            self.upstream.release()
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": body})


class _Streamed(_Buffered):
    """An upstream answer passed on as it arrives (SSE, downloads). If the upstream breaks off mid-body, the status
    is already out: the answer is left unfinished, so the server closes the connection and the browser sees a
    truncated body as an error. A clean end would pass the truncated body off as whole."""

    watch: SessionWatch | None = None
    slots: SessionSlots | None = None
    session = ""

    user: str | None = None

    def follow(
        self, watch: SessionWatch, session: str, slots: SessionSlots | None = None, user: str | None = None
    ) -> None:
        self.watch, self.session, self.slots, self.user = watch, session, slots, user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A stream holds a connection for as long as the upstream sends: it counts against the session's cap, taken
        # here (nothing is sent yet, so a refusal is still a plain 429) and given back however the stream ends.
        slots = self.slots if self.slots is not None and self.session else None
        refused = slots.take(self.session, "stream", self.user) if slots is not None else None
        if refused is not None:
            self.upstream.release()
            raise TooManySockets(TooManySockets.by_user if refused == "user" else None)
        try:
            await self._stream(send)
        finally:
            if slots is not None:
                slots.give(self.session)

    async def _stream(self, send: Send) -> None:
        ended = self.watch.watch(self.session) if self.watch is not None else None
        waiting = asyncio.ensure_future(ended.wait()) if ended is not None else None  # one for the whole stream
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while chunk := await self._next(waiting):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            upstream_failed(self.route, self.upstream.url, exc, "streamed answer")
            return
        finally:
            if waiting is not None:
                waiting.cancel()
            if self.watch is not None and ended is not None:
                self.watch.unwatch(self.session, ended)
            self.upstream.release()
        # A clean end, also when the session ended: an EventSource then reconnects, and is refused (401).
        await send({"type": "http.response.body", "body": b""})

    async def _next(self, ended: asyncio.Future[Any] | None) -> bytes:
        """The next chunk of the upstream's body; empty at its end, or as soon as the session has ended (``ended``
        done: a stream must not go on speaking for a user who logged out, DESIGN §7)."""
        if ended is None:
            return await self.upstream.content.read(CHUNK)
        if ended.done():
            return b""
        read = asyncio.ensure_future(self.upstream.content.read(CHUNK))
        try:
            await asyncio.wait((read, ended), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the browser went away (the answer is cancelled): no read may outlive it
            read.cancel()
            raise
        if read.done():
            return read.result()
        read.cancel()
        return b""
